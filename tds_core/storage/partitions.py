"""Daily range partitions of `readings` on plain PostgreSQL: names, creation ahead and on demand, dropping."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

_NAME = re.compile(r"^readings_p(\d{8})$")
_CREATE_LOCK = 0x7D5_0002  # serialises partition creation between consumers and maintenance


def partition_name(day: date) -> str:
    """`readings_pYYYYMMDD`: the partition holding [day 00:00 UTC, next day 00:00 UTC)."""
    return f"readings_p{day:%Y%m%d}"


def utc_day(moment: datetime) -> date:
    """The UTC calendar day of an aware datetime."""
    if moment.tzinfo is None:
        raise ValueError(f"time: expected a timezone-aware datetime, got naive {moment.isoformat()}")
    return moment.astimezone(UTC).date()


def existing_partitions(conn: psycopg.Connection) -> dict[date, str]:
    """The daily partitions of `readings` that exist now, by day."""
    rows = conn.execute(
        """
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'readings'::regclass
        """
    ).fetchall()
    found: dict[date, str] = {}
    for (name,) in rows:
        if m := _NAME.match(name):
            found[datetime.strptime(m[1], "%Y%m%d").date()] = name
    return found


def ensure_partitions(conn: psycopg.Connection, days: Iterable[date]) -> list[date]:
    """Create the missing partitions for `days` in a short transaction of their own; return those created.

    Creating a partition locks the parent table, so it is kept out of the writers' data transactions and
    serialised by an advisory lock (two consumers meeting a new day create it once).
    """
    wanted = sorted(set(days))
    if not wanted:
        return []
    created: list[date] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
        have = existing_partitions(conn)
        for day in wanted:
            if day in have:
                continue
            lower = datetime.combine(day, time(), UTC)
            conn.execute(
                sql.SQL("CREATE TABLE {} PARTITION OF readings FOR VALUES FROM ({}) TO ({})").format(
                    sql.Identifier(partition_name(day)),
                    sql.Literal(lower),
                    sql.Literal(lower + timedelta(days=1)),
                )
            )
            created.append(day)
    if created:
        log.info("created readings partitions %s", ", ".join(partition_name(d) for d in created))
    return created


def create_partitions_ahead(conn: psycopg.Connection, days: int, today: date | None = None) -> list[date]:
    """Make sure partitions exist for today and the next `days` days (UTC); return those created."""
    if days < 0:
        raise ValueError(f"days: expected 0 or more, got {days}")
    start = today or datetime.now(UTC).date()
    return ensure_partitions(conn, (start + timedelta(days=i) for i in range(days + 1)))


def drop_partitions_before(conn: psycopg.Connection, cutoff: datetime) -> list[str]:
    """Drop every daily partition whose whole day ends at or before `cutoff`; return the dropped names.

    Whole partitions only: a day that straddles the cutoff stays until it is entirely older.
    """
    dropped: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
        for day, name in sorted(existing_partitions(conn).items()):
            if datetime.combine(day + timedelta(days=1), time(), UTC) <= cutoff:
                conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
                dropped.append(name)
    if dropped:
        log.info("retention dropped %d readings partitions (%s .. %s)", len(dropped), dropped[0], dropped[-1])
    return dropped
