"""Writer throughput under pytest-benchmark (small sizes; reports only, asserts correctness not speed).

The full measurement is `python -m bench.bench_writer --rows 1000000 --batch 5000`.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from bench.bench_writer import make_batches, seed
from tds_core.storage.writer import BatchWriter

ROWS, BATCH = 10_000, 5_000


@pytest.fixture()
def bench_setup(db_dsn: str):
    with psycopg.connect(db_dsn) as conn:
        devices = seed(conn, tenants=2, gateways=20, devices_per_gateway=8)
        yield conn, make_batches(devices, ROWS, BATCH)


def test_fresh_inserts(benchmark, bench_setup) -> None:
    conn, batches = bench_setup
    writer = BatchWriter(conn)
    rounds = iter(range(1_000_000))

    def write_all() -> int:
        # Each round shifts the times by whole days so that every round inserts fresh rows.
        shift = next(rounds)
        delta = timedelta(days=shift)
        return sum(
            writer.write([(t + delta, *rest) for (t, *rest) in rows], seen).inserted for rows, seen in batches
        )

    inserted = benchmark.pedantic(write_all, rounds=3, iterations=1)
    assert inserted == ROWS
    benchmark.extra_info["readings_per_round"] = ROWS


def test_full_redelivery(benchmark, bench_setup) -> None:
    conn, batches = bench_setup
    writer = BatchWriter(conn)
    for rows, seen in batches:
        writer.write(rows, seen)

    def write_all() -> int:
        return sum(writer.write(rows, seen).duplicates for rows, seen in batches)

    assert benchmark.pedantic(write_all, rounds=3, iterations=1) == ROWS
    benchmark.extra_info["readings_per_round"] = ROWS


def test_parallel_writers_get_disjoint_gateways_and_every_row_once(db_dsn: str) -> None:
    from bench.bench_writer import measure

    with psycopg.connect(db_dsn) as conn:
        devices = seed(conn, tenants=2, gateways=20, devices_per_gateway=8)
    batches = make_batches(devices, 3_001, 500, writers=2)
    shares = [batches[i::2] for i in range(2)]
    gateways = [{r[2] for rows, _ in share for r in rows} for share in shares]
    assert gateways[0] and gateways[1] and not gateways[0] & gateways[1]
    assert sum(len(rows) for rows, _ in batches) == 3_001
    runs = measure(db_dsn, "partitioned", batches, 500, writers=2)  # raises unless every row is accounted for
    assert [(r.phase, r.rows, r.writers) for r in runs] == [("fresh", 3_001, 2), ("redelivery", 3_001, 2)]
    with psycopg.connect(db_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 3_001
