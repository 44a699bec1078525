"""Periodic storage upkeep: partitions ahead, rollup refresh, retention. `tds db maintain` runs maintain()."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql

from tds_core.storage.capabilities import Backend
from tds_core.storage.config import get_settings
from tds_core.storage.migrate import current_backend
from tds_core.storage.partitions import create_partitions_ahead, drop_partitions_before
from tds_core.storage.rollups import RefreshResult, refresh_rollups

log = logging.getLogger(__name__)

__all__ = ["MaintenanceReport", "apply_retention", "create_partitions_ahead", "maintain", "refresh_rollups"]

# Continuous-aggregate refresh windows (TimescaleDB): these defaults, shortened to fit inside retention.
_HOURLY_WINDOW = timedelta(days=7)
_MONTHLY_WINDOW = timedelta(days=92)  # ≈ the seed's '3 months'
_MONTHLY_MIN_WINDOW = timedelta(days=62)  # TimescaleDB wants at least two monthly buckets


@dataclass(frozen=True)
class MaintenanceReport:
    """What one maintenance run did."""

    backend: Backend
    partitions_created: list[date] = field(default_factory=list)
    refresh: RefreshResult | None = None
    dropped: list[str] = field(default_factory=list)


def apply_retention(conn: psycopg.Connection, backend: Backend, keep: timedelta) -> list[str]:
    """Drop raw readings older than `keep` now; return what was dropped (partition or chunk names).

    Plain PostgreSQL: whole daily partitions entirely older than now - keep. TimescaleDB: the retention
    policy is set to `keep` (and the aggregates' refresh windows shortened to stay inside it), and chunks
    older than `keep` are dropped at once. Rollups / aggregates keep the buckets of dropped raw rows.
    """
    if keep <= timedelta(0):
        raise ValueError(f"retention: expected a positive duration, got {keep}")
    if backend == "postgres":
        return drop_partitions_before(conn, datetime.now(UTC) - keep)
    margin = timedelta(days=1)
    monthly = min(_MONTHLY_WINDOW, keep - margin)
    if monthly < _MONTHLY_MIN_WINDOW:
        raise ValueError(
            f"retention: TimescaleDB's monthly aggregate needs a two-month refresh window inside the retention "
            f"period; expected at least {(_MONTHLY_MIN_WINDOW + margin).days}d, got {keep}"
        )
    hourly = min(_HOURLY_WINDOW, keep - margin)
    with conn.transaction():
        if _retention_policy_is(conn, keep):
            rows = conn.execute("SELECT drop_chunks('readings', older_than => %s)", (keep,)).fetchall()
            return [r[0] for r in rows]
        conn.execute("SELECT remove_retention_policy('readings', if_exists => true)")
        conn.execute("SELECT add_retention_policy('readings', drop_after => %s)", (keep,))
        for view, window, schedule in (
            ("readings_hourly", hourly, timedelta(minutes=30)),
            ("readings_monthly", monthly, timedelta(hours=1)),
        ):
            conn.execute("SELECT remove_continuous_aggregate_policy(%s, if_exists => true)", (view,))
            conn.execute(
                "SELECT add_continuous_aggregate_policy(%s, start_offset => %s, end_offset => %s,"
                " schedule_interval => %s)",
                (view, window, timedelta(hours=1), schedule),
            )
        rows = conn.execute("SELECT drop_chunks('readings', older_than => %s)", (keep,)).fetchall()
    dropped = [r[0] for r in rows]
    if dropped:
        log.info("retention dropped %d chunks", len(dropped))
    return dropped


def _retention_policy_is(conn: psycopg.Connection, keep: timedelta) -> bool:
    """True when the readings retention policy already drops after `keep` (policies need no re-creation)."""
    row = conn.execute(
        """
        SELECT (config->>'drop_after')::interval = %s::interval FROM timescaledb_information.jobs
        WHERE proc_name = 'policy_retention' AND hypertable_name = 'readings'
        """,
        (keep,),
    ).fetchone()
    return bool(row and row[0])


def maintain(conn: psycopg.Connection, now: datetime | None = None) -> MaintenanceReport:
    """Create partitions ahead and fold the rollup log (plain PostgreSQL), apply the stored retention.
    Commits as it goes.

    On TimescaleDB the round refreshes the aggregates up to the last complete hour, over the whole
    retained period: cheap unless late rows invalidated some buckets (it reaches late rows older than the
    refresh policies' windows), and each hour is aggregated from raw rows once. Refreshing up to now
    would recompute the current hour from raw rows every round. The monthly aggregate is real time on
    top of the hourly one (migration 0007)."""
    backend = current_backend(conn)
    if backend is None:
        raise RuntimeError("database is not migrated: run `tds db migrate` first")
    settings = get_settings(conn)
    conn.commit()
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    created: list[date] = []
    if backend == "postgres":
        created = create_partitions_ahead(conn, settings.partitions_ahead, today=moment.date())
        refresh = refresh_rollups(conn, backend)
        # Unconditionally: the consumer also folds the log between rounds (Consumer's rollup_interval).
        for log_table in ("readings_batch_log", "readings_dirty"):
            _vacuum(conn, log_table)
    else:
        refresh = refresh_rollups(conn, backend, end=moment.replace(minute=0, second=0, microsecond=0))
    dropped = apply_retention(conn, backend, settings.retention)
    return MaintenanceReport(backend, created, refresh, dropped)


def _vacuum(conn: psycopg.Connection, table: str) -> None:
    """VACUUM `table` now. Refreshes delete every log row they consume (a row per batch, about a hundred a
    second at high rates, each with its arrays in the TOAST table); the next refresh would scan those dead
    rows again if autovacuum has not come by yet."""
    autocommit = conn.autocommit
    conn.autocommit = True  # VACUUM refuses to run inside a transaction block
    try:
        # No truncation: it would take an ACCESS EXCLUSIVE lock on a table the writers append to all the time.
        conn.execute(sql.SQL("VACUUM (TRUNCATE false) {}").format(sql.Identifier(table)))
    finally:
        conn.autocommit = autocommit
