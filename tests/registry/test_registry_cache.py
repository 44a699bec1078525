"""RegistryCache against a real PostgreSQL: initial load, NOTIFY refresh, reconnect, liveness updates."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from tds_core.registry.cache import RegistryCache

MAC1 = "aa:bb:cc:00:00:01"
MAC2 = "aa:bb:cc:00:00:02"


def _seed(conn: psycopg.Connection) -> None:
    tenant = conn.execute("INSERT INTO tenants (code, name) VALUES ('acme', 'ACME') RETURNING id").fetchone()[0]
    gw = conn.execute(
        "INSERT INTO gateways (tenant_id, mac, code) VALUES (%s, %s, 'GW-0001') RETURNING id", (tenant, MAC1)
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO devices (gateway_id, code, slave_id, register, unit, kind)"
        " VALUES (%s, 'D01', 1, 0, 'kWh', 'energy'), (%s, 'D02', 2, 0, 'm³', 'water')",
        (gw, gw),
    )


@pytest.fixture()
def admin(db_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        _seed(conn)
        yield conn


@pytest.fixture()
def cache(db_dsn: str, admin: psycopg.Connection) -> Iterator[RegistryCache]:
    c = RegistryCache(db_dsn, refresh_interval=3600, backoff_initial=0.05)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def test_initial_load_is_synchronous(cache: RegistryCache) -> None:
    assert cache.version == 1
    gw = cache.snapshot.by_mac[MAC1]
    assert cache.snapshot.by_code["GW-0001"] is gw
    assert (gw.tenant_code, gw.status, gw.payload_format, gw.revoked) == ("acme", "active", "v1", False)
    assert sorted(gw.devices) == ["D01", "D02"]
    assert (gw.devices["D02"].unit, gw.devices["D02"].kind) == ("m³", "water")
    assert cache.by_mac("ff:ff:ff:ff:ff:ff") is None


def test_start_fails_when_database_unreachable() -> None:
    c = RegistryCache("host=127.0.0.1 port=1 dbname=x connect_timeout=1")
    with pytest.raises(psycopg.OperationalError):
        c.start()
    assert c.version == 0


def test_refresh_on_insert_and_revoke(cache: RegistryCache, admin: psycopg.Connection) -> None:
    v = cache.version
    admin.execute(
        "INSERT INTO gateways (tenant_id, mac, code) SELECT id, %s, 'GW-0002' FROM tenants WHERE code = 'acme'",
        (MAC2,),
    )
    assert cache.wait_for_version(v + 1)
    assert cache.snapshot.by_mac[MAC2].devices == {}

    old = cache.snapshot
    admin.execute("UPDATE gateways SET status = 'revoked', revoked_at = now() WHERE mac = %s", (MAC1,))
    assert cache.wait_for_version(v + 2)
    assert cache.by_mac(MAC1).revoked
    assert not old.by_mac[MAC1].revoked  # snapshots are immutable: a batch's view never changes under it


def test_gateway_only_change_reuses_devices_and_device_change_reloads_them(
    cache: RegistryCache, admin: psycopg.Connection
) -> None:
    v = cache.version
    admin.execute("UPDATE gateways SET status = 'revoked', revoked_at = now() WHERE mac = %s", (MAC1,))
    assert cache.wait_for_version(v + 1)
    gw = cache.by_mac(MAC1)
    assert gw.revoked and sorted(gw.devices) == ["D01", "D02"]
    assert cache.stats.partial_reloads == 1
    admin.execute("UPDATE devices SET unit = 'L' WHERE code = 'D02'")
    assert cache.wait_for_version(v + 2)
    assert cache.by_mac(MAC1).devices["D02"].unit == "L"
    admin.execute("UPDATE tenants SET code = 'acme2'")
    assert cache.wait_for_version(v + 3)
    assert cache.by_code("GW-0001").tenant_code == "acme2"
    assert cache.by_code("GW-0001").devices["D02"].unit == "L"
    assert cache.stats.partial_reloads == 2


def test_burst_in_one_transaction_is_one_reload(cache: RegistryCache, admin: psycopg.Connection) -> None:
    v = cache.version
    with admin.transaction():
        for i in range(3, 13):
            admin.execute(
                "INSERT INTO gateways (tenant_id, mac, code) SELECT id, %s, %s FROM tenants WHERE code = 'acme'",
                (f"aa:bb:cc:00:00:{i:02x}", f"GW-{i:04d}"),
            )
    assert cache.wait_for_version(v + 1)
    assert len(cache.snapshot) == 11
    # PostgreSQL folds identical notifications of one transaction: one notify, one reload
    assert cache.stats.notifications == 1
    assert cache.version == v + 1


def test_liveness_updates_do_not_reload(cache: RegistryCache, admin: psycopg.Connection) -> None:
    v, seen = cache.version, cache.stats.notifications
    admin.execute("UPDATE gateways SET last_seen = now(), online = true WHERE mac = %s", (MAC1,))
    admin.execute("UPDATE gateways SET online = false WHERE mac = %s", (MAC1,))
    # A marker change afterwards: notifications arrive in commit order, so once the marker is in the
    # snapshot any notification from the liveness updates would already have been counted.
    admin.execute("INSERT INTO tenants (code, name) VALUES ('marker', 'Marker')")
    assert cache.wait_for_version(v + 1)
    assert cache.stats.notifications == seen + 1
    assert cache.stats.payloads == {"tenants": 1}
    assert cache.version == v + 1


def test_survives_listener_connection_kill(cache: RegistryCache, admin: psycopg.Connection) -> None:
    v, pid = cache.version, cache.stats.listener_pid
    killed = admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
    assert killed
    # The old snapshot keeps serving while the thread reconnects; reconnecting reloads (version + 1).
    assert cache.by_mac(MAC1) is not None
    assert cache.wait_for_version(v + 1)
    assert cache.stats.reconnects == 1 and cache.stats.listener_pid != pid and cache.connected
    assert cache.stats.connection_errors >= 1
    admin.execute("UPDATE gateways SET status = 'revoked', revoked_at = now() WHERE mac = %s", (MAC1,))
    assert cache.wait_for_version(v + 2)
    assert cache.by_mac(MAC1).revoked


def test_periodic_reload(db_dsn: str, admin: psycopg.Connection) -> None:
    with RegistryCache(db_dsn, refresh_interval=0.05) as c:
        assert c.wait_for_version(3)
        assert c.stats.periodic_reloads >= 2


def test_revoke_latency(cache: RegistryCache, admin: psycopg.Connection, record_property) -> None:
    """Measures revoke statement start -> cache shows revoked, with the example fleet loaded (202 gateways,
    ~1,600 devices). Reported, not asserted: wall-clock varies. Run with -s to see the figure."""
    from pathlib import Path

    from tds_core.registry.fleet import load_fleet
    from tds_core.registry.store import apply_fleet

    v = cache.version
    apply_fleet(admin, load_fleet(Path(__file__).resolve().parents[2] / "examples" / "fleet.yaml"))
    assert cache.wait_for_version(v + 1)
    assert len(cache.snapshot) == 202  # the seeded GW-0001 is the example's first gateway
    samples = []
    for _ in range(20):
        v = cache.version
        t0 = time.perf_counter()
        admin.execute("UPDATE gateways SET status = 'revoked', revoked_at = now() WHERE mac = %s", (MAC1,))
        assert cache.wait_for_version(v + 1)
        samples.append(time.perf_counter() - t0)
        assert cache.by_mac(MAC1).revoked
        v = cache.version
        admin.execute("UPDATE gateways SET status = 'active', revoked_at = NULL WHERE mac = %s", (MAC1,))
        assert cache.wait_for_version(v + 1)
    samples.sort()
    record_property("revoke_to_cache_ms_p50", round(samples[len(samples) // 2] * 1000, 2))
    record_property("revoke_to_cache_ms_max", round(samples[-1] * 1000, 2))
    print(f"revoke->cache: p50 {samples[len(samples) // 2] * 1000:.2f} ms, max {samples[-1] * 1000:.2f} ms")
