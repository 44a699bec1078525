"""Rollups (plain: dirty-bucket refresher; TimescaleDB: continuous aggregates) read through queries.py:
exact after refresh, including redelivered and late rows, and scoped to one tenant."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

import pytest
from storage_testkit import Store, count

from tds_core.storage.queries import gateway_health, hourly_timeline, monthly_consumption
from tds_core.storage.rollups import refresh_rollups
from tds_core.storage.writer import BatchWriter

_this_month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
# Four days straddling the boundary between the two previous months: all in the past, two months.
START = (_this_month - timedelta(days=20)).replace(day=1) - timedelta(days=2)
PERIOD = (date(2000, 1, 1), _this_month.date())


def make_rows(store: Store, minutes: range) -> list[tuple]:
    reg = store.reg
    rows = []
    for m in minutes:
        t = START + timedelta(minutes=m)
        rows.append((t, reg.devices["A-E1"], reg.gw_a, reg.tenant_a, 1000.0 + m / 8))  # counter
        rows.append((t, reg.devices["A-T1"], reg.gw_a, reg.tenant_a, 20.0 + (m % 7) - 3))
        rows.append((t, reg.devices["B-E1"], reg.gw_b, reg.tenant_b, 5.0 + m / 16))
    return rows


def expected(rows: list[tuple], tenant: int):
    """Monthly and hourly statistics computed in Python from the unique (device, time) rows."""
    unique = {}
    for r in rows:
        unique.setdefault((r[1], r[0]), r)
    monthly, hourly = defaultdict(list), defaultdict(list)
    for (device, t), r in unique.items():
        if r[3] != tenant:
            continue
        monthly[(t.date().replace(day=1), device)].append(r)
        hourly[(t.replace(minute=0), device)].append(r)
    return monthly, hourly


def check(store: Store, rows: list[tuple], tenant: int) -> None:
    monthly, hourly = expected(rows, tenant)
    got = monthly_consumption(store.conn, tenant, *PERIOD)
    store.conn.commit()
    assert {(m.month, m.device_id) for m in got} == set(monthly)
    for m in got:
        rs = monthly[(m.month, m.device_id)]
        values = [r[4] for r in rs]
        assert m.count == len(rs)
        assert m.total == pytest.approx(sum(values))
        assert m.avg == pytest.approx(sum(values) / len(values))
        assert (m.min, m.max) == (min(values), max(values))
        assert m.days_with_readings == len({r[0].date() for r in rs})
        if m.unit == "kWh":
            assert m.consumption == pytest.approx(max(values) - min(values))
        else:
            assert m.consumption is None
    points = hourly_timeline(store.conn, tenant, START - timedelta(days=1), START + timedelta(days=10))
    store.conn.commit()
    assert {(p.hour, p.device_id) for p in points} == set(hourly)
    for p in points:
        values = [r[4] for r in hourly[(p.hour, p.device_id)]]
        assert (p.count, p.min, p.max) == (len(values), min(values), max(values))
        assert p.sum == pytest.approx(sum(values))
        assert p.avg == pytest.approx(sum(values) / len(values))


def test_rollups_are_exact_after_refresh_with_redelivered_and_late_rows(store: Store) -> None:
    writer = BatchWriter(store.conn)
    first = make_rows(store, range(0, 4 * 1440, 20))  # every 20 minutes for 4 days
    writer.write(first)
    refresh_rollups(store.conn, store.backend)
    check(store, first, store.reg.tenant_a)
    check(store, first, store.reg.tenant_b)

    # Redelivery of everything plus late rows into hours (and a month) that were already aggregated,
    # carrying values outside the old min/max.
    late = make_rows(store, range(5, 4 * 1440, 240))
    late = [(t, d, g, tn, v + 500.0) for (t, d, g, tn, v) in late]
    assert writer.write(first + late).inserted == len(late)
    refresh_rollups(store.conn, store.backend)
    check(store, first + late, store.reg.tenant_a)
    check(store, first + late, store.reg.tenant_b)


def test_nothing_is_visible_before_a_refresh_and_refresh_is_idempotent(store: Store) -> None:
    BatchWriter(store.conn).write(make_rows(store, range(0, 180, 10)))
    assert monthly_consumption(store.conn, store.reg.tenant_a, *PERIOD) == []
    store.conn.commit()
    refresh_rollups(store.conn, store.backend)
    once = monthly_consumption(store.conn, store.reg.tenant_a, *PERIOD)
    store.conn.commit()
    refresh_rollups(store.conn, store.backend)
    assert monthly_consumption(store.conn, store.reg.tenant_a, *PERIOD) == once
    if store.backend == "postgres":
        assert count(store.conn, "SELECT count(*) FROM readings_batch_log") == 0


def test_tenants_never_see_each_other(store: Store) -> None:
    BatchWriter(store.conn).write(make_rows(store, range(0, 600, 10)))
    refresh_rollups(store.conn, store.backend)
    reg = store.reg
    a_devices = {reg.devices["A-E1"], reg.devices["A-T1"]}
    months_a = monthly_consumption(store.conn, reg.tenant_a, *PERIOD)
    months_b = monthly_consumption(store.conn, reg.tenant_b, *PERIOD)
    assert {m.device_id for m in months_a} == a_devices
    assert {m.device_id for m in months_b} == {reg.devices["B-E1"]}
    assert {m.gateway_code for m in months_b} == {"GW-B"}
    window = (START, START + timedelta(days=1))
    # Asking for another tenant's device by id gives nothing.
    assert hourly_timeline(store.conn, reg.tenant_b, *window, device_ids=sorted(a_devices)) == []
    only_t1 = hourly_timeline(store.conn, reg.tenant_a, *window, device_ids=[reg.devices["A-T1"]])
    assert only_t1 and {p.device_code for p in only_t1} == {"T1"}
    assert monthly_consumption(store.conn, 9999, *PERIOD) == []
    health = gateway_health(store.conn, reg.tenant_b)
    assert [(h.code, h.mac) for h in health] == [("GW-B", "aa:bb:cc:dd:ee:02")]
    store.conn.commit()


def test_query_arguments_are_checked(plain_store: Store) -> None:
    conn, tenant = plain_store.conn, plain_store.reg.tenant_a
    with pytest.raises(ValueError, match="end: expected a date after start"):
        monthly_consumption(conn, tenant, date(2026, 3, 1), date(2026, 1, 1))
    with pytest.raises(ValueError, match="start: expected a timezone-aware"):
        hourly_timeline(conn, tenant, datetime(2026, 1, 1), datetime(2026, 1, 2, tzinfo=UTC))



def test_a_refresh_from_a_later_start_covers_its_month_and_keeps_earlier_late_rows(store: Store) -> None:
    """A caller that refreshes from the middle of a month (a check that only cares about recent data) gets
    that month's monthly rows brought up to date; on plain PostgreSQL, late rows from before that start
    keep their place in the rollups (the log is folded whole; only the retention edge discards)."""
    writer = BatchWriter(store.conn)
    rows = make_rows(store, range(0, 4 * 1440, 60))  # START .. START + 4 days; a month begins at START + 2 days
    writer.write(rows)
    refresh_rollups(store.conn, store.backend)
    start = START + timedelta(days=3)  # one day into the second month
    late = [(start + timedelta(hours=h, minutes=30), d, g, tn, v + 900.0)
            for h in range(3) for (_, d, g, tn, v) in rows[:3]]
    if store.backend == "postgres":  # also before `start`, still in the second month
        late += [(START + timedelta(days=2, hours=1, minutes=30), d, g, tn, 1.0) for (_, d, g, tn, _) in rows[:3]]
    assert writer.write(late).inserted == len(late)
    refresh_rollups(store.conn, store.backend, start=start)
    check(store, rows + late, store.reg.tenant_a)
    check(store, rows + late, store.reg.tenant_b)


def test_late_rows_older_than_the_refresh_policies_reach_the_rollups_in_the_next_maintenance_round(
        store: Store) -> None:
    """A gateway that replays a buffer of ten days: plain folds its log; TimescaleDB's round refreshes the
    invalidated completed hours over the whole retained period (its policies only look back seven days)."""
    from tds_core.storage.maintenance import maintain

    now = datetime.now(UTC)
    reg = store.reg
    hour = (now - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    writer = BatchWriter(store.conn)
    recent = [(hour + timedelta(minutes=m), reg.devices["A-E1"], reg.gw_a, reg.tenant_a, float(m)) for m in range(60)]
    writer.write(recent)
    maintain(store.conn, now=now)  # everything up to the last complete hour is materialised

    old_hour = hour - timedelta(days=10)
    late = [(old_hour + timedelta(minutes=m), reg.devices["A-E1"], reg.gw_a, reg.tenant_a, 2.0) for m in range(30)]
    assert writer.write(late).inserted == 30

    def late_points() -> list:
        points = hourly_timeline(store.conn, reg.tenant_a, old_hour, old_hour + timedelta(hours=1))
        store.conn.commit()
        return points

    assert late_points() == []  # neither backend shows them before a round
    maintain(store.conn, now=now)
    (point,) = late_points()
    assert (point.count, point.sum) == (30, 60.0)
