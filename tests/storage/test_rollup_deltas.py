"""Plain PostgreSQL rollups from the writer's deltas: exact across batches in the same hour, rebuilds from
raw rows on request, and exactly-once counting while writers and refreshers run concurrently."""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from storage_testkit import Store, count

from tds_core.storage.rollups import refresh_rollups, request_rebuild
from tds_core.storage.writer import BatchWriter

HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)


def raw_hourly(conn: psycopg.Connection) -> dict:
    """(device, hour) -> (count, sum, min, max) straight from the raw rows."""
    rows = conn.execute(
        """SELECT device_id, date_trunc('hour', time, 'UTC'), count(*), sum(value), min(value), max(value)
           FROM readings GROUP BY 1, 2"""
    ).fetchall()
    conn.commit()
    return {(d, b): (n, s, lo, hi) for d, b, n, s, lo, hi in rows}


def rollup_hourly(conn: psycopg.Connection) -> dict:
    rows = conn.execute(
        "SELECT device_id, bucket, reading_count, sum_value, min_value, max_value, avg_value FROM readings_hourly"
    ).fetchall()
    conn.commit()
    out = {}
    for d, b, n, s, lo, hi, avg in rows:
        assert avg == pytest.approx(s / n)
        out[(d, b)] = (n, s, lo, hi)
    return out


def assert_rollups_match_raw(conn: psycopg.Connection) -> None:
    raw, rolled = raw_hourly(conn), rollup_hourly(conn)
    assert set(rolled) == set(raw)
    for key, (n, s, lo, hi) in raw.items():
        assert rolled[key][0] == n, key  # counts exact: nothing counted twice or missed
        assert rolled[key][1] == pytest.approx(s)
        assert rolled[key][2:] == (lo, hi)
    assert_levels_match_raw(conn)


_RAW_DAILY = """SELECT device_id, (time AT TIME ZONE 'UTC')::date, count(*), sum(value), min(value), max(value)
                FROM readings GROUP BY 1, 2"""
_RAW_MONTHLY = """SELECT device_id, date_trunc('month', time, 'UTC'), count(*), sum(value), min(value), max(value),
                         count(DISTINCT (time AT TIME ZONE 'UTC')::date)
                  FROM readings GROUP BY 1, 2"""


def assert_levels_match_raw(conn: psycopg.Connection) -> None:
    """Daily and monthly rollups equal what the raw rows give, days with readings included."""
    raw_daily = {(d, b): rest for d, b, *rest in conn.execute(_RAW_DAILY).fetchall()}
    daily = {(d, b): rest for d, b, *rest in conn.execute(
        "SELECT device_id, bucket, reading_count, sum_value, min_value, max_value FROM readings_daily").fetchall()}
    raw_monthly = {(d, b): rest for d, b, *rest in conn.execute(_RAW_MONTHLY).fetchall()}
    monthly = {(d, b): rest for d, b, *rest in conn.execute(
        """SELECT device_id, bucket, reading_count, sum_value, min_value, max_value, days_with_readings, avg_value
           FROM readings_monthly""").fetchall()}
    conn.commit()
    assert set(daily) == set(raw_daily)
    for key, (n, s, lo, hi) in raw_daily.items():
        assert daily[key][0] == n and daily[key][1] == pytest.approx(s) and daily[key][2:] == [lo, hi], key
    assert set(monthly) == set(raw_monthly)
    for key, (n, s, lo, hi, days) in raw_monthly.items():
        got = monthly[key]
        assert (got[0], got[2], got[3], got[4]) == (n, lo, hi, days), key
        assert got[1] == pytest.approx(s) and got[5] == pytest.approx(s / n), key


def minute_rows(store: Store, minutes: range, device: str = "A-E1", offset: float = 0.0) -> list[tuple]:
    reg = store.reg
    gateway, tenant = (reg.gw_a, reg.tenant_a) if device.startswith("A") else (reg.gw_b, reg.tenant_b)
    return [(HOUR + timedelta(minutes=m), reg.devices[device], gateway, tenant, offset + m * 1.5 - 40)
            for m in minutes]


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "staging"])
def test_deltas_across_batches_of_one_hour_fold_exactly(plain_store: Store, fast_path: bool) -> None:
    conn = plain_store.conn
    writer = BatchWriter(conn, fast_path=fast_path)
    for chunk in (range(0, 20), range(20, 45), range(45, 130, 3)):  # the last crosses into the next hour
        writer.write(minute_rows(plain_store, chunk) + minute_rows(plain_store, chunk, device="B-E1"))
        refresh_rollups(conn, "postgres")
        assert_rollups_match_raw(conn)
    # A redelivery adds nothing; a late row with a new minimum lands in an hour already folded.
    writer.write(minute_rows(plain_store, range(0, 45)))
    writer.write([(HOUR + timedelta(seconds=30), plain_store.reg.devices["A-E1"], plain_store.reg.gw_a,
                   plain_store.reg.tenant_a, -1e6)])
    refresh_rollups(conn, "postgres")
    assert_rollups_match_raw(conn)
    assert count(conn, "SELECT count(*) FROM readings_batch_log") == 0


def test_rebuild_recomputes_from_raw_rows(plain_store: Store) -> None:
    conn = plain_store.conn
    writer = BatchWriter(conn)
    writer.write(minute_rows(plain_store, range(0, 90)))
    refresh_rollups(conn, "postgres")
    with conn.transaction():  # a repair by hand: the rollups no longer match the raw rows
        conn.execute("UPDATE readings SET value = value * 2 WHERE time < %s", (HOUR + timedelta(minutes=10),))
    writer.write(minute_rows(plain_store, range(90, 100)))  # a pending delta for an hour about to be rebuilt
    assert request_rebuild(conn, HOUR, HOUR + timedelta(hours=2)) == 2
    refresh_rollups(conn, "postgres")
    assert_rollups_match_raw(conn)


def test_concurrent_writers_and_refreshers_count_every_row_once(plain_store: Store) -> None:
    """Two writers (overlapping redeliveries included) and a refresher that also queues rebuilds, all at once."""
    dsn, reg = plain_store.dsn, plain_store.reg
    errors: list[BaseException] = []
    writers_done = threading.Event()

    def write(device: str, offset: float) -> None:
        try:
            with psycopg.connect(dsn) as conn:
                writer = BatchWriter(conn)
                for start in range(0, 600, 15):
                    rows = minute_rows(plain_store, range(start, start + 20), device=device, offset=offset)
                    rows += minute_rows(plain_store, range(start, start + 20), device="A-T1", offset=offset)
                    writer.write(rows)
        except BaseException as exc:
            errors.append(exc)

    def refresh() -> None:
        try:
            with psycopg.connect(dsn) as conn:
                rounds = 0
                while not writers_done.is_set() or rounds < 3:
                    refresh_rollups(conn, "postgres")
                    if rounds % 2:  # every other round: some hours recompute from raw rows
                        request_rebuild(conn, HOUR, HOUR + timedelta(hours=11))
                    rounds += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=("A-E1", 0.0)), threading.Thread(target=write, args=("B-E1", 7.0)),
               threading.Thread(target=refresh), threading.Thread(target=refresh)]
    for t in threads:
        t.start()
    for t in threads[:2]:
        t.join(120)
    writers_done.set()
    for t in threads[2:]:
        t.join(120)
    assert not errors, errors
    refresh_rollups(plain_store.conn, "postgres")
    assert_rollups_match_raw(plain_store.conn)
    per_device = defaultdict(int)
    for (device, _), (n, *_rest) in raw_hourly(plain_store.conn).items():
        per_device[device] += n
    assert per_device[reg.devices["A-E1"]] == per_device[reg.devices["B-E1"]] == 605  # minutes 0..604


class _CommitAfterTake:
    """A connection proxy that lets another writer commit right after the refresher took the delta log:
    the moment where a refresh that read the raw rows from a later snapshot would count rows twice."""

    def __init__(self, conn: psycopg.Connection, write_meanwhile) -> None:
        self._conn, self._write_meanwhile = conn, write_meanwhile

    def __getattr__(self, name: str):
        return getattr(self._conn, name)

    def execute(self, query, params=None):
        cur = self._conn.execute(query, params)
        if isinstance(query, str) and "DELETE FROM readings_dirty WHERE bucket <" in query:
            self._write_meanwhile()
        return cur


def test_a_commit_during_a_rebuild_is_counted_once(plain_store: Store) -> None:
    conn = plain_store.conn
    writer = BatchWriter(conn)
    writer.write(minute_rows(plain_store, range(0, 30)))
    refresh_rollups(conn, "postgres")
    request_rebuild(conn, HOUR, HOUR + timedelta(hours=1))

    def write_meanwhile() -> None:
        with psycopg.connect(plain_store.dsn) as other:
            BatchWriter(other).write(minute_rows(plain_store, range(30, 40)))

    refresh_rollups(_CommitAfterTake(conn, write_meanwhile), "postgres")  # type: ignore[arg-type]
    refresh_rollups(conn, "postgres")  # folds the delta of the rows written meanwhile
    assert_rollups_match_raw(conn)
    assert rollup_hourly(conn)[(plain_store.reg.devices["A-E1"], HOUR)][0] == 40


def test_days_and_months_add_up_across_a_month_boundary(plain_store: Store) -> None:
    """Incremental folds into daily and monthly rows: late rows in days and months already folded, a new
    day in a folded month (days with readings + 1), and a new minimum and maximum in a closed day."""
    conn, reg = plain_store.conn, plain_store.reg
    month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_day_before = month - timedelta(days=1)
    writer = BatchWriter(conn)

    def rows(start: datetime, minutes: range, value: float = 10.0) -> list[tuple]:
        return [(start + timedelta(minutes=m), reg.devices["A-E1"], reg.gw_a, reg.tenant_a, value + m)
                for m in minutes]

    writer.write(rows(last_day_before + timedelta(hours=23), range(0, 50)))
    refresh_rollups(conn, "postgres")
    writer.write(rows(last_day_before + timedelta(hours=23), range(50, 70)))  # crosses into the new month
    refresh_rollups(conn, "postgres")
    assert_levels_match_raw(conn)
    writer.write(rows(last_day_before - timedelta(days=3), range(0, 5)))  # a new day in the folded month
    writer.write(rows(last_day_before + timedelta(hours=2), range(0, 2), value=-500.0))  # new minimum
    writer.write(rows(month + timedelta(minutes=30), range(0, 1), value=1e6))  # new maximum, late
    refresh_rollups(conn, "postgres")
    assert_rollups_match_raw(conn)
    days = conn.execute("SELECT bucket, days_with_readings FROM readings_monthly ORDER BY bucket").fetchall()
    conn.commit()
    assert [d for _, d in days] == [2, 1]


def test_an_entry_without_figures_is_rebuilt_from_raw_rows(plain_store: Store) -> None:
    """A log entry with no figures (as a writer from before migration 0004 wrote them) recomputes its hour."""
    conn = plain_store.conn
    writer = BatchWriter(conn)
    writer.write(minute_rows(plain_store, range(0, 30)))
    refresh_rollups(conn, "postgres")
    with conn.transaction():
        conn.execute("UPDATE readings SET value = value + 1000")
        conn.execute("INSERT INTO readings_dirty (device_id, bucket) VALUES (%s, %s)",
                     (plain_store.reg.devices["A-E1"], HOUR))
    refresh_rollups(conn, "postgres")
    assert_rollups_match_raw(conn)
    assert count(conn, "SELECT count(*) FROM readings_rebuild") == 0


def test_a_refresh_up_to_an_end_leaves_later_hours_logged(plain_store: Store) -> None:
    conn = plain_store.conn
    BatchWriter(conn).write(minute_rows(plain_store, range(0, 150)))  # hours 0, 1 and 2 in one batch
    refresh_rollups(conn, "postgres", end=HOUR + timedelta(hours=1))
    assert set(b for _, b in rollup_hourly(conn)) == {HOUR}
    assert count(conn, "SELECT sum(cardinality(device_id)) FROM readings_batch_log") == 90
    refresh_rollups(conn, "postgres")
    assert_rollups_match_raw(conn)


def test_entries_left_by_an_older_writer_are_folded(plain_store: Store) -> None:
    """A writer from before migration 0005 logged figures per (device, hour) in readings_dirty: a rolling
    upgrade folds them together with the new batch log."""
    conn, reg = plain_store.conn, plain_store.reg
    BatchWriter(conn).write(minute_rows(plain_store, range(0, 30)))
    old_rows = minute_rows(plain_store, range(30, 40))
    with conn.transaction():
        conn.cursor().executemany(
            "INSERT INTO readings (time, device_id, gateway_id, tenant_id, value) VALUES (%s, %s, %s, %s, %s)",
            old_rows)
        values = [r[4] for r in old_rows]
        conn.execute(
            """INSERT INTO readings_dirty
               (device_id, bucket, gateway_id, tenant_id, sum_value, min_value, max_value, reading_count)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
            (reg.devices["A-E1"], HOUR, reg.gw_a, reg.tenant_a, sum(values), min(values), max(values), len(values)))
    refresh_rollups(conn, "postgres")
    assert_rollups_match_raw(conn)
    assert count(conn, "SELECT count(*) FROM readings_dirty") == 0
