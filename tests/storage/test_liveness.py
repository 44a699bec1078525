"""Gateway liveness helpers: silence timeout and status messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from storage_testkit import Store

from tds_core.storage.liveness import mark_silent_gateways_offline, set_gateway_online
from tds_core.storage.writer import BatchWriter


def online(store: Store) -> dict[str, bool]:
    rows = store.conn.execute("SELECT mac, online FROM gateways").fetchall()
    store.conn.commit()
    return dict(rows)


def test_silent_gateways_go_offline(store: Store) -> None:
    now = datetime.now(UTC)
    BatchWriter(store.conn).write([], {store.reg.gw_a: now - timedelta(minutes=10), store.reg.gw_b: now})
    assert mark_silent_gateways_offline(store.conn, timedelta(minutes=5)) == ["aa:bb:cc:dd:ee:01"]
    assert online(store) == {"aa:bb:cc:dd:ee:01": False, "aa:bb:cc:dd:ee:02": True}
    assert mark_silent_gateways_offline(store.conn, timedelta(minutes=5)) == []
    with pytest.raises(ValueError, match="silence: expected a positive duration"):
        mark_silent_gateways_offline(store.conn, timedelta(0))


def test_status_messages_set_online(store: Store) -> None:
    assert set_gateway_online(store.conn, "AA:BB:CC:DD:EE:01", True)
    assert online(store)["aa:bb:cc:dd:ee:01"] is True
    assert set_gateway_online(store.conn, "aa:bb:cc:dd:ee:01", True)  # already online: still known
    assert set_gateway_online(store.conn, "aa:bb:cc:dd:ee:01", False)
    assert online(store)["aa:bb:cc:dd:ee:01"] is False
    assert not set_gateway_online(store.conn, "aa:bb:cc:dd:ee:99", False)
