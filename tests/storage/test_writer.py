"""The batch writer on a real database: idempotent under redelivery, all-or-nothing per batch."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest
from storage_testkit import Store, count

from tds_core.storage.deadletter import DeadLetter
from tds_core.storage.partitions import create_partitions_ahead, existing_partitions
from tds_core.storage.writer import BatchWriter, WriteResult, encode_copy_binary

T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=3)


def rows_for(store: Store, device: str, n: int, start: datetime = T0, step: timedelta = timedelta(minutes=5)):
    reg = store.reg
    tenant, gateway = (reg.tenant_a, reg.gw_a) if device.startswith("A") else (reg.tenant_b, reg.gw_b)
    return [(start + i * step, reg.devices[device], gateway, tenant, float(i)) for i in range(n)]


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "staging"])
def test_redelivery_never_duplicates(store: Store, fast_path: bool) -> None:
    writer = BatchWriter(store.conn, fast_path=fast_path)
    assert writer.backend == store.backend
    batch = rows_for(store, "A-E1", 50) + rows_for(store, "B-E1", 50)
    assert writer.write(batch) == WriteResult(inserted=100, duplicates=0, dead_lettered=0)
    assert writer.write(batch) == WriteResult(inserted=0, duplicates=100, dead_lettered=0)
    overlapping = rows_for(store, "A-E1", 80)  # 50 already stored, 30 new
    assert writer.write(overlapping) == WriteResult(inserted=30, duplicates=50, dead_lettered=0)
    fresh = rows_for(store, "A-E1", 10, start=T0 + timedelta(days=1))
    assert writer.write(fresh) == WriteResult(inserted=10, duplicates=0, dead_lettered=0)
    assert writer.write(fresh[:5]) == WriteResult(inserted=0, duplicates=5, dead_lettered=0)
    assert count(store.conn, "SELECT count(*) FROM readings") == 140
    if store.backend == "postgres":  # every inserted row invalidated its bucket, whichever path it took
        buckets = {(r[1], r[0].replace(minute=0)) for r in batch + overlapping + fresh}
        logged = set(store.conn.execute(
            "SELECT e.* FROM readings_batch_log, unnest(device_id, bucket) AS e").fetchall())
        store.conn.commit()
        assert logged == buckets
        # Exactly the inserted rows: the redelivered ones are not logged again.
        assert count(store.conn, "SELECT sum(cardinality(device_id)) FROM readings_batch_log") == 140


def test_duplicate_inside_one_batch_is_kept_once_first_value_wins(store: Store) -> None:
    writer = BatchWriter(store.conn)
    row = rows_for(store, "A-E1", 1)[0]
    changed = (*row[:4], 99.0)
    assert writer.write([row, changed]) == WriteResult(1, 1, 0)
    assert count(store.conn, "SELECT value FROM readings") == 0  # the first one (value 0.0)


def test_gateway_liveness_moves_forward_only(store: Store) -> None:
    writer = BatchWriter(store.conn)
    gw = store.reg.gw_a
    writer.write(rows_for(store, "A-E1", 1), {gw: T0})
    row = store.conn.execute("SELECT last_seen, online FROM gateways WHERE id = %s", (gw,)).fetchone()
    store.conn.commit()
    assert row == (T0, True)
    writer.write([], {gw: T0 - timedelta(hours=1)})  # an older redelivery does not move it back
    later = T0 + timedelta(minutes=1)
    writer.write([], {gw: later, store.reg.gw_b: later})
    rows = store.conn.execute("SELECT id, last_seen, online FROM gateways ORDER BY id").fetchall()
    store.conn.commit()
    assert rows == [(store.reg.gw_a, later, True), (store.reg.gw_b, later, True)]


def test_failed_batch_rolls_back_rows_liveness_and_dead_letters_together(store: Store) -> None:
    writer = BatchWriter(store.conn)
    gw = store.reg.gw_a
    good = DeadLetter("t/1", b"{}", "invalid_json", "payload: expected an object")
    broken = DeadLetter("t/2", b"x", "invalid_json", None)  # type: ignore[arg-type]  # detail NOT NULL
    with pytest.raises(psycopg.errors.NotNullViolation):
        writer.write(rows_for(store, "A-E1", 10), {gw: T0}, [good, broken])
    assert count(store.conn, "SELECT count(*) FROM readings") == 0
    assert count(store.conn, "SELECT count(*) FROM dead_letters") == 0
    assert count(store.conn, "SELECT count(*) FROM gateways WHERE last_seen IS NOT NULL OR online") == 0
    # The caller retries the same batch (fixed) with the same writer: everything lands once.
    assert writer.write(rows_for(store, "A-E1", 10), {gw: T0}, [good]) == WriteResult(10, 0, 1)
    assert count(store.conn, "SELECT count(*) FROM gateways WHERE online AND last_seen = %s", T0) == 1


def test_dead_letters_are_deduplicated_by_digest(store: Store) -> None:
    writer = BatchWriter(store.conn)
    letter = DeadLetter("tds_new/devices/aa:bb:cc:dd:ee:01/telemetry", b"\x00garbage", "invalid_json", "x")
    assert writer.write([], dead_letters=[letter, letter]).dead_lettered == 1
    assert writer.write([], dead_letters=[letter]).dead_lettered == 0
    other_reason = DeadLetter(letter.topic, letter.payload, "unknown_gateway", "x")
    assert writer.write([], dead_letters=[other_reason]).dead_lettered == 1
    stored = store.conn.execute(
        "SELECT topic, payload, reason, digest FROM dead_letters ORDER BY id"
    ).fetchall()
    store.conn.commit()
    assert stored[0] == (letter.topic, letter.payload, "invalid_json", letter.digest)
    assert len(stored) == 2


def test_writer_is_reusable_after_reconnect(store: Store) -> None:
    writer = BatchWriter(store.conn)
    writer.write(rows_for(store, "A-E1", 5))
    store.conn.close()
    with pytest.raises(psycopg.OperationalError):
        writer.write(rows_for(store, "A-E1", 10))
    with psycopg.connect(store.dsn) as conn:
        writer.rebind(conn)
        assert writer.write(rows_for(store, "A-E1", 10)) == WriteResult(5, 5, 0)


def test_refuses_a_connection_inside_a_transaction(store: Store) -> None:
    writer = BatchWriter(store.conn)
    store.conn.execute("SELECT 1")  # opens an implicit transaction
    with pytest.raises(RuntimeError, match="idle connection"):
        writer.write(rows_for(store, "A-E1", 1))
    store.conn.rollback()


def test_naive_time_is_rejected(store: Store) -> None:
    writer = BatchWriter(store.conn)
    reg = store.reg
    naive = (datetime(2026, 2, 18, 14, 30), reg.devices["A-E1"], reg.gw_a, reg.tenant_a, 1.0)
    with pytest.raises((ValueError, psycopg.DataError), match=r"naive|timezone"):
        writer.write([naive])


def test_partitions_are_created_on_demand_and_ahead(plain_store: Store) -> None:
    conn = plain_store.conn
    writer = BatchWriter(conn)
    start = datetime(2026, 1, 30, 23, 0, tzinfo=UTC)
    writer.write(rows_for(plain_store, "A-E1", 30, start=start, step=timedelta(hours=1)))  # 30 Jan .. 1 Feb
    days = existing_partitions(conn)
    conn.commit()
    assert {d.isoformat() for d in days} >= {"2026-01-30", "2026-01-31", "2026-02-01"}
    assert count(conn, "SELECT count(*) FROM readings_p20260131") == 24
    # A partition dropped behind the writer's back (retention): the retry re-creates it.
    conn.execute("DROP TABLE readings_p20260131")
    conn.commit()
    late = rows_for(plain_store, "A-E1", 2, start=datetime(2026, 1, 31, 5, tzinfo=UTC))
    with pytest.raises(psycopg.errors.CheckViolation):
        writer.write(late)
    assert writer.write(late).inserted == 2
    today = datetime.now(UTC).date()
    created = create_partitions_ahead(conn, 3, today=today)
    assert [d - today for d in created] == [timedelta(days=i) for i in range(4)]
    assert create_partitions_ahead(conn, 3, today=today) == []


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "staging"])
def test_rows_round_trip_exactly(store: Store, fast_path: bool) -> None:
    """The hand-built binary COPY stores exactly what it was given: microseconds, any zone, any float."""
    reg = store.reg
    device = reg.devices["A-E1"]
    brt = timezone(timedelta(hours=-3))
    base = T0.astimezone(brt)
    values = [0.0, -0.0, -1.5, 1e-300, 123456789.123456789, 2.0**53 + 1, -273.15, 1 / 3]
    rows = [(base + timedelta(minutes=i, microseconds=7 * i), device, reg.gw_a, reg.tenant_a, v)
            for i, v in enumerate(values)]
    rows.append((base + timedelta(days=-1, microseconds=999_999), device, reg.gw_a, reg.tenant_a, 42))
    BatchWriter(store.conn, fast_path=fast_path).write(rows)
    stored = store.conn.execute(
        "SELECT time, device_id, gateway_id, tenant_id, value FROM readings ORDER BY time"
    ).fetchall()
    store.conn.commit()
    assert stored == sorted([(t, d, g, tn, float(v)) for t, d, g, tn, v in rows])
    assert [math.copysign(1, v) for *_, v in stored] == [math.copysign(1, float(r[4])) for r in sorted(rows)]
    if store.backend == "postgres":  # the rollup log holds the same rows, each with its UTC hour
        logged = store.conn.execute(
            "SELECT e.* FROM readings_batch_log, unnest(device_id, bucket, gateway_id, tenant_id, value) AS e"
        ).fetchall()
        store.conn.commit()
        hour = timedelta(hours=1)
        expected = [(d, T0 + (t - T0) // hour * hour, g, tn, float(v)) for t, d, g, tn, v in rows]
        assert sorted(logged) == sorted(expected)


def test_encoding_sorts_by_device_then_time() -> None:
    t = datetime(2026, 3, 1, tzinfo=UTC)
    rows = [(t + timedelta(seconds=s), d, 1, 1, 0.0) for s in (5, 1, 3) for d in (300, 2, 70_000)]
    payload = encode_copy_binary(rows)
    records = [payload[19 + i * 62: 19 + (i + 1) * 62] for i in range(len(rows))]
    keys = [(int.from_bytes(r[6:14]), int.from_bytes(r[18:26])) for r in records]
    assert keys == sorted(keys) and len(set(keys)) == len(rows)
    assert payload[-2:] == b"\xff\xff"


@pytest.mark.parametrize(
    ("row", "detail"),
    [
        ((datetime(2026, 1, 1), 1, 1, 1, 1.0), "naive and offset-aware"),
        ((datetime(2026, 1, 1, tzinfo=UTC), "7", 1, 1, 1.0), "'7'"),
        ((datetime(2026, 1, 1, tzinfo=UTC), 1, 1, 1, "1.5"), "'1.5'"),
        ((datetime(2026, 1, 1, tzinfo=UTC), 2**63, 1, 1, 1.0), "9223372036854775808"),
        (("2026-01-01T00:00:00Z", 1, 1, 1, 1.0), "'2026-01-01T00:00:00Z'"),
        ((datetime(2026, 1, 1, tzinfo=UTC), 1, 1), "not enough values"),
    ],
    ids=["naive-time", "str-id", "str-value", "id-overflow", "str-time", "short-row"],
)
def test_encoding_refuses_bad_rows_with_a_clear_error(row: tuple, detail: str) -> None:
    good = (datetime(2026, 1, 1, tzinfo=UTC), 1, 1, 1, 1.0)
    with pytest.raises(ValueError) as raised:
        encode_copy_binary([good, row])
    message = str(raised.value)
    assert message.startswith("rows[1]: expected (timezone-aware datetime, int, int, int, float), got ")
    assert detail in message


def test_last_seen_resolution_skips_recent_liveness_updates(plain_store: Store) -> None:
    conn, reg = plain_store.conn, plain_store.reg
    writer = BatchWriter(conn, last_seen_resolution=timedelta(seconds=1))
    t = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

    def last_seen() -> datetime:
        value = conn.execute("SELECT last_seen FROM gateways WHERE id = %s", (reg.gw_a,)).fetchone()[0]
        conn.commit()
        return value

    writer.write([], {reg.gw_a: t})
    assert last_seen() == t
    writer.write([], {reg.gw_a: t + timedelta(milliseconds=400)})  # within the resolution: not rewritten
    assert last_seen() == t
    writer.write([], {reg.gw_a: t + timedelta(seconds=1)})
    assert last_seen() == t + timedelta(seconds=1)
    with conn.transaction():  # marked offline elsewhere (an LWT): the consumer then forgets
        conn.execute("UPDATE gateways SET online = false WHERE id = %s", (reg.gw_a,))
    writer.forget_liveness()
    writer.write([], {reg.gw_a: t + timedelta(seconds=1, milliseconds=100)})
    online = conn.execute("SELECT online FROM gateways WHERE id = %s", (reg.gw_a,)).fetchone()[0]
    conn.commit()
    assert online is True and last_seen() == t + timedelta(seconds=1, milliseconds=100)
    with pytest.raises(ValueError, match="last_seen_resolution: expected 0 or more"):
        BatchWriter(conn, last_seen_resolution=timedelta(seconds=-1))


def test_a_failed_batch_does_not_count_as_liveness_written(plain_store: Store) -> None:
    conn, reg = plain_store.conn, plain_store.reg
    writer = BatchWriter(conn, last_seen_resolution=timedelta(minutes=1))
    t = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    bad = DeadLetter(topic="t", payload=b"x", reason="r" * 10_000_000, detail="d", client_id=None, received_at=t)
    with pytest.raises(psycopg.Error):
        writer.write([], {reg.gw_a: t}, [bad])
    writer.write([], {reg.gw_a: t + timedelta(seconds=1)})
    seen = conn.execute("SELECT last_seen FROM gateways WHERE id = %s", (reg.gw_a,)).fetchone()[0]
    conn.commit()
    assert seen == t + timedelta(seconds=1)
