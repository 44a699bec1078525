"""Provisioning and revocation against a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tds_core.registry.fleet import load_fleet, parse_fleet
from tds_core.registry.model import Device, Gateway, Tenant
from tds_core.registry.store import (
    UnknownGateway,
    apply_fleet,
    get_gateway,
    list_gateways,
    reinstate_gateway,
    revoke_gateway,
)
from tds_core.yamlconf import load_yaml_text

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet.yaml"

SMALL = """\
tenants:
  - code: acme
    name: ACME
    gateways:
      - mac: "aa:bb:cc:00:00:01"
        code: GW-1
        devices:
          - {code: D01, slave_id: 1, register: 0, unit: kWh}
          - {code: D02, slave_id: 2, register: 0, unit: m³}
      - mac: "aa:bb:cc:00:00:02"
        code: GW-2
"""


@pytest.fixture()
def conn(db_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_dsn, autocommit=True) as c:
        yield c


def _spec(text: str):
    return parse_fleet(load_yaml_text(text, "fleet.yaml"))


def _quiet_since(conn: psycopg.Connection, listener: psycopg.Connection) -> list[str]:
    """Payloads the listener got before a marker notification sent now (commit order makes this exact)."""
    conn.execute("SELECT pg_notify('tds_registry', 'marker')")
    got = []
    for n in listener.notifies(timeout=5):
        if n.payload == "marker":
            return got
        got.append(n.payload)
    raise AssertionError("marker notification never arrived")


def test_load_example_twice_is_idempotent(conn: psycopg.Connection, db_dsn: str) -> None:
    spec = load_fleet(EXAMPLE)
    first = apply_fleet(conn, spec)
    assert (first.tenants.created, first.gateways.created, first.devices.created) == (2, 202, 1604)
    assert first.changed
    with psycopg.connect(db_dsn, autocommit=True) as listener:
        listener.execute("LISTEN tds_registry")
        second = apply_fleet(conn, spec)
        assert not second.changed
        assert (second.tenants.unchanged, second.gateways.unchanged, second.devices.unchanged) == (2, 202, 1604)
        assert _quiet_since(conn, listener) == []  # an unchanged load wakes no cache
    assert conn.execute("SELECT count(*) FROM devices").fetchone()[0] == 1604


def test_updates_and_absent_rows_kept_without_prune(conn: psycopg.Connection) -> None:
    apply_fleet(conn, _spec(SMALL))
    edited = SMALL.replace("name: ACME", "name: ACME S.A.").replace("unit: m³}", "unit: L}") \
        .replace('      - mac: "aa:bb:cc:00:00:02"\n        code: GW-2\n', "") \
        .replace("          - {code: D01, slave_id: 1, register: 0, unit: kWh}\n", "")
    report = apply_fleet(conn, _spec(edited))
    assert (report.tenants.updated, report.gateways.unchanged, report.gateways.absent) == (1, 1, 1)
    assert (report.devices.updated, report.devices.absent, report.devices.deleted) == (1, 1, 0)
    assert len(list_gateways(conn)) == 2
    pruned = apply_fleet(conn, _spec(edited), prune=True)
    assert (pruned.gateways.deleted, pruned.devices.deleted) == (1, 1)
    gws = list_gateways(conn)
    assert [g.code for g in gws] == ["GW-1"]
    assert [(d.code, d.unit, d.kind) for d in gws[0].devices] == [("D02", "L", "water")]


def test_gateway_moves_tenant_and_format(conn: psycopg.Connection) -> None:
    apply_fleet(conn, _spec(SMALL))
    moved = SMALL + "  - code: other\n    name: Other\n    gateways:\n" \
        "      - {mac: \"aa:bb:cc:00:00:02\", code: GW-2, payload_format: legacy}\n"
    moved = moved.replace('      - mac: "aa:bb:cc:00:00:02"\n        code: GW-2\n', "", 1)
    report = apply_fleet(conn, _spec(moved))
    assert (report.tenants.created, report.gateways.updated) == (1, 1)
    gw = get_gateway(conn, "AA-BB-CC-00-00-02")
    assert (gw.tenant_code, gw.payload_format) == ("other", "legacy")


def test_code_taken_by_another_mac_is_a_clear_error(conn: psycopg.Connection) -> None:
    apply_fleet(conn, _spec(SMALL))
    other = (
        "tenants:\n  - code: acme\n    name: ACME\n    gateways:\n"
        "      - {mac: \"aa:bb:cc:00:00:09\", code: GW-1}\n"
    )
    with pytest.raises(ValueError, match=r"gateway code GW-1 \(MAC aa:bb:cc:00:00:09\) is already used by gateway "
                                         r"aa:bb:cc:00:00:01"):
        apply_fleet(conn, _spec(other))
    assert get_gateway(conn, "aa:bb:cc:00:00:09") is None  # nothing half-applied


def test_revoke_and_reinstate(conn: psycopg.Connection) -> None:
    apply_fleet(conn, _spec(SMALL))
    assert revoke_gateway(conn, "AA:BB:CC:00:00:01") is True
    assert revoke_gateway(conn, "aa:bb:cc:00:00:01") is False
    gw = get_gateway(conn, "aa:bb:cc:00:00:01")
    assert gw.status == "revoked" and gw.revoked_at is not None
    # a later load never silently reinstates
    assert not apply_fleet(conn, _spec(SMALL)).changed
    assert get_gateway(conn, "aa:bb:cc:00:00:01").status == "revoked"
    assert reinstate_gateway(conn, "aa:bb:cc:00:00:01") is True
    gw = get_gateway(conn, "aa:bb:cc:00:00:01")
    assert gw.status == "active" and gw.revoked_at is None
    with pytest.raises(UnknownGateway, match="no gateway with MAC ff:ff:ff:ff:ff:ff"):
        revoke_gateway(conn, "ff:ff:ff:ff:ff:ff")
    with pytest.raises(ValueError, match="invalid MAC"):
        revoke_gateway(conn, "zz")


def test_revoked_in_file(conn: psycopg.Connection) -> None:
    report = apply_fleet(conn, _spec(SMALL.replace("code: GW-2\n", "code: GW-2\n        revoked: true\n")))
    assert report.revoked == 1
    assert get_gateway(conn, "aa:bb:cc:00:00:02").status == "revoked"


def test_list_by_tenant_and_liveness_fields(conn: psycopg.Connection) -> None:
    spec = _spec(SMALL)
    apply_fleet(conn, spec)
    conn.execute("UPDATE gateways SET last_seen = now(), online = true WHERE code = 'GW-2'")
    gws = list_gateways(conn, tenant_code="acme")
    assert [(g.code, g.online, g.last_seen is not None, len(g.devices)) for g in gws] == [
        ("GW-1", False, False, 2), ("GW-2", True, True, 0)]
    assert list_gateways(conn, tenant_code="nobody") == []


def test_programmatic_spec(conn: psycopg.Connection) -> None:
    from tds_core.registry.fleet import FleetSpec

    spec = FleetSpec(
        (Tenant("t", "T"),),
        (Gateway("aa-bb-cc-dd-ee-ff", "G", "t", devices=(Device("D1", 1, 0, "°C", "int16", 0.1),)),),
    )
    apply_fleet(conn, spec)
    assert get_gateway(conn, "aa:bb:cc:dd:ee:ff").devices[0].kind == "temperature"
