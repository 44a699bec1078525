"""The readings comparison done inside PostgreSQL (what a run uses) against the in-memory one the checkers'
synthetic tests use: same tallies, same first rows, same series problems, on a real migrated database whose
rows are committed in a chosen order (so xmin order is real). Each mutation must also make the check fail."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from test_scenario_checks import T0, A, B, good_observations, verdicts

from scenarios.observations import (
    Observations,
    ReadingsComparison,
    StoredRow,
    compare_in_database,
    compare_in_memory,
)
from tds_core.storage.partitions import ensure_partitions, utc_day


def _load(dsn: str, obs: Observations) -> None:
    """Registry for GA/GB (one meter E1 each) and obs.stored as rows, committed in xid order."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        tenant = conn.execute("INSERT INTO tenants (code, name) VALUES ('t', 'T') RETURNING id").fetchone()[0]
        ids = {}
        for mac, code in ((A, "GA"), (B, "GB")):
            gw = conn.execute("INSERT INTO gateways (tenant_id, mac, code) VALUES (%s, %s, %s) RETURNING id",
                              (tenant, mac, code)).fetchone()[0]
            dev = conn.execute("INSERT INTO devices (gateway_id, code, slave_id, register, unit, kind) "
                               "VALUES (%s, 'E1', 1, 0, 'kWh', 'energy') RETURNING id", (gw,)).fetchone()[0]
            ids[mac] = (gw, dev)
        ensure_partitions(conn, {utc_day(at) for _, _, at in obs.stored})
        for (mac, _, at), row in sorted(obs.stored.items(), key=lambda kv: kv[1].xid):
            gw, dev = ids[mac]
            with conn.transaction():  # one transaction per row: its xmin orders the commits like row.xid
                conn.execute("INSERT INTO readings (time, device_id, gateway_id, tenant_id, value) "
                             "VALUES (%s, %s, %s, %s, %s)", (at, dev, gw, tenant, row.value))


def _in_database(dsn: str, obs: Observations) -> ReadingsComparison:
    def expected() -> Iterator:
        for mac, code, at in sorted(obs.expected):
            yield mac, code, at, obs.acked_values[(mac, code, at)]

    def produced() -> Iterator:
        for (mac, code), values in obs.produced.items():
            for value in values:
                yield mac, code, value

    with psycopg.connect(dsn) as conn:
        return compare_in_database(conn, expected(), produced())


def _normal(cmp: ReadingsComparison) -> tuple:
    """Comparable form; xids differ between the database and the synthetic rows, only their order matters."""
    problems = sorted((p.mac, p.code, p.missing, p.first_missing, p.inversion[:2] if p.inversion else None)
                      for p in cmp.series_problems)
    examples = sorted((e.kind, e.key, e.stored, e.published) for e in cmp.examples)
    return dict(sorted(cmp.per_gateway.items())), examples, problems


def _mutations() -> dict[str, Observations]:
    out = {"consistent": good_observations()}
    obs = good_observations()
    del obs.stored[(A, "E1", T0 + timedelta(minutes=5))]
    out["missing"] = obs
    obs = good_observations()
    obs.stored[(B, "E1", T0 + timedelta(hours=9))] = StoredRow(1.0, 2000)
    obs.stored[(B, "E1", T0)] = StoredRow(99.0, 1000)
    obs.stored[(B, "E1", T0 + timedelta(hours=10))] = StoredRow(101.0, 2001)  # served, PUBACK lost
    out["phantom_wrong_unacked"] = obs
    obs = good_observations()
    obs.stored[(A, "E1", T0 + timedelta(minutes=10))] = StoredRow(102.0, 5)
    out["out_of_order"] = obs
    obs = good_observations()
    obs.acked_values[(A, "E1", T0)] = 7.0  # acked with a value its meter never served, stored as acked
    obs.stored[(A, "E1", T0)] = StoredRow(7.0, 1000)
    out["never_served"] = obs
    return out


@pytest.mark.parametrize("case", sorted(_mutations()))
def test_database_comparison_equals_in_memory(case: str, db_dsn: str) -> None:
    obs = _mutations()[case]
    _load(db_dsn, obs)
    in_db = _in_database(db_dsn, obs)
    assert _normal(in_db) == _normal(compare_in_memory(obs))
    # the checkers read the run's comparison: same verdicts and messages as from the dicts
    from_dicts = verdicts(obs)
    run = Observations(gateway_codes=obs.gateway_codes, published=obs.published, acked=obs.acked,
                       dropped=obs.dropped, queued=obs.queued, dead_letters=obs.dead_letters,
                       online_samples=obs.online_samples, latencies_ms=obs.latencies_ms, readings=in_db)
    from_db = verdicts(run)
    assert (run.stored_count(), run.expected_count()) == (obs.stored_count(), obs.expected_count())
    assert run.stored_per_gateway() == obs.stored_per_gateway()
    for kind in ("readings_stored_equal_produced", "no_duplicates", "in_order"):
        if case == "out_of_order" and kind == "in_order":  # the message names the xids: real ones differ
            assert not from_db[kind][0] and "was committed before the earlier" in from_db[kind][1]
            continue
        assert from_db[kind] == from_dicts[kind], kind
    assert from_db["readings_stored_equal_produced"][0] is (case in ("consistent", "out_of_order"))
    assert from_db["in_order"][0] is (case not in ("missing", "out_of_order"))


def test_readings_of_a_device_the_registry_does_not_know_are_missing(db_dsn: str) -> None:
    obs = good_observations()
    _load(db_dsn, obs)
    obs.expected.add((A, "X9", T0))
    obs.acked_values[(A, "X9", T0)] = 5.0
    cmp = _in_database(db_dsn, obs)
    assert cmp.total("missing") == 1 and [e.key for e in cmp.first("missing")] == [(A, "X9", T0)]


def test_bad_rows_query_stays_linear(db_dsn: str) -> None:
    """The comparison's big query is joins only: no per-row subplan over the served values, which made the
    month-of-fleet's verification quadratic (13.8 M x 13.8 M) and never finish."""
    from scenarios.observations import BAD_ROWS_QUERY

    with psycopg.connect(db_dsn) as conn, conn.transaction():
        conn.execute("CREATE TEMP TABLE v_exp (device_id int8, time timestamptz, value float8) ON COMMIT DROP")
        conn.execute("CREATE TEMP TABLE v_prod (device_id int8, value float8) ON COMMIT DROP")
        conn.execute("INSERT INTO v_prod SELECT i % 1600, i FROM generate_series(1, 200000) i")
        conn.execute("ANALYZE v_prod")
        plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN {BAD_ROWS_QUERY}").fetchall())
    assert "SubPlan" not in plan, plan
