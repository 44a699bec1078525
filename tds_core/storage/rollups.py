"""Keeping `readings_hourly` and `readings_monthly` current on either backend.

TimescaleDB: `refresh_continuous_aggregate` over a window inside the retention period (refreshing over
dropped chunks would erase the aggregated buckets). Plain PostgreSQL: in the same transaction as the rows
it inserted, the writer logs them (device, hour, gateway, tenant, value; one row of arrays per batch,
`readings_batch_log`, migration 0005); the refresher consumes that log and adds each hour's sum, min, max
and count to the hourly, daily and monthly rows. Only
inserted rows are logged, so redelivered rows are never counted twice, and late rows simply add their
delta. Hours queued by `request_rebuild` (`readings_rebuild`, migration 0004) are recomputed from the raw
rows instead, and the days and months they touch from the level below.

The refresh runs in REPEATABLE READ: the log it consumes and the raw rows it re-aggregates are read from the
same snapshot, and the writer commits rows and their deltas together, so a row is counted exactly once
whichever way its hour is refreshed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

from tds_core.storage.capabilities import Backend
from tds_core.storage.config import get_settings

log = logging.getLogger(__name__)

_REFRESH_LOCK = 0x7D5_0003  # one plain-backend refresher at a time

# Both refresh paths consume the whole log up to `end` in one read, as they delete it: the writers' batch
# rows (migration 0005), unnested and summed per (device, hour) straight away, and entries an older writer
# left in readings_dirty. Buckets older than the retained period are consumed without being folded (their
# raw rows may be gone: recomputing would erase the buckets); an entry without figures, written by a
# pre-0004 writer, becomes a rebuild request.
_TAKE_LOG = """
    WITH batches AS (
        DELETE FROM readings_batch_log RETURNING device_id, bucket, gateway_id, tenant_id, value
    ),
    batch_hours AS (
        SELECT e.device_id, e.bucket, e.gateway_id, e.tenant_id,
               sum(e.value) AS sum_value, min(e.value) AS min_value, max(e.value) AS max_value,
               count(*) AS reading_count
        FROM batches b, unnest(b.device_id, b.bucket, b.gateway_id, b.tenant_id, b.value)
             AS e(device_id, bucket, gateway_id, tenant_id, value)
        WHERE e.bucket < %(end)s
        GROUP BY e.bucket, e.tenant_id, e.gateway_id, e.device_id
    ),{later}
    legacy AS (
        DELETE FROM readings_dirty WHERE bucket < %(end)s
        RETURNING device_id, bucket, gateway_id, tenant_id, sum_value, min_value, max_value, reading_count
    ),
    stray AS (
        INSERT INTO readings_rebuild
        SELECT DISTINCT device_id, bucket FROM legacy WHERE reading_count IS NULL AND bucket >= %(start)s
        RETURNING 1
    ),
    taken AS (SELECT * FROM batch_hours UNION ALL SELECT * FROM legacy),
"""
# A refresh that stops at an `end` logs the batch entries from `end` on again, for a later refresh. Only
# then: unnesting the log a second time would cost the every-second fold a quarter of its time.
_KEEP_LATER = """
    later AS (
        INSERT INTO readings_batch_log
        SELECT array_agg(e.device_id), array_agg(e.bucket), array_agg(e.gateway_id), array_agg(e.tenant_id),
               array_agg(e.value)
        FROM batches b, unnest(b.device_id, b.bucket, b.gateway_id, b.tenant_id, b.value)
             AS e(device_id, bucket, gateway_id, tenant_id, value)
        WHERE e.bucket >= %(end)s HAVING count(*) > 0
    ),"""


def _bounded(statement: str, bounded: bool) -> str:
    """`statement` (built on _TAKE_LOG) for a refresh up to a given `end`, or over everything logged."""
    return statement.replace("{later}", _KEEP_LATER if bounded else "")


_ADD_TO_HOURLY = """
        ON CONFLICT (device_id, bucket, tenant_id, gateway_id) DO UPDATE SET
            sum_value = h.sum_value + excluded.sum_value,
            avg_value = (h.sum_value + excluded.sum_value) / (h.reading_count + excluded.reading_count),
            min_value = least(h.min_value, excluded.min_value),
            max_value = greatest(h.max_value, excluded.max_value),
            reading_count = h.reading_count + excluded.reading_count
"""

# The common case, no rebuild pending: the log is folded into the hourly, daily and monthly rows in one
# statement. Every level adds the deltas; a day without a daily row before this fold (every part of the
# statement sees the table as it was) adds one to its month's days with readings.
_FOLD_ALL = f"""
{_TAKE_LOG}    hour_delta AS (
        SELECT bucket, tenant_id, gateway_id, device_id, sum(sum_value) AS s, min(min_value) AS lo,
               max(max_value) AS hi, sum(reading_count) AS n
        FROM taken WHERE reading_count IS NOT NULL AND bucket >= %(start)s
        GROUP BY bucket, tenant_id, gateway_id, device_id
    ),
    hourly AS (
        INSERT INTO readings_hourly AS h
        SELECT bucket, tenant_id, gateway_id, device_id, s, s / n, lo, hi, n FROM hour_delta
{_ADD_TO_HOURLY}    ),
    day_delta AS (
        SELECT (bucket AT TIME ZONE 'UTC')::date AS day, tenant_id, gateway_id, device_id,
               sum(s) AS s, min(lo) AS lo, max(hi) AS hi, sum(n) AS n
        FROM hour_delta GROUP BY 1, 2, 3, 4
    ),
    daily AS (
        INSERT INTO readings_daily AS y SELECT day, tenant_id, gateway_id, device_id, s, lo, hi, n FROM day_delta
        ON CONFLICT (device_id, bucket, tenant_id, gateway_id) DO UPDATE SET
            sum_value = y.sum_value + excluded.sum_value,
            min_value = least(y.min_value, excluded.min_value),
            max_value = greatest(y.max_value, excluded.max_value),
            reading_count = y.reading_count + excluded.reading_count
    ),
    month_delta AS (
        SELECT date_trunc('month', d.day)::timestamp AT TIME ZONE 'UTC' AS month, d.tenant_id, d.gateway_id,
               d.device_id, sum(d.s) AS s, min(d.lo) AS lo, max(d.hi) AS hi, sum(d.n) AS n,
               count(*) FILTER (WHERE y.device_id IS NULL) AS new_days
        FROM day_delta d
        LEFT JOIN readings_daily y ON y.device_id = d.device_id AND y.bucket = d.day
             AND y.tenant_id = d.tenant_id AND y.gateway_id = d.gateway_id
        GROUP BY 1, 2, 3, 4
    ),
    monthly AS (
        INSERT INTO readings_monthly AS m
        SELECT month, tenant_id, gateway_id, device_id, s, s / n, lo, hi, n, new_days FROM month_delta
        ON CONFLICT (device_id, bucket, tenant_id, gateway_id) DO UPDATE SET
            sum_value = m.sum_value + excluded.sum_value,
            avg_value = (m.sum_value + excluded.sum_value) / (m.reading_count + excluded.reading_count),
            min_value = least(m.min_value, excluded.min_value),
            max_value = greatest(m.max_value, excluded.max_value),
            reading_count = m.reading_count + excluded.reading_count,
            days_with_readings = m.days_with_readings + excluded.days_with_readings
    )
    SELECT (SELECT count(*) FROM hour_delta), (SELECT count(*) FROM taken WHERE bucket < %(start)s),
           (SELECT count(*) FROM stray)
"""

# With rebuilds pending, the old way: the requested hours recompute from the raw rows, every other entry
# folds into its hourly row, then every touched day recomputes from its hours and every touched month from
# its days (a rebuilt hour replaces its figures, so the levels above cannot just add deltas).
_PENDING_REBUILDS = "SELECT EXISTS (SELECT 1 FROM readings_rebuild WHERE bucket < %(end)s)"
_TAKE_REBUILDS = """
    WITH taken AS (DELETE FROM readings_rebuild WHERE bucket < %(end)s RETURNING device_id, bucket)
    INSERT INTO tds_rebuild_hours SELECT DISTINCT device_id, bucket FROM taken WHERE bucket >= %(start)s
"""
# Entries of hours being rebuilt are consumed without folding: the raw rows re-aggregated below already
# hold them (same snapshot).
_FOLD_HOURS = f"""
{_TAKE_LOG}    folded AS (
        INSERT INTO readings_hourly AS h
        SELECT t.bucket, t.tenant_id, t.gateway_id, t.device_id, sum(t.sum_value),
               sum(t.sum_value) / sum(t.reading_count), min(t.min_value), max(t.max_value), sum(t.reading_count)
        FROM taken t
        LEFT JOIN tds_rebuild_hours x ON x.device_id = t.device_id AND x.bucket = t.bucket
        WHERE x.device_id IS NULL AND t.reading_count IS NOT NULL AND t.bucket >= %(start)s
        GROUP BY t.bucket, t.tenant_id, t.gateway_id, t.device_id
{_ADD_TO_HOURLY}        RETURNING device_id, bucket
    ),
    noted AS (INSERT INTO tds_dirty_hours SELECT DISTINCT device_id, bucket FROM folded)
    SELECT count(*) FROM taken WHERE bucket < %(start)s
"""
_HOURLY_REBUILD = """
    DELETE FROM readings_hourly h USING tds_rebuild_hours d WHERE h.device_id = d.device_id AND h.bucket = d.bucket;
    INSERT INTO readings_hourly
    SELECT d.bucket, r.tenant_id, r.gateway_id, r.device_id,
           sum(r.value), avg(r.value), min(r.value), max(r.value), count(*)
    FROM tds_rebuild_hours d
    JOIN readings r ON r.device_id = d.device_id AND r.time >= d.bucket AND r.time < d.bucket + interval '1 hour'
    GROUP BY d.bucket, r.tenant_id, r.gateway_id, r.device_id;
    INSERT INTO tds_dirty_hours SELECT device_id, bucket FROM tds_rebuild_hours;
"""
_DAILY = """
    CREATE TEMP TABLE tds_dirty_days ON COMMIT DROP AS
        SELECT DISTINCT device_id, (bucket AT TIME ZONE 'UTC')::date AS day FROM tds_dirty_hours;
    DELETE FROM readings_daily y USING tds_dirty_days d WHERE y.device_id = d.device_id AND y.bucket = d.day;
    INSERT INTO readings_daily
    SELECT d.day, h.tenant_id, h.gateway_id, h.device_id,
           sum(h.sum_value), min(h.min_value), max(h.max_value), sum(h.reading_count)
    FROM tds_dirty_days d
    JOIN readings_hourly h ON h.device_id = d.device_id
         AND h.bucket >= d.day::timestamp AT TIME ZONE 'UTC'
         AND h.bucket < (d.day + 1)::timestamp AT TIME ZONE 'UTC'
    GROUP BY d.day, h.tenant_id, h.gateway_id, h.device_id;
"""
_MONTHLY = """
    CREATE TEMP TABLE tds_dirty_months ON COMMIT DROP AS
        SELECT DISTINCT device_id, date_trunc('month', day)::date AS month FROM tds_dirty_days;
    DELETE FROM readings_monthly m USING tds_dirty_months d
        WHERE m.device_id = d.device_id AND m.bucket = d.month::timestamp AT TIME ZONE 'UTC';
    INSERT INTO readings_monthly
    SELECT d.month::timestamp AT TIME ZONE 'UTC', y.tenant_id, y.gateway_id, y.device_id,
           sum(y.sum_value), sum(y.sum_value) / sum(y.reading_count), min(y.min_value), max(y.max_value),
           sum(y.reading_count), count(*)
    FROM tds_dirty_months d
    JOIN readings_daily y ON y.device_id = d.device_id
         AND y.bucket >= d.month AND y.bucket < (d.month + interval '1 month')::date
    GROUP BY d.month, y.tenant_id, y.gateway_id, y.device_id;
"""


@dataclass(frozen=True)
class RefreshResult:
    """What a refresh covered: the window and (plain backend) how many dirty hour buckets it recomputed."""

    start: datetime
    end: datetime | None
    hours: int


def retained_since(keep: timedelta, now: datetime | None = None) -> datetime:
    """Start (UTC midnight) of the oldest day whose raw rows retention keeps: the safe refresh start."""
    moment = (now or datetime.now(UTC)) - keep
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC) + timedelta(days=1)


def refresh_rollups(
    conn: psycopg.Connection, backend: Backend, start: datetime | None = None, end: datetime | None = None
) -> RefreshResult:
    """Bring the hourly and monthly rollups up to date for [start, end) (default: the retained period).

    Nothing before the retention edge is recomputed, whatever `start`. TimescaleDB recomputes buckets
    from `start` on (the month that holds `start` included, when its raw rows are all retained). Plain
    PostgreSQL folds its whole log up to `end` whatever `start`: a later start must not throw away the
    deltas of late rows between the retention edge and it. The connection must be idle; the refresh
    commits on its own.
    """
    retained = retained_since(get_settings(conn).retention)
    conn.commit()
    if backend == "timescale":
        return _refresh_timescale(conn, retained if start is None else max(start, retained), end, retained)
    return _refresh_plain(conn, retained, end)


def _refresh_plain(conn: psycopg.Connection, start: datetime, end: datetime | None) -> RefreshResult:
    upper = end or datetime.max.replace(tzinfo=UTC)
    params = {"start": start, "end": upper}
    # A session-level lock taken before the transaction: the REPEATABLE READ snapshot must be taken after
    # the previous refresher committed, or this one would try to consume entries that one already deleted.
    conn.execute("SELECT pg_advisory_lock(%s)", (_REFRESH_LOCK,))
    conn.commit()
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            if conn.execute(_PENDING_REBUILDS, params).fetchone()[0]:  # type: ignore[index]
                hours, discarded = _refresh_with_rebuilds(conn, params, end is not None)
            else:
                fold = _bounded(_FOLD_ALL, end is not None)
                hours, discarded, strays = conn.execute(fold, params).fetchone()  # type: ignore[misc]
                if strays:  # entries without figures turned into rebuild requests: carry them out now
                    rebuilt, _ = _refresh_with_rebuilds(conn, params, end is not None)
                    hours += rebuilt
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_REFRESH_LOCK,))
            conn.commit()
    if discarded:
        log.warning("discarded the rollup deltas of %d (device, hour) buckets older than the retained period (%s)",
                    discarded, start)
    log.debug("refreshed %d hourly rollup buckets", hours)
    return RefreshResult(start, end, hours)


def _refresh_with_rebuilds(conn: psycopg.Connection, params: dict, bounded: bool) -> tuple[int, int]:
    """The refresh when rebuilds are pending (inside the caller's transaction): (hours, buckets discarded)."""
    conn.execute(
        """CREATE TEMP TABLE tds_rebuild_hours (device_id bigint, bucket timestamptz) ON COMMIT DROP;
           CREATE TEMP TABLE tds_dirty_hours (device_id bigint, bucket timestamptz) ON COMMIT DROP"""
    )
    if conn.execute(_TAKE_REBUILDS, params).rowcount:
        conn.execute("ANALYZE tds_rebuild_hours")  # a fresh temporary table has no statistics
    (discarded,) = conn.execute(_bounded(_FOLD_HOURS, bounded), params).fetchone()  # type: ignore[misc]
    conn.execute(_HOURLY_REBUILD)
    hours = conn.execute("SELECT count(DISTINCT (device_id, bucket)) FROM tds_dirty_hours").fetchone()[0]  # type: ignore[index]
    if hours:
        conn.execute("ANALYZE tds_dirty_hours")
        conn.execute(_DAILY)
        conn.execute(_MONTHLY)
    return hours, discarded


def request_rebuild(conn: psycopg.Connection, start: datetime, end: datetime) -> int:
    """Plain PostgreSQL: make the next refresh recompute every hour in [start, end) that has raw rows from
    those rows (a repair after raw rows were changed by hand). Returns the number of hours queued; commits.
    """
    with conn.transaction():
        cur = conn.execute(
            """INSERT INTO readings_rebuild (device_id, bucket)
               SELECT DISTINCT device_id, date_trunc('hour', time, 'UTC') FROM readings
               WHERE time >= %s AND time < %s""",
            (start, end),
        )
    return cur.rowcount


def _refresh_timescale(conn: psycopg.Connection, start: datetime, end: datetime | None,
                       retained: datetime) -> RefreshResult:
    # A monthly bucket is only materialised when the window covers it entirely, so the window starts at
    # the month of `start`; but the month that straddles the retention edge keeps its old figures (its
    # older raw rows are gone): then the window starts at the next month.
    month_start = datetime(start.year, start.month, 1, tzinfo=UTC)
    if month_start < retained:
        month_start = datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)
    autocommit = conn.autocommit
    conn.autocommit = True  # refresh_continuous_aggregate refuses to run inside a transaction block
    try:
        call = "CALL refresh_continuous_aggregate(%s, %s::timestamptz, %s::timestamptz)"
        conn.execute(call, ("readings_hourly", start, end))
        if end is None or month_start < end:
            conn.execute(call, ("readings_monthly", month_start, end))
    finally:
        conn.autocommit = autocommit
    return RefreshResult(start, end, 0)
