"""What a run observed, gathered independently of the core's own counters.

Two sources that do not trust each other: the harness's accounting (what each meter produced and each
gateway published and got PUBACKed, from the fleet engine) and the database as it is at the end (rows,
dead letters, online flags). The expectation checkers compare the two; the reports plot them.

The readings themselves are compared as a :class:`ReadingsComparison`: per-gateway tallies, the first few
differing rows of each kind and the series with a gap or a commit-order inversion. A run builds it inside
PostgreSQL (:func:`compare_in_database`: the accounting is streamed into temporary tables with binary COPY
and compared with anti-joins and a window over xmin, so verifying a month of a fleet needs bounded memory);
observations built by hand (tests) get the same structure from :func:`compare_in_memory`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Any

log = logging.getLogger(__name__)

RowKey = tuple[str, str, datetime]  # (gateway mac, device code, reading time)

EXAMPLES = 5  # differing rows kept per gateway and kind (a message shows the first few over its gateways)

# kinds of differing rows (RowExample.kind)
MISSING, NOT_PRODUCED, WRONG_VALUE, NEVER_SERVED = "missing", "not_produced", "wrong_value", "value_never_served"


@dataclass
class StoredRow:
    """One row of `readings`, mapped back to names: its value and the id of the transaction that wrote it."""

    value: float
    xid: int


@dataclass
class DeadLetterRecord:
    """One row of `dead_letters` (the payload is left out)."""

    reason: str
    topic: str
    detail: str
    client_id: str | None = None


@dataclass
class OnlineSample:
    """Gateways' `online` flags in the database, read at fleet offset `at_s` for one expectation."""

    expectation: str
    at_s: float
    observed: dict[str, bool | None]  # mac -> online (None: unknown gateway)
    waited_s: float = 0.0


@dataclass
class GatewayTally:
    """One gateway's readings: acked vs stored, and how many rows differ in each way."""

    expected: int = 0  # distinct acked readings
    stored: int = 0
    missing: int = 0  # acked, not stored
    not_produced: int = 0  # stored, not acked, and no meter ever served the value
    wrong_value: int = 0  # stored with another value than the acked one
    value_never_served: int = 0  # acked and stored, but the meter never served that value
    stored_but_not_acked: int = 0  # stored, not acked, value served (PUBACK lost on the way back)
    series: int = 0  # (gateway, device) series with an acked or a stored reading


@dataclass(frozen=True)
class RowExample:
    """One differing row: its kind, key, stored value and acked (published) value when they exist."""

    kind: str
    key: RowKey
    stored: float | None = None
    published: float | None = None


@dataclass(frozen=True)
class SeriesProblem:
    """A (gateway, device) series with acked readings not stored, or a commit-order inversion.

    `inversion` is the first (earlier time, later time, its xid, later time's xid) along reading time where
    the later reading was committed by an older transaction."""

    mac: str
    code: str
    missing: int = 0
    first_missing: datetime | None = None
    inversion: tuple[datetime, datetime, int, int] | None = None


@dataclass
class ReadingsComparison:
    """Acked readings vs stored rows: tallies per gateway, the first EXAMPLES differing rows per gateway
    and kind, and every series with a problem."""

    per_gateway: dict[str, GatewayTally] = field(default_factory=dict)
    examples: list[RowExample] = field(default_factory=list)
    series_problems: list[SeriesProblem] = field(default_factory=list)

    def total(self, attr: str, macs: Iterable[str] | None = None) -> int:
        """Sum of one tally over `macs` (all gateways when None)."""
        keys = self.per_gateway if macs is None else macs
        return sum(getattr(self.per_gateway[m], attr) for m in keys if m in self.per_gateway)

    def first(self, kind: str, macs: Iterable[str] | None = None, n: int = EXAMPLES) -> list[RowExample]:
        """The first `n` differing rows of `kind` over `macs`, by (time, mac, device)."""
        selected = None if macs is None else set(macs)
        rows = [e for e in self.examples if e.kind == kind and (selected is None or e.key[0] in selected)]
        return sorted(rows, key=lambda e: (e.key[2], e.key[0], e.key[1]))[:n]


@dataclass
class Observations:
    """Everything the checkers and the reports need. Plain data, so tests can build it by hand.

    A run leaves the per-row dicts (`produced`, `acked_values`, `expected`, `stored`) empty - they would not
    fit in memory for a month of a fleet - and sets `readings` (compared in the database) and the counts; an
    attack run also fills `stored` for the attacker's end-of-run checks. Built by hand, the dicts are the
    source and `comparison()` derives the same structure from them.
    """

    # Values each meter served to a successful poll (any time: the served instant can trail the message
    # timestamp when a poll is retried), and the readings the broker acknowledged, with their values.
    produced: dict[tuple[str, str], set[float]] = field(default_factory=dict)
    acked_values: dict[RowKey, float] = field(default_factory=dict)
    expected: set[RowKey] = field(default_factory=set)  # acked readings: what the database must hold
    lost_on_power_loss: dict[str, int] = field(default_factory=dict)
    published: dict[str, int] = field(default_factory=dict)
    acked: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    queued: dict[str, int] = field(default_factory=dict)  # still in a gateway's queue after the drain
    drained: bool = True  # every gateway's store-and-forward queue was empty at the end
    failed_polls: dict[tuple[str, str], int] = field(default_factory=dict)
    stored: dict[RowKey, StoredRow] = field(default_factory=dict)
    dead_letters: list[DeadLetterRecord] = field(default_factory=list)
    online_samples: list[OnlineSample] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    commits: list[tuple[float, int]] = field(default_factory=list)  # (wall seconds since start, rows)
    redelivered_rows: int = 0  # rows the consumer found already stored (redeliveries; harmless)
    gateway_codes: dict[str, str] = field(default_factory=dict)  # mac -> code
    malformed_sent: dict[str, int] = field(default_factory=dict)  # reason -> count the harness injected
    accounting_snapshot: dict[str, Any] = field(default_factory=dict)
    readings: ReadingsComparison | None = None  # set by a run (compared in the database)
    distinct_values_served: int | None = None  # set by a run (the `produced` dict is left empty)

    def comparison(self) -> ReadingsComparison:
        """The readings comparison: the run's (from the database) or one derived from the dicts."""
        return self.readings if self.readings is not None else compare_in_memory(self)

    def was_produced(self, key: RowKey, value: float) -> bool:
        """True when the meter of `key` served `value` at some poll."""
        return value in self.produced.get((key[0], key[1]), ())

    def stored_per_gateway(self) -> dict[str, int]:
        """Stored rows per gateway mac."""
        if self.readings is not None:
            return {m: t.stored for m, t in self.readings.per_gateway.items() if t.stored}
        out: dict[str, int] = {}
        for mac, _, _ in self.stored:
            out[mac] = out.get(mac, 0) + 1
        return out

    def stored_count(self) -> int:
        """Rows in `readings` at the end (for the reports' summary)."""
        return sum(self.stored_per_gateway().values())

    def expected_count(self) -> int:
        """Distinct acked readings (for the reports' summary)."""
        return sum(self.expected_per_gateway().values())

    def served_count(self) -> int:
        """Distinct values served per meter, summed (for the reports' summary)."""
        if self.distinct_values_served is not None:
            return self.distinct_values_served
        return sum(len(s) for s in self.produced.values())

    def expected_per_gateway(self) -> dict[str, int]:
        """Acked (expected) readings per gateway mac."""
        if self.readings is not None:
            return {m: t.expected for m, t in self.readings.per_gateway.items() if t.expected}
        out: dict[str, int] = {}
        for mac, _, _ in self.expected:
            out[mac] = out.get(mac, 0) + 1
        return out


def same_value(a: float, b: float) -> bool:
    """The stored value equals the published one (float8 round trip; same tolerance in SQL below)."""
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def compare_in_memory(obs: Observations) -> ReadingsComparison:
    """The comparison over the hand-built dicts of `obs` (small observations only)."""
    out = ReadingsComparison()

    def tally(mac: str) -> GatewayTally:
        return out.per_gateway.setdefault(mac, GatewayTally())

    examples: dict[tuple[str, str], list[RowExample]] = {}

    def example(kind: str, key: RowKey, stored: float | None = None, published: float | None = None) -> None:
        examples.setdefault((kind, key[0]), []).append(RowExample(kind, key, stored, published))

    for key in obs.expected:
        tally(key[0]).expected += 1
    for key, row in obs.stored.items():
        t = tally(key[0])
        t.stored += 1
        acked = obs.acked_values.get(key)
        produced = obs.was_produced(key, row.value)
        if acked is not None and not same_value(row.value, acked):
            t.wrong_value += 1
            example(WRONG_VALUE, key, row.value, acked)
        if acked is not None and not produced:
            t.value_never_served += 1
            example(NEVER_SERVED, key, row.value, acked)
        if acked is None and not produced:
            t.not_produced += 1
            example(NOT_PRODUCED, key, row.value)
        elif key not in obs.expected:
            t.stored_but_not_acked += 1
    series: dict[tuple[str, str], list[tuple[datetime, int]]] = {}
    wanted: dict[tuple[str, str], list[datetime]] = {}
    for (mac, code, at), row in obs.stored.items():
        series.setdefault((mac, code), []).append((at, row.xid))
    for mac, code, at in obs.expected:
        wanted.setdefault((mac, code), []).append(at)
    for mac, code in sorted(set(series) | set(wanted)):
        tally(mac).series += 1
        got = sorted(series.get((mac, code), []))
        times = {at for at, _ in got}
        missing = sorted(set(wanted.get((mac, code), [])) - times)
        tally(mac).missing += len(missing)
        for at in missing:
            example(MISSING, (mac, code, at))
        inversion = next(((t0, t1, x0, x1) for (t0, x0), (t1, x1) in pairwise(got)
                          if x1 < x0), None)
        if missing or inversion:
            out.series_problems.append(SeriesProblem(mac, code, len(missing), missing[0] if missing else None,
                                                     inversion))
    for rows in examples.values():  # keep what a run keeps: the first EXAMPLES per gateway and kind
        out.examples.extend(sorted(rows, key=lambda e: (e.key[2], e.key[1]))[:EXAMPLES])
    return out


# ---------------------------------------------------------------------------------------- in the database

_SAME = "(c.stored = c.published OR abs(c.stored - c.published) <= " \
        "greatest(1e-9 * greatest(abs(c.stored), abs(c.published)), 1e-9))"  # math.isclose(rel 1e-9, abs 1e-9)

# Stored rows that are not clean (acked, same value, served): wrong value, never served, or not acked.
# Joins only: it must stay linear in the readings (see the v_prod comment in compare_in_database).
BAD_ROWS_QUERY = f"""
    SELECT c.*, (c.acked AND NOT {_SAME}) AS wrong FROM (
        SELECT r.device_id, r.time, r.value AS stored, e.value AS published, e.device_id IS NOT NULL AS acked,
               p.device_id IS NOT NULL AS produced
        FROM readings r
        LEFT JOIN v_exp e ON e.device_id = r.device_id AND e.time = r.time
        LEFT JOIN v_prod p ON p.device_id = r.device_id AND p.value = r.value) c
    WHERE NOT (c.acked AND c.produced AND coalesce({_SAME}, false))"""


def compare_in_database(conn: Any, expected: Iterable[tuple[str, str, datetime, float]],
                        produced: Iterable[tuple[str, str, float]]) -> ReadingsComparison:
    """Compare the acked readings with table `readings` inside PostgreSQL; only tallies and examples return.

    `expected`: distinct (mac, device code, time, acked value) rows (the last acked value when a reading was
    acked more than once); `produced`: (mac, device code, value) for every value a meter served. Both are
    streamed into temporary tables with binary COPY (nothing is materialized here), devices resolved
    through the registry (a pair the registry does not know gets a negative id: its readings are missing).
    `conn` is a psycopg connection; the work runs in one transaction whose temporary tables are dropped.
    """
    devices: dict[tuple[str, str], int] = {
        (mac, code): dev for dev, mac, code in conn.execute(
            "SELECT d.id, g.mac, d.code FROM devices d JOIN gateways g ON g.id = d.gateway_id")}

    unknown = 0

    def device(mac: str, code: str) -> int:
        nonlocal unknown
        dev = devices.get((mac, code))
        if dev is None:
            unknown += 1
            dev = devices[(mac, code)] = -unknown
        return dev

    out = ReadingsComparison()
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SET LOCAL work_mem = '64MB'")
        cur.execute("CREATE TEMP TABLE v_exp (device_id int8, time timestamptz, value float8) ON COMMIT DROP")
        cur.execute("CREATE TEMP TABLE v_prod (device_id int8, value float8) ON COMMIT DROP")
        with cur.copy("COPY v_exp FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "timestamptz", "float8"])
            for mac, code, at, value in expected:
                copy.write_row((device(mac, code), at, value))
        with cur.copy("COPY v_prod FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "float8"])
            for mac, code, value in produced:
                copy.write_row((device(mac, code), value))
        cur.execute("CREATE TEMP TABLE v_dev (device_id int8 PRIMARY KEY, mac text, code text) ON COMMIT DROP")
        with cur.copy("COPY v_dev FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "text", "text"])
            for (mac, code), dev in devices.items():
                copy.write_row((dev, mac, code))
        cur.execute("CREATE INDEX ON v_exp (device_id, time)")
        # One row per served (device, value), so that the join below is a plain (hash) join and cannot
        # multiply readings. An EXISTS in the select list ran as a per-row subplan scanning all of v_prod:
        # quadratic, it never finished on the month-of-fleet's 13.8 M readings.
        cur.execute("CREATE TEMP TABLE v_prod_u ON COMMIT DROP AS SELECT DISTINCT device_id, value FROM v_prod")
        cur.execute("DROP TABLE v_prod")
        cur.execute("ALTER TABLE v_prod_u RENAME TO v_prod")
        cur.execute("ANALYZE v_exp; ANALYZE v_prod; ANALYZE v_dev")
        names = {dev: key for key, dev in devices.items()}
        cur.execute(f"CREATE TEMP TABLE v_bad ON COMMIT DROP AS {BAD_ROWS_QUERY}")
        cur.execute("""
            CREATE TEMP TABLE v_missing ON COMMIT DROP AS
            SELECT e.device_id, e.time FROM v_exp e
            WHERE NOT EXISTS (SELECT 1 FROM readings r WHERE r.device_id = e.device_id AND r.time = e.time)""")
        per_device: dict[int, dict[str, Any]] = {}

        def dev_row(dev: int) -> dict[str, Any]:
            return per_device.setdefault(dev, {})

        for dev, n in cur.execute("SELECT device_id, count(*) FROM v_exp GROUP BY 1").fetchall():
            dev_row(dev)["expected"] = n
        for dev, n in cur.execute("SELECT device_id, count(*) FROM readings GROUP BY 1").fetchall():
            dev_row(dev)["stored"] = n
        for dev, wrong, unserved, phantom, unacked in cur.execute("""
                SELECT device_id, count(*) FILTER (WHERE wrong),
                       count(*) FILTER (WHERE acked AND NOT produced),
                       count(*) FILTER (WHERE NOT acked AND NOT produced),
                       count(*) FILTER (WHERE NOT acked AND produced)
                FROM v_bad GROUP BY 1""").fetchall():
            dev_row(dev).update(wrong_value=wrong, value_never_served=unserved, not_produced=phantom,
                                stored_but_not_acked=unacked)
        for dev, n, first in cur.execute("SELECT device_id, count(*), min(time) FROM v_missing GROUP BY 1").fetchall():
            dev_row(dev).update(missing=n, first_missing=first)
        # commit order along reading time: the first row per series whose writer is older than its predecessor's
        for dev, t0, t1, x0, x1 in cur.execute("""
                SELECT DISTINCT ON (device_id) device_id, prev_time, time, prev_xid, xid FROM (
                    SELECT device_id, time, xmin::text::bigint AS xid,
                           lag(time) OVER w AS prev_time, lag(xmin::text::bigint) OVER w AS prev_xid
                    FROM readings WINDOW w AS (PARTITION BY device_id ORDER BY time)) s
                WHERE xid < prev_xid ORDER BY device_id, time""").fetchall():
            dev_row(dev)["inversion"] = (t0, t1, x0, x1)
        for kind, dev, at, stored, published in cur.execute(f"""
                SELECT kind, device_id, time, stored, published FROM (
                    SELECT k.kind, b.device_id, b.time, b.stored, b.published,
                           row_number() OVER (PARTITION BY k.kind, d.mac ORDER BY b.time, d.code) AS n
                    FROM (SELECT device_id, time, stored, published, wrong, acked, produced, false AS missing
                          FROM v_bad
                          UNION ALL SELECT device_id, time, NULL, NULL, false, true, true, true FROM v_missing) b
                    JOIN v_dev d USING (device_id)
                    CROSS JOIN LATERAL (VALUES ('{WRONG_VALUE}', b.wrong),
                                               ('{NEVER_SERVED}', b.acked AND NOT b.produced),
                                               ('{NOT_PRODUCED}', NOT b.acked AND NOT b.produced),
                                               ('{MISSING}', b.missing)) k(kind, hit)
                    WHERE k.hit) x
                WHERE n <= {EXAMPLES}""").fetchall():
            mac, code = names[dev]
            out.examples.append(RowExample(kind, (mac, code, at), stored, published))
    for dev in sorted(per_device, key=lambda d: names[d]):
        row, (mac, code) = per_device[dev], names[dev]
        t = out.per_gateway.setdefault(mac, GatewayTally())
        t.series += 1
        for attr in ("expected", "stored", "missing", "not_produced", "wrong_value", "value_never_served",
                     "stored_but_not_acked"):
            setattr(t, attr, getattr(t, attr) + row.get(attr, 0))
        if row.get("missing") or row.get("inversion"):
            out.series_problems.append(SeriesProblem(mac, code, row.get("missing", 0), row.get("first_missing"),
                                                     row.get("inversion")))
    log.info("readings compared in the database: %d gateways, %d series with problems",
             len(out.per_gateway), len(out.series_problems))
    return out
