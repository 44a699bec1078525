"""TimescaleDB specifics: the seed's layout is in place, and compressed chunks stay idempotent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from storage_testkit import Store, count

from tds_core.storage.writer import BatchWriter

pytestmark = pytest.mark.timescale


@pytest.fixture()
def ts_store(store: Store) -> Store:
    if store.backend != "timescale":
        pytest.skip("TimescaleDB only")
    return store


def test_seed_layout(ts_store: Store) -> None:
    conn = ts_store.conn
    interval = conn.execute(
        "SELECT time_interval FROM timescaledb_information.dimensions WHERE hypertable_name = 'readings'"
    ).fetchone()
    assert interval == (timedelta(days=1),)
    indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'readings'")}
    assert {"readings_device_time_idx", "readings_tenant_time_idx", "readings_gateway_time_idx"} <= indexes
    caggs = {
        r[0] for r in conn.execute("SELECT view_name FROM timescaledb_information.continuous_aggregates")
    }
    assert caggs == {"readings_hourly", "readings_monthly"}
    jobs = {
        r[0]
        for r in conn.execute(
            "SELECT proc_name FROM timescaledb_information.jobs WHERE hypertable_name IS NOT NULL"
        )
    }
    assert {"policy_compression", "policy_retention", "policy_refresh_continuous_aggregate"} <= jobs
    segment = conn.execute(
        "SELECT attname FROM timescaledb_information.compression_settings WHERE segmentby_column_index = 1"
    ).fetchone()
    assert segment == ("device_id",)
    conn.commit()


def test_redelivery_into_a_compressed_chunk_is_still_idempotent(ts_store: Store) -> None:
    conn, reg = ts_store.conn, ts_store.reg
    day = (datetime.now(UTC) - timedelta(days=10)).replace(hour=6, minute=0, second=0, microsecond=0)
    rows = [
        (day + timedelta(minutes=m), reg.devices["A-E1"], reg.gw_a, reg.tenant_a, float(m)) for m in range(60)
    ]
    writer = BatchWriter(conn)
    assert writer.write(rows).inserted == 60
    with conn.transaction():
        compressed = conn.execute("SELECT compress_chunk(c) FROM show_chunks('readings') c").fetchall()
    assert compressed
    assert writer.write(rows).duplicates == 60
    late = [(day + timedelta(minutes=m, seconds=30), *rows[0][1:4], 1.5) for m in range(3)]
    assert writer.write(rows[:5] + late).inserted == 3
    assert count(conn, "SELECT count(*) FROM readings") == 63


def test_monthly_rebuilt_from_hourly_keeps_the_months_of_dropped_chunks(ts_store: Store) -> None:
    """Migration 0007 drops the monthly aggregate and rebuilds it from the hourly one: months whose raw
    chunks retention already dropped come back with the same figures."""
    from importlib import resources

    from tds_core.storage.maintenance import apply_retention
    from tds_core.storage.migrate import split_statements
    from tds_core.storage.queries import monthly_consumption
    from tds_core.storage.rollups import refresh_rollups

    conn, reg = ts_store.conn, ts_store.reg
    now = datetime.now(UTC)
    old = (now - timedelta(days=200)).replace(day=10, hour=12, minute=0, second=0, microsecond=0)
    rows = [(t + timedelta(minutes=m), reg.devices["A-E1"], reg.gw_a, reg.tenant_a, float(m))
            for t in (old, old + timedelta(days=1), now - timedelta(days=20)) for m in range(0, 60, 5)]
    BatchWriter(conn).write(rows)
    refresh_rollups(conn, "timescale", start=old - timedelta(days=40))
    period = (old.date() - timedelta(days=40), now.date() + timedelta(days=1))
    before = monthly_consumption(conn, reg.tenant_a, *period)
    conn.commit()
    assert apply_retention(conn, "timescale", timedelta(days=100))  # the old month's chunks are gone
    assert count(conn, "SELECT count(*) FROM readings WHERE time < %s", now - timedelta(days=100)) == 0

    migration = resources.files("tds_core.storage").joinpath("migrations/0007_monthly_from_hourly.timescale.sql")
    conn.autocommit = True
    try:
        for statement in split_statements(migration.read_text(encoding="utf-8")):
            conn.execute(statement)  # type: ignore[arg-type]  # trusted file content
    finally:
        conn.autocommit = False
    after = monthly_consumption(conn, reg.tenant_a, *period)
    conn.commit()
    assert len(before) >= 2 and after == before
    old_month = next(m for m in after if m.month == old.date().replace(day=1))
    assert (old_month.count, old_month.days_with_readings) == (24, 2)
