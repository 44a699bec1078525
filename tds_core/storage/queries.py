"""The read side: one interface over both backends, always scoped to one tenant.

Both backends expose `readings_hourly` and `readings_monthly` with the same columns (rollup tables on
plain PostgreSQL, continuous aggregates on TimescaleDB), so the SQL here is the same for both. Every query
filters on the rollup's own tenant_id: a tenant never sees another tenant's rows, even through a device or
gateway id it guessed. Figures are as of the last refresh (tds db maintain / the aggregate policies).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

import psycopg
from psycopg.rows import class_row

# Cumulative counters (energy and volume registers). For them the month's consumption is max - min: the
# counter's advance. Summing a cumulative counter's samples (the seed's SUM(valor)) adds up the running
# totals and means nothing; it is kept only as the seed's statistic. Caveat: a counter reset (meter
# replaced, register overflow) inside a month makes max - min wrong for that month.
COUNTER_UNITS = frozenset({"kWh", "Wh", "MWh", "kvarh", "m³", "L"})


@dataclass(frozen=True)
class MonthlyConsumption:
    """One device's month (UTC). consumption = max - min for counter units, else None."""

    month: date
    device_id: int
    device_code: str
    gateway_code: str
    unit: str
    total: float
    avg: float
    min: float
    max: float
    count: int
    days_with_readings: int
    consumption: float | None


@dataclass(frozen=True)
class HourlyPoint:
    """One device's hour (UTC bucket start)."""

    hour: datetime
    device_id: int
    device_code: str
    avg: float
    min: float
    max: float
    count: int
    sum: float


@dataclass(frozen=True)
class GatewayHealth:
    """A gateway's liveness as the consumer last recorded it."""

    gateway_id: int
    mac: str
    code: str
    status: str
    online: bool
    last_seen: datetime | None


def _month_start(day: date) -> datetime:
    return datetime(day.year, day.month, 1, tzinfo=UTC)


def monthly_consumption(
    conn: psycopg.Connection, tenant_id: int, start: date, end: date
) -> list[MonthlyConsumption]:
    """Per device and month (UTC) for the months that overlap [start, end), ordered by month and device code.

    E.g. start 2026-01-15, end 2026-03-01 gives January and February.
    """
    if end <= start:
        raise ValueError(f"end: expected a date after start ({start}), got {end}")
    upper = datetime(end.year, end.month, end.day, tzinfo=UTC)
    counters = list(COUNTER_UNITS)
    with conn.cursor(row_factory=class_row(MonthlyConsumption)) as cur:
        cur.execute(
            """
            SELECT (m.bucket AT TIME ZONE 'UTC')::date AS month, m.device_id, d.code AS device_code,
                   g.code AS gateway_code, d.unit,
                   m.sum_value AS total, m.avg_value AS avg, m.min_value AS min, m.max_value AS max,
                   m.reading_count AS count, m.days_with_readings,
                   CASE WHEN d.unit = ANY(%(counters)s) THEN m.max_value - m.min_value END AS consumption
            FROM readings_monthly m
            JOIN devices d ON d.id = m.device_id
            JOIN gateways g ON g.id = m.gateway_id
            WHERE m.tenant_id = %(tenant)s AND m.bucket >= %(start)s AND m.bucket < %(end)s
            ORDER BY m.bucket, d.code, g.code
            """,
            {"tenant": tenant_id, "start": _month_start(start), "end": upper, "counters": counters},
        )
        return cur.fetchall()


def hourly_timeline(
    conn: psycopg.Connection,
    tenant_id: int,
    start: datetime,
    end: datetime,
    device_ids: Sequence[int] | None = None,
) -> list[HourlyPoint]:
    """Hourly statistics per device for hour buckets starting in [start, end), ordered by hour and device."""
    for name, value in (("start", start), ("end", end)):
        if value.tzinfo is None:
            raise ValueError(f"{name}: expected a timezone-aware datetime, got naive {value.isoformat()}")
    if end <= start:
        raise ValueError(f"end: expected a time after start ({start.isoformat()}), got {end.isoformat()}")
    with conn.cursor(row_factory=class_row(HourlyPoint)) as cur:
        cur.execute(
            """
            SELECT h.bucket AS hour, h.device_id, d.code AS device_code,
                   h.avg_value AS avg, h.min_value AS min, h.max_value AS max,
                   h.reading_count AS count, h.sum_value AS sum
            FROM readings_hourly h
            JOIN devices d ON d.id = h.device_id
            WHERE h.tenant_id = %(tenant)s AND h.bucket >= %(start)s AND h.bucket < %(end)s
              AND (%(devices)s::bigint[] IS NULL OR h.device_id = ANY(%(devices)s::bigint[]))
            ORDER BY h.bucket, d.code, h.device_id
            """,
            {
                "tenant": tenant_id,
                "start": start,
                "end": end,
                "devices": None if device_ids is None else list(device_ids),
            },
        )
        return cur.fetchall()


def gateway_health(conn: psycopg.Connection, tenant_id: int) -> list[GatewayHealth]:
    """Every gateway of the tenant with its online flag and last_seen, ordered by code."""
    with conn.cursor(row_factory=class_row(GatewayHealth)) as cur:
        cur.execute(
            """
            SELECT id AS gateway_id, mac, code, status, online, last_seen
            FROM gateways WHERE tenant_id = %s ORDER BY code
            """,
            (tenant_id,),
        )
        return cur.fetchall()
