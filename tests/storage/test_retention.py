"""Retention and maintenance: old raw data goes, recent data and the rollups of old data stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from storage_testkit import Store, count

from tds_core.storage.config import get_settings, set_retention
from tds_core.storage.durations import format_duration, parse_duration
from tds_core.storage.maintenance import apply_retention, maintain
from tds_core.storage.partitions import existing_partitions, partition_name
from tds_core.storage.queries import monthly_consumption
from tds_core.storage.rollups import refresh_rollups
from tds_core.storage.writer import BatchWriter

NOW = datetime.now(UTC)
OLD = (NOW - timedelta(days=200)).replace(hour=12, minute=0, second=0, microsecond=0)
RECENT = (NOW - timedelta(days=10)).replace(hour=12, minute=0, second=0, microsecond=0)


def write_old_and_recent(store: Store) -> None:
    reg = store.reg
    rows = [
        (t + timedelta(minutes=m), reg.devices["A-E1"], reg.gw_a, reg.tenant_a, float(m))
        for t in (OLD, RECENT)
        for m in range(0, 60, 5)
    ]
    BatchWriter(store.conn).write(rows)


def test_retention_drops_old_raw_data_only_and_rollups_survive(store: Store) -> None:
    write_old_and_recent(store)
    refresh_rollups(store.conn, store.backend, start=OLD - timedelta(days=40))
    before = monthly_consumption(store.conn, store.reg.tenant_a, OLD.date() - timedelta(days=40), NOW.date())
    store.conn.commit()
    assert len(before) == 2

    dropped = apply_retention(store.conn, store.backend, timedelta(days=100))
    assert dropped
    assert count(store.conn, "SELECT count(*) FROM readings WHERE time < %s", NOW - timedelta(days=100)) == 0
    assert count(store.conn, "SELECT count(*) FROM readings") == 12
    # The default refresh window stays inside retention: the old month's aggregate is not erased.
    set_retention(store.conn, timedelta(days=100))
    refresh_rollups(store.conn, store.backend)
    after = monthly_consumption(store.conn, store.reg.tenant_a, OLD.date() - timedelta(days=40), NOW.date())
    store.conn.commit()
    assert after == before


def test_plain_retention_drops_whole_days_only(plain_store: Store) -> None:
    write_old_and_recent(plain_store)
    conn = plain_store.conn
    cutoff_keep = NOW - OLD  # the old day straddles the cutoff: it stays
    assert apply_retention(conn, "postgres", cutoff_keep) == []
    assert apply_retention(conn, "postgres", cutoff_keep - timedelta(days=1)) == [partition_name(OLD.date())]
    days = existing_partitions(conn)
    conn.commit()
    assert OLD.date() not in days and RECENT.date() in days


def test_timescale_refuses_a_retention_shorter_than_the_monthly_window(store: Store) -> None:
    if store.backend != "timescale":
        pytest.skip("TimescaleDB only")
    with pytest.raises(ValueError, match="retention: TimescaleDB's monthly aggregate"):
        apply_retention(store.conn, "timescale", timedelta(days=30))


def test_maintain_uses_the_stored_settings(store: Store) -> None:
    write_old_and_recent(store)
    assert get_settings(store.conn).retention == timedelta(days=730)
    set_retention(store.conn, timedelta(days=100))
    report = maintain(store.conn, now=NOW)
    assert report.backend == store.backend
    # TimescaleDB: up to the last complete hour; plain: the whole log is folded.
    assert report.refresh is not None
    if store.backend == "timescale":
        assert report.refresh.end == NOW.replace(minute=0, second=0, microsecond=0)
    else:
        assert report.refresh.end is None
    assert report.dropped
    assert count(store.conn, "SELECT count(*) FROM readings") == 12
    if store.backend == "postgres":
        today = NOW.date()
        assert {today + timedelta(days=i) for i in range(8)} <= set(existing_partitions(store.conn))
        store.conn.commit()
    assert len(monthly_consumption(store.conn, store.reg.tenant_a, RECENT.date(), NOW.date())) == 1


@pytest.mark.parametrize(
    ("text", "days"),
    [("730d", 730), ("2y", 730), ("12h", 0.5), ("4w", 28), (" 90d ", 90), ("30m", 30 / 1440)],
)
def test_parse_duration(text: str, days: float) -> None:
    assert parse_duration(text) == timedelta(days=days)


@pytest.mark.parametrize("text", ["", "730", "d", "2x", "-5d", "0d", "1.5d", "2 years"])
def test_parse_duration_rejects_with_a_clear_message(text: str) -> None:
    with pytest.raises(ValueError, match=r"retention: expected a (positive )?duration.*got"):
        parse_duration(text, name="retention")


def test_format_duration_round_trips() -> None:
    for text in ("2y", "730d", "3w", "12h", "90m", "45s"):
        assert format_duration(parse_duration(text)) == (text if text != "730d" else "2y")
