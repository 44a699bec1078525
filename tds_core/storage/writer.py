"""The batch writer: readings, gateway liveness and dead letters of one batch in ONE transaction.

Per batch: the readings are stored idempotently (below); on plain PostgreSQL the rows actually inserted
are also logged for the rollup refresher, as one row of parallel arrays (`readings_batch_log`, migration
0005); `gateways.last_seen/online` are advanced; dead letters are inserted (deduplicated by digest); then
one commit. The caller acknowledges the batch's messages only after `write()` returned.

Readings, two paths with the same outcome. Safe path: binary COPY into a temporary staging table, then
`INSERT INTO readings … ON CONFLICT DO NOTHING` (redelivered readings are dropped, never duplicated).
Fast path, tried first: binary COPY straight into `readings` inside a savepoint. A plain COPY fails as a
whole on one duplicate key, so a batch holding any already-stored reading rolls back to the savepoint and
takes the safe path; after such a batch the next one goes straight to the safe path (redeliveries come in
bursts) until a batch turns out clean. Measured on this machine: the fast path is about twice the
throughput of the safe one (bench/bench_writer.py).

Failure contract: on any database error the transaction is rolled back and the error propagates; nothing
of the batch is stored (rows, liveness and dead letters go together). The caller retries the same batch
(idempotent). If the connection itself is broken (`conn.closed` or `psycopg.OperationalError`), the caller
opens a new connection and calls `writer.rebind(new_conn)` (or builds a new BatchWriter) before retrying.
"""

from __future__ import annotations

import array
import logging
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from operator import itemgetter

import psycopg
from psycopg import pq

from tds_core.storage.capabilities import Backend
from tds_core.storage.deadletter import DeadLetter
from tds_core.storage.migrate import current_backend
from tds_core.storage.partitions import ensure_partitions, existing_partitions, utc_day

log = logging.getLogger(__name__)

# (time, device_id, gateway_id, tenant_id, value); time is timezone-aware.
Row = tuple[datetime, int, int, int, float]

_TIME = itemgetter(0)
_STAGING = "tds_readings_staging"
_CREATE_STAGING = f"""
    CREATE TEMP TABLE IF NOT EXISTS {_STAGING} (
        time timestamptz NOT NULL, device_id bigint NOT NULL, gateway_id bigint NOT NULL,
        tenant_id bigint NOT NULL, value double precision NOT NULL
    ) ON COMMIT DELETE ROWS
"""
# Column order (device_id, time, …): see encode_copy_binary.
_COPY = f"COPY {_STAGING} (device_id, time, gateway_id, tenant_id, value) FROM STDIN (FORMAT BINARY)"
_COPY_DIRECT = "COPY readings (device_id, time, gateway_id, tenant_id, value) FROM STDIN (FORMAT BINARY)"

# PostgreSQL's binary COPY: a signature, flags and header-extension length, then per tuple a field count
# and (length, big-endian value) per field, then -1. timestamptz is int64 microseconds since 2000-01-01 UTC.
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
_TUPLE = struct.Struct(">hiqiqiqiqid")
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_HOUR = timedelta(hours=1)
_HOUR_US = 3_600_000_000
# Fast path's rollup log row, encoded by the client (encode_rollup_log).
_COPY_ROLLUP_LOG = """
    COPY readings_batch_log (device_id, bucket, gateway_id, tenant_id, value) FROM STDIN (FORMAT BINARY)
"""
# One-dimensional binary array: dimensions, has-nulls flag, element type, length, lower bound.
_ARRAY_HEADER = struct.Struct(">iiiii")
_INT8_OID, _TIMESTAMPTZ_OID, _FLOAT8_OID = 20, 1184, 701
_FIELD_COUNT = struct.Struct(">h")
_FIELD_LENGTH = struct.Struct(">i")

# Rows go in (device, time) order: two consumers inserting overlapping redeliveries then wait for each
# other in the same order instead of deadlocking on the unique index.
_INSERT_SELECT = f"""
    INSERT INTO readings (time, device_id, gateway_id, tenant_id, value)
    SELECT time, device_id, gateway_id, tenant_id, value FROM {_STAGING} ORDER BY device_id, time
    ON CONFLICT (device_id, time) DO NOTHING
"""
# Plain PostgreSQL: only the rows really inserted are logged for the rollups (a redelivery costs the
# refresher nothing and is never counted twice).
_INSERT_PLAIN = f"""
    WITH ins AS ({_INSERT_SELECT} RETURNING device_id, time, gateway_id, tenant_id, value),
    logged AS (
        INSERT INTO readings_batch_log (device_id, bucket, gateway_id, tenant_id, value)
        SELECT array_agg(device_id), array_agg(date_trunc('hour', time, 'UTC')), array_agg(gateway_id),
               array_agg(tenant_id), array_agg(value)
        FROM ins HAVING count(*) > 0
    )
    SELECT count(*) FROM ins
"""
# Lock the gateways' rows in id order first (an UPDATE … FROM locks in whatever order its join yields).
_LOCK_GATEWAYS = "SELECT id FROM gateways WHERE id = ANY(%s::bigint[]) ORDER BY id FOR NO KEY UPDATE"
# Touching only last_seen/online fires no registry notification (migration 0001); rows already current
# are not rewritten, so redeliveries cost no row versions.
_UPDATE_GATEWAYS = """
    UPDATE gateways AS g SET last_seen = greatest(g.last_seen, v.seen), online = true
    FROM unnest(%s::bigint[], %s::timestamptz[]) AS v(id, seen)
    WHERE g.id = v.id AND (g.last_seen IS NULL OR g.last_seen < v.seen OR NOT g.online)
"""
_INSERT_DEAD_LETTERS = """
    INSERT INTO dead_letters (received_at, topic, payload, reason, detail, client_id, digest)
    SELECT * FROM unnest(%s::timestamptz[], %s::text[], %s::bytea[], %s::text[], %s::text[], %s::text[],
                         %s::bytea[])
    ON CONFLICT (digest) DO NOTHING
"""


@dataclass(frozen=True)
class WriteResult:
    """What one batch did: readings inserted, readings already stored (redelivered), dead letters stored."""

    inserted: int
    duplicates: int
    dead_lettered: int


class BatchWriter:
    """Writes batches through one connection. Not thread-safe: one writer per connection and thread."""

    def __init__(
        self,
        conn: psycopg.Connection,
        backend: Backend | None = None,
        *,
        fast_path: bool = True,
        last_seen_resolution: timedelta = timedelta(0),
    ) -> None:
        """`last_seen_resolution`: skip a gateway's liveness update when this writer already committed a
        last_seen less than this much older (0: every batch writes it). The database's last_seen then lags
        the newest message by less than the resolution; `forget_liveness()` ends the skipping (e.g. after
        the gateway was marked offline)."""
        if last_seen_resolution < timedelta(0):
            raise ValueError(f"last_seen_resolution: expected 0 or more, got {last_seen_resolution}")
        self.last_seen_resolution = last_seen_resolution
        self._seen_committed: dict[int, datetime] = {}
        self._known_days: set[date] = set()
        self.fast_path = fast_path
        self._expect_duplicates = False
        self.backend: Backend = backend or self._read_backend(conn)
        self.rebind(conn)

    @staticmethod
    def _read_backend(conn: psycopg.Connection) -> Backend:
        backend = current_backend(conn)
        if conn.info.transaction_status == pq.TransactionStatus.INTRANS:
            conn.rollback()  # the lookup opened a transaction on a non-autocommit connection
        if backend is None:
            raise RuntimeError("database is not migrated: run `tds db migrate` first")
        return backend

    def rebind(self, conn: psycopg.Connection) -> None:
        """Use `conn` from now on (after a reconnect): per-connection state (the staging table) is reset."""
        self.conn = conn
        self._staging_ready = False

    def write(
        self,
        rows: Sequence[Row],
        seen_gateways: Mapping[int, datetime] | None = None,
        dead_letters: Sequence[DeadLetter] = (),
    ) -> WriteResult:
        """Store one batch in one transaction and commit; return what was stored.

        rows: (time, device_id, gateway_id, tenant_id, value) with aware times; a (device_id, time) already
        stored, or repeated within the batch, is kept once (the first stored value wins).
        seen_gateways: gateway id -> time of its latest message; last_seen only moves forward, online=true.
        dead_letters: rejected messages; one already stored (same digest) is not stored again.
        Raises psycopg.Error after rolling back (see the module docstring for what the caller must do).
        """
        conn = self.conn
        if conn.closed:
            raise psycopg.OperationalError(
                "BatchWriter: the connection is closed; reconnect and call rebind()"
            )
        if conn.info.transaction_status != pq.TransactionStatus.IDLE:
            raise RuntimeError(
                "BatchWriter.write needs an idle connection (no open transaction): it commits the batch itself"
            )
        if seen_gateways and self.last_seen_resolution:
            seen_gateways = self._liveness_due(seen_gateways)
        if not rows and not seen_gateways and not dead_letters:
            return WriteResult(0, 0, 0)
        if rows and self.backend == "postgres":
            try:
                self._ensure_days(rows)
            except TypeError as exc:  # min()/max() over naive and aware datetimes
                raise ValueError(f"rows: expected timezone-aware datetimes: {exc}") from exc
        try:
            with conn.transaction():
                inserted = self._insert_rows(rows) if rows else 0
                if seen_gateways:
                    self._touch_gateways(seen_gateways)
                stored_dead = self._insert_dead_letters(dead_letters) if dead_letters else 0
        except Exception as exc:
            # A partition may have been dropped by retention meanwhile, or the session lost: start afresh.
            self._known_days.clear()
            self._staging_ready = False
            if isinstance(exc, TypeError):  # psycopg could not encode a row (e.g. a naive datetime)
                raise ValueError(
                    f"rows: expected (timezone-aware datetime, int, int, int, float) tuples: {exc}"
                ) from exc
            raise
        if seen_gateways and self.last_seen_resolution:
            self._seen_committed.update(seen_gateways)
        return WriteResult(inserted, len(rows) - inserted, stored_dead)

    def forget_liveness(self) -> None:
        """Write every gateway's liveness on its next batch again (call after marking gateways offline)."""
        self._seen_committed.clear()

    def _liveness_due(self, seen: Mapping[int, datetime]) -> dict[int, datetime]:
        committed, resolution = self._seen_committed, self.last_seen_resolution
        return {
            gid: at for gid, at in seen.items()
            if (previous := committed.get(gid)) is None or at - previous >= resolution
        }

    def _ensure_days(self, rows: Sequence[Row]) -> None:
        # Cheap common case: the batch's time span lies in days already known to exist.
        times = list(map(itemgetter(0), rows))
        first, last = utc_day(min(times)), utc_day(max(times))
        span = (last - first).days
        if span < 8 and all(first + timedelta(days=i) in self._known_days for i in range(span + 1)):
            return
        days = {utc_day(t) for t in times}
        missing = days - self._known_days
        if not missing:
            return
        if not self._known_days:
            self._known_days.update(existing_partitions(self.conn))
            self.conn.commit()  # end the read's implicit transaction (no-op in autocommit mode)
            missing -= self._known_days
        if missing:
            ensure_partitions(self.conn, missing)
        self._known_days.update(missing)

    def _insert_rows(self, rows: Sequence[Row]) -> int:
        if self.fast_path and not self._expect_duplicates:
            try:
                with self.conn.transaction():  # a savepoint inside the batch's transaction
                    self._copy_direct(rows)
                return len(rows)
            except psycopg.errors.UniqueViolation:
                self._expect_duplicates = True  # a redelivery: this batch and the next take the safe path
        inserted = self._insert_via_staging(rows)
        self._expect_duplicates = inserted < len(rows)
        return inserted

    def _copy_direct(self, rows: Sequence[Row]) -> None:
        payload = encode_copy_binary(rows)
        logged = None
        with self.conn.cursor() as cur:
            with cur.copy(_COPY_DIRECT) as copy:
                copy.write(payload)
                if self.backend == "postgres":
                    # Every row is being inserted: all of them go to the rollup log. Encoded while the
                    # server is still inserting the tail of the COPY.
                    logged = encode_rollup_log(rows)
            if logged is not None:
                with cur.copy(_COPY_ROLLUP_LOG) as copy:
                    copy.write(logged)

    def _insert_via_staging(self, rows: Sequence[Row]) -> int:
        conn = self.conn
        if not self._staging_ready:
            conn.execute(_CREATE_STAGING)
            self._staging_ready = True  # reset by write() if this transaction rolls back
        payload = encode_copy_binary(rows)
        with conn.cursor() as cur:
            with cur.copy(_COPY) as copy:
                copy.write(payload)
            if self.backend == "postgres":
                cur.execute(_INSERT_PLAIN)
                (count,) = cur.fetchone()  # type: ignore[misc]
                return int(count)
            cur.execute(_INSERT_SELECT)
            return cur.rowcount

    def _touch_gateways(self, seen: Mapping[int, datetime]) -> None:
        ids = sorted(seen)
        id_array = _int_array(ids)
        self.conn.execute(_LOCK_GATEWAYS, (id_array,))
        # ISO 8601 with its offset: exact to the microsecond, and needs no quoting inside an array literal.
        seen_array = "{" + ",".join([seen[i].isoformat() for i in ids]) + "}"
        self.conn.execute(_UPDATE_GATEWAYS, (id_array, seen_array))

    def _insert_dead_letters(self, letters: Iterable[DeadLetter]) -> int:
        letters = list(letters)
        cur = self.conn.execute(
            _INSERT_DEAD_LETTERS,
            (
                [d.received_at for d in letters],
                [d.topic for d in letters],
                [d.payload for d in letters],
                [d.reason for d in letters],
                [d.detail for d in letters],
                [d.client_id for d in letters],
                [d.digest for d in letters],
            ),
        )
        return cur.rowcount


def _int_array(values: Iterable[int]) -> str:
    """A bigint[] literal (pass with a ::bigint[] cast): psycopg dumps a list item by item in Python and
    checks each for quoting; one join is several times cheaper for the gateway ids of a batch."""
    return "{" + ",".join(map(str, values)) + "}"


def encode_copy_binary(rows: Sequence[Row]) -> bytes:
    """Rows as one binary COPY stream of (device_id, time, gateway_id, tenant_id, value), in (device, time)
    order.

    Built with one struct pack per row instead of psycopg's generic per-row dumping: about a third of the
    client's CPU per reading (bench/bench_writer.py). The order: consumers racing on overlapping
    redeliveries wait for each other in the same order instead of deadlocking, and index inserts stay
    page-local. Big-endian records that start with the field count, device id and time sort bytewise in
    (device, time) order for ids ≥ 0 and times after 2000, so the packed records themselves are sorted.
    Raises ValueError for a row that is not (aware datetime, int, int, int, float).
    """
    micros: dict[datetime, int] = {}
    pack = _TUPLE.pack
    try:
        for t in set(map(_TIME, rows)):
            micros[t] = (t - _PG_EPOCH) // _MICROSECOND
        records = [pack(5, 8, d, 8, micros[t], 8, g, 8, tn, 8, v) for t, d, g, tn, v in rows]
    except (TypeError, ValueError, KeyError, struct.error) as exc:
        raise ValueError(_first_bad_row(rows, exc)) from exc
    records.sort()
    return b"".join((_COPY_SIGNATURE, *records, _COPY_TRAILER))


def _first_bad_row(rows: Sequence[Row], exc: Exception) -> str:
    """The error message for a batch that failed to encode: which row, what it held, what was expected."""
    expected = "expected (timezone-aware datetime, int, int, int, float)"
    for index, row in enumerate(rows):
        try:
            t, d, g, tn, v = row
            _TUPLE.pack(5, 8, d, 8, (t - _PG_EPOCH) // _MICROSECOND, 8, g, 8, tn, 8, v)
        except (TypeError, ValueError, struct.error) as row_exc:
            return f"rows[{index}]: {expected}, got {row!r}: {row_exc}"
    return f"rows: {expected}: {exc}"


def encode_rollup_log(rows: Sequence[Row]) -> bytes:
    """One binary COPY row of readings_batch_log: the rows' device ids, UTC hours, gateway ids, tenant ids
    and values as parallel arrays. Call after encode_copy_binary accepted `rows` (it validates them).

    No grouping by (device, hour) here: in the consumer's small batches each device appears about once,
    so grouping in Python would cost more than it saves; the refresher aggregates with SQL."""
    times, devices, gateways, tenants, values = zip(*rows, strict=True)
    hour_of = {t: (t - _PG_EPOCH) // _HOUR * _HOUR_US for t in set(times)}
    hours = list(map(hour_of.__getitem__, times))
    fields = (
        _binary_array(_INT8_OID, "q", devices),
        _binary_array(_TIMESTAMPTZ_OID, "q", hours),
        _binary_array(_INT8_OID, "q", gateways),
        _binary_array(_INT8_OID, "q", tenants),
        _binary_array(_FLOAT8_OID, "d", values),
    )
    parts = [_COPY_SIGNATURE, _FIELD_COUNT.pack(len(fields))]
    for field in fields:
        parts += (_FIELD_LENGTH.pack(len(field)), field)
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


def _binary_array(oid: int, code: str, values: Sequence) -> bytes:
    """A one-dimensional array without NULLs in PostgreSQL's binary format, where each 8-byte big-endian
    element is preceded by its length: the elements are packed by `array` and spread into their slots with
    strided copies (no Python object per element)."""
    n = len(values)
    packed = array.array(code, values)
    if sys.byteorder == "little":
        packed.byteswap()
    raw = packed.tobytes()
    out = bytearray(12 * n)
    out[3::12] = b"\x08" * n  # each element's length, 8, as a big-endian int32
    for k in range(8):
        out[4 + k :: 12] = raw[k::8]
    return _ARRAY_HEADER.pack(1, 0, oid, n, 1) + out
