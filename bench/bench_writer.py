"""Batch-writer throughput: readings/s for fresh inserts and 100% redelivery, and commit latency.

    python -m bench.bench_writer --rows 1000000 --batch 5000 [--dsn URL] [--layout partitioned,seed_indexes,flat]

Without --dsn an embedded PostgreSQL is started in a temporary directory. Each layout gets a fresh
database: `partitioned` is the plain backend as migrated (daily partitions, unique (device, time), dirty
log); `seed_indexes` adds the seed's (tenant, time) and (gateway, time) indexes; `flat` is one
unpartitioned table with the unique key only (the writer's TimescaleDB path: no partition check, no dirty
log), the floor to compare against; `timescale` is the TimescaleDB backend as migrated (hypertable, the
seed's three indexes), which needs --dsn of a server with TimescaleDB.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tds_core.storage.embedded import EmbeddedPostgres
from tds_core.storage.migrate import migrate
from tds_core.storage.writer import BatchWriter

LAYOUTS = ("partitioned", "seed_indexes", "flat", "timescale")


@dataclass(frozen=True)
class Run:
    """One measured pass: throughput and per-batch latency (write() call, commit included)."""

    layout: str
    phase: str
    batch: int
    rows: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.rows / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def line(self) -> str:
        return (
            f"{self.layout:<13} {self.phase:<10} batch {self.batch:>6}  {self.rate:>10,.0f} readings/s  "
            f"latency p50 {self.pct(0.50):6.1f} ms  p95 {self.pct(0.95):6.1f} ms  p99 {self.pct(0.99):6.1f} ms"
        )


def _with_dbname(dsn: str, dbname: str) -> str:
    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo(**params)


@contextmanager
def fresh_database(admin_dsn: str, layout: str) -> Iterator[str]:
    """A new database migrated for the plain backend and reshaped for `layout`; dropped afterwards."""
    name = f"tds_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = _with_dbname(admin_dsn, name)
    try:
        migrate(dsn, backend="timescale" if layout == "timescale" else "postgres")
        with psycopg.connect(dsn, autocommit=True) as conn:
            if layout == "seed_indexes":
                conn.execute("CREATE INDEX readings_tenant_time_idx ON readings (tenant_id, time DESC)")
                conn.execute("CREATE INDEX readings_gateway_time_idx ON readings (gateway_id, time DESC)")
            elif layout == "flat":
                conn.execute("DROP TABLE readings")
                conn.execute(
                    """CREATE TABLE readings (time timestamptz NOT NULL, device_id bigint NOT NULL,
                       gateway_id bigint NOT NULL, tenant_id bigint NOT NULL, value double precision NOT NULL)"""
                )
                conn.execute(
                    "CREATE UNIQUE INDEX readings_device_time_idx ON readings (device_id, time DESC)"
                )
        yield dsn
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def seed(
    conn: psycopg.Connection, tenants: int, gateways: int, devices_per_gateway: int
) -> list[tuple[int, int, int]]:
    """Create the registry; return (device_id, gateway_id, tenant_id) for every device."""
    out: list[tuple[int, int, int]] = []
    with conn.transaction():
        for t in range(tenants):
            tid = conn.execute(
                "INSERT INTO tenants (code, name) VALUES (%s, %s) RETURNING id", (f"t{t}", f"T{t}")
            ).fetchone()[0]
            for g in range(gateways // tenants):
                n = t * gateways + g
                mac = ":".join(f"{b:02x}" for b in (0xAA, 0, n >> 16 & 255, n >> 8 & 255, n & 255, 1))
                gid = conn.execute(
                    "INSERT INTO gateways (tenant_id, mac, code) VALUES (%s, %s, %s) RETURNING id",
                    (tid, mac, f"GW-{n}"),
                ).fetchone()[0]
                for d in range(devices_per_gateway):
                    did = conn.execute(
                        """INSERT INTO devices (gateway_id, code, slave_id, register, unit, kind)
                           VALUES (%s, %s, %s, 0, 'kWh', 'energy') RETURNING id""",
                        (gid, f"D{d:02d}", d + 1),
                    ).fetchone()[0]
                    out.append((did, gid, tid))
    return out


def make_batches(devices: list[tuple[int, int, int]], rows: int, batch: int) -> list[tuple[list, dict]]:
    """Rows as the consumer would send them: every device reports once a minute, in time order."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)
    all_rows = []
    step = 0
    while len(all_rows) < rows:
        t = start + timedelta(minutes=step)
        all_rows.extend((t, d, g, tn, 1000.0 + step * 0.01 + d) for d, g, tn in devices)
        step += 1
    del all_rows[rows:]
    batches = []
    for i in range(0, rows, batch):
        chunk = all_rows[i : i + batch]
        seen: dict[int, datetime] = {}
        for r in chunk:
            seen[r[2]] = r[0]
        batches.append((chunk, seen))
    return batches


def measure(dsn: str, layout: str, batches: list[tuple[list, dict]], batch: int) -> list[Run]:
    """Write every batch (fresh), then all again (100% redelivery)."""
    runs = []
    with psycopg.connect(dsn) as conn:
        writer = BatchWriter(
            conn, backend="postgres" if layout in ("partitioned", "seed_indexes") else "timescale"
        )
        for phase in ("fresh", "redelivery"):
            latencies = []
            total = 0
            began = time.perf_counter()
            for rows, seen in batches:
                t0 = time.perf_counter()
                result = writer.write(rows, seen)
                latencies.append(time.perf_counter() - t0)
                total += result.inserted if phase == "fresh" else result.duplicates
            seconds = time.perf_counter() - began
            expected = sum(len(b[0]) for b in batches)
            if total != expected:
                raise AssertionError(f"{layout}/{phase}: expected {expected} rows accounted for, got {total}")
            runs.append(Run(layout, phase, batch, expected, seconds, latencies))
    return runs


def run(admin_dsn: str, rows: int, batch_sizes: list[int], layouts: list[str], out=sys.stdout) -> list[Run]:
    """Every layout × batch size on a fresh database; print one line per pass as it completes."""
    results = []
    for layout in layouts:
        for batch in batch_sizes:
            with fresh_database(admin_dsn, layout) as dsn:
                with psycopg.connect(dsn) as conn:
                    devices = seed(conn, tenants=4, gateways=100, devices_per_gateway=8)
                batches = make_batches(devices, rows, batch)
                for r in measure(dsn, layout, batches, batch):
                    print(r.line(), file=out, flush=True)
                    results.append(r)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_writer", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="readings per pass (default 1,000,000)")
    parser.add_argument("--batch", default="1000,5000,10000", help="batch sizes, comma-separated")
    parser.add_argument(
        "--layout", default=",".join(LAYOUTS[:3]), help=f"comma-separated of {', '.join(LAYOUTS)}"
    )
    parser.add_argument("--dsn", help="admin DSN of a PostgreSQL server (default: embedded, temporary)")
    args = parser.parse_args(argv)
    try:
        sizes = [int(b) for b in args.batch.split(",")]
    except ValueError:
        parser.error(f"--batch: expected comma-separated integers, got {args.batch!r}")
    layouts = args.layout.split(",")
    if bad := [x for x in layouts if x not in LAYOUTS]:
        parser.error(f"--layout: expected some of {', '.join(LAYOUTS)}, got {', '.join(bad)}")
    if args.dsn:
        results = run(args.dsn, args.rows, sizes, layouts)
    else:
        with (
            tempfile.TemporaryDirectory(prefix="tds-bench-", dir="/tmp") as tmp,
            EmbeddedPostgres(f"{tmp}/data", delete_on_stop=True) as server,
        ):
            results = run(server.dsn(), args.rows, sizes, layouts)
    fresh = [r.rate for r in results if r.phase == "fresh"]
    print(f"median fresh rate {statistics.median(fresh):,.0f} readings/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
