"""Batch-writer throughput: readings/s for fresh inserts and 100% redelivery, and commit latency.

    python -m bench.bench_writer --rows 1000000 --batch 5000 [--dsn URL] [--layout partitioned,seed_indexes,flat]
                                 [--writers N]

Without --dsn an embedded PostgreSQL is started in a temporary directory. Each layout gets a fresh
database: `partitioned` is the plain backend as migrated (daily partitions, unique (device, time), dirty
log); `seed_indexes` adds the seed's (tenant, time) and (gateway, time) indexes; `flat` is one
unpartitioned table with the unique key only (the writer's TimescaleDB path: no partition check, no dirty
log), the floor to compare against; `timescale` is the TimescaleDB backend as migrated (hypertable, the
seed's three indexes), which needs --dsn of a server with TimescaleDB. With --writers N, N writers (each its
own connection and thread, as N consumer processes would have) write disjoint device sets at once; the rate
is their total.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
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
    writers: int
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
            f"{self.layout:<13} {self.phase:<10} batch {self.batch:>6} x{self.writers}  "
            f"{self.rate:>10,.0f} readings/s  "
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


def make_batches(
    devices: list[tuple[int, int, int]], rows: int, batch: int, writers: int = 1
) -> list[tuple[list, dict]]:
    """Rows as the consumer would send them: every device reports once a minute, in time order.

    With several writers the gateways are split between them and the batches interleaved, so that
    `batches[i::writers]` holds writer i's gateways only (no two writers touch the same rows)."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)
    groups = [[d for d in devices if d[1] % writers == i] for i in range(writers)]
    per_group: list[list[tuple[list, dict]]] = []
    for i, group in enumerate(groups):
        wanted = rows // writers + (1 if i < rows % writers else 0)
        all_rows: list[tuple] = []
        step = 0
        while len(all_rows) < wanted:
            t = start + timedelta(minutes=step)
            all_rows.extend((t, d, g, tn, 1000.0 + step * 0.01 + d) for d, g, tn in group)
            step += 1
        del all_rows[wanted:]
        batches = []
        for j in range(0, wanted, batch):
            chunk = all_rows[j : j + batch]
            seen: dict[int, datetime] = {}
            for r in chunk:
                seen[r[2]] = r[0]
            batches.append((chunk, seen))
        per_group.append(batches)
    longest = max(len(b) for b in per_group)
    interleaved: list[tuple[list, dict]] = []
    for j in range(longest):
        for i in range(writers):
            # A writer with fewer batches gets an empty one, so that batches[i::writers] stays writer i's.
            interleaved.append(per_group[i][j] if j < len(per_group[i]) else ([], {}))
    return interleaved


def _phase(writers: list[BatchWriter], shares: list[list[tuple[list, dict]]], phase: str):
    """All writers write their share at once; return (seconds, rows accounted for, per-batch latencies)."""
    latencies: list[float] = []
    totals = [0] * len(writers)
    errors: list[BaseException] = []
    start = threading.Barrier(len(writers) + 1)

    def work(i: int) -> None:
        start.wait()
        try:
            for rows, seen in shares[i]:
                t0 = time.perf_counter()
                result = writers[i].write(rows, seen)
                latencies.append(time.perf_counter() - t0)
                totals[i] += result.inserted if phase == "fresh" else result.duplicates
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(writers))]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - began
    if errors:
        raise errors[0]
    return seconds, sum(totals), latencies


def measure(dsn: str, layout: str, batches: list[tuple[list, dict]], batch: int, writers: int = 1) -> list[Run]:
    """Write every batch (fresh), then all again (100% redelivery); writer i takes `batches[i::writers]`
    (make_batches gives each writer its own gateways)."""
    backend = "postgres" if layout in ("partitioned", "seed_indexes") else "timescale"
    shares = [batches[i::writers] for i in range(writers)]
    conns = [psycopg.connect(dsn) for _ in range(writers)]
    try:
        bws = [BatchWriter(conn, backend=backend) for conn in conns]
        runs = []
        expected = sum(len(b[0]) for b in batches)
        for phase in ("fresh", "redelivery"):
            seconds, total, latencies = _phase(bws, shares, phase)
            if total != expected:
                raise AssertionError(f"{layout}/{phase}: expected {expected} rows accounted for, got {total}")
            runs.append(Run(layout, phase, batch, writers, expected, seconds, latencies))
        return runs
    finally:
        for conn in conns:
            conn.close()


def run(
    admin_dsn: str, rows: int, batch_sizes: list[int], layouts: list[str], out=sys.stdout, writers: int = 1
) -> list[Run]:
    """Every layout × batch size on a fresh database; print one line per pass as it completes."""
    results = []
    for layout in layouts:
        for batch in batch_sizes:
            with fresh_database(admin_dsn, layout) as dsn:
                with psycopg.connect(dsn) as conn:
                    devices = seed(conn, tenants=4, gateways=100, devices_per_gateway=8)
                batches = make_batches(devices, rows, batch, writers)
                for r in measure(dsn, layout, batches, batch, writers):
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
    parser.add_argument("--writers", type=int, default=1, help="parallel writers on disjoint devices (default 1)")
    args = parser.parse_args(argv)
    try:
        sizes = [int(b) for b in args.batch.split(",")]
    except ValueError:
        parser.error(f"--batch: expected comma-separated integers, got {args.batch!r}")
    if not 1 <= args.writers <= 16:
        parser.error(f"--writers: expected 1..16, got {args.writers}")
    layouts = args.layout.split(",")
    if bad := [x for x in layouts if x not in LAYOUTS]:
        parser.error(f"--layout: expected some of {', '.join(LAYOUTS)}, got {', '.join(bad)}")
    if args.dsn:
        results = run(args.dsn, args.rows, sizes, layouts, writers=args.writers)
    else:
        with (
            tempfile.TemporaryDirectory(prefix="tds-bench-", dir="/tmp") as tmp,
            EmbeddedPostgres(f"{tmp}/data", delete_on_stop=True) as server,
        ):
            results = run(server.dsn(), args.rows, sizes, layouts, writers=args.writers)
    fresh = [r.rate for r in results if r.phase == "fresh"]
    print(f"median fresh rate {statistics.median(fresh):,.0f} readings/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
