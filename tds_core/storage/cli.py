"""`tds db migrate | status | maintain [--rebuild START END]`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

import psycopg
from psycopg import sql

from tds_core.storage.config import get_settings, set_retention
from tds_core.storage.durations import format_duration, parse_duration
from tds_core.storage.maintenance import apply_retention, maintain
from tds_core.storage.migrate import MigrationError, current_backend, migrate
from tds_core.storage.partitions import create_partitions_ahead, existing_partitions
from tds_core.storage.rollups import request_rebuild

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `db` command and its subcommands."""
    db = subparsers.add_parser("db", help="database: migrations, status, maintenance")
    sub = db.add_subparsers(dest="db_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("migrate", help="apply pending migrations (and set the retention)")
    _dsn_arg(p)
    p.add_argument(
        "--backend",
        choices=("auto", "postgres", "timescale"),
        default="auto",
        help="storage backend on a fresh database (auto: TimescaleDB when the server has it)",
    )
    p.add_argument("--retention", help="keep raw readings this long, e.g. 730d, 2y (default 730d)")
    p.set_defaults(handler=_guarded(_migrate))

    p = sub.add_parser("status", help="backend, migrations, partitions, row counts")
    _dsn_arg(p)
    p.set_defaults(handler=_guarded(_status))

    p = sub.add_parser("maintain", help="create partitions ahead, refresh rollups, apply retention")
    _dsn_arg(p)
    p.add_argument(
        "--rebuild",
        nargs=2,
        metavar=("START", "END"),
        type=_utc_time,
        help="first recompute the rollups of [START, END) from the raw rows (plain PostgreSQL; a repair after "
        "raw rows were changed by hand), e.g. --rebuild 2026-11-01 2026-12-01",
    )
    p.set_defaults(handler=_guarded(_maintain))


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Database failures end the command with one line on stderr and exit code 1, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (MigrationError, psycopg.Error) as exc:
            print(f"tds db {args.db_command}: {exc}".rstrip(), file=sys.stderr)
            return 1

    return run


def _dsn_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        "--dsn",
        dest="dsn",
        help="database URL (default: $TDS_DATABASE_URL, else the embedded server)",
    )


def _dsn(args: argparse.Namespace) -> str:
    from tds_core.settings import database_url  # starts the embedded server only when it is the database

    return database_url(args.dsn)


def _migrate(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    keep = parse_duration(args.retention, name="--retention") if args.retention else None
    dsn = _dsn(args)
    applied = migrate(dsn, backend=args.backend)
    with psycopg.connect(dsn) as conn:
        backend = current_backend(conn)
        conn.commit()
        assert backend is not None
        for m in applied:
            print(f"applied {m.version:04d}_{m.name} ({backend})", file=out)
        if not applied:
            print(f"up to date ({backend})", file=out)
        if backend == "postgres":
            create_partitions_ahead(conn, get_settings(conn).partitions_ahead)
        if keep is not None:
            set_retention(conn, keep)
            dropped = apply_retention(conn, backend, keep)
            print(
                f"retention {format_duration(keep)}: dropped {len(dropped)} old partitions/chunks", file=out
            )
    return 0


def _status(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    with psycopg.connect(_dsn(args)) as conn:
        backend = current_backend(conn)
        if backend is None:
            print("not migrated (run `tds db migrate`)", file=out)
            return 1
        print(f"backend: {backend}", file=out)
        for version, name, applied_at in conn.execute(
            "SELECT version, name, applied_at FROM tds_schema_migrations ORDER BY version"
        ):
            print(f"migration {version:04d}_{name} applied {applied_at:%Y-%m-%d %H:%M:%S%z}", file=out)
        settings = get_settings(conn)
        print(
            f"retention: {format_duration(settings.retention)}; partitions ahead: {settings.partitions_ahead}",
            file=out,
        )
        if backend == "postgres":
            days = sorted(existing_partitions(conn))
            span = f" ({days[0]} .. {days[-1]})" if days else ""
            print(f"partitions: {len(days)}{span}", file=out)
            approx = conn.execute(
                """SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint FROM pg_inherits i
                   JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'readings'::regclass"""
            ).fetchone()
            waiting = conn.execute(
                """SELECT (SELECT count(*) FROM readings_dirty)
                          + (SELECT coalesce(sum(cardinality(device_id)), 0) FROM readings_batch_log),
                          (SELECT count(*) FROM readings_rebuild)"""
            ).fetchone()
            dirty, rebuilds = waiting if waiting else (0, 0)
            print(f"rollup log entries waiting for refresh: {dirty}; hours queued for a rebuild: {rebuilds}",
                  file=out)
        else:
            chunks = conn.execute("SELECT count(*) FROM show_chunks('readings')").fetchone()
            print(f"chunks: {chunks[0] if chunks else 0}", file=out)
            approx = conn.execute("SELECT approximate_row_count('readings')").fetchone()
        print(f"readings: ≈{approx[0] if approx else 0} (planner estimate)", file=out)
        for table in (
            "tenants",
            "gateways",
            "devices",
            "dead_letters",
            "readings_hourly",
            "readings_monthly",
        ):
            n = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
            print(f"{table}: {n[0] if n else 0}", file=out)
    return 0


def _utc_time(text: str) -> datetime:
    """An ISO 8601 date or date-time; without a zone it is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 date or date-time, got {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _maintain(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    with psycopg.connect(_dsn(args)) as conn:
        if args.rebuild:
            start, end = args.rebuild
            if end <= start:
                print(f"tds db maintain: --rebuild: END {end.isoformat()} is not after START", file=sys.stderr)
                return 2
            backend = current_backend(conn)
            conn.commit()
            if backend != "postgres":
                print("tds db maintain: --rebuild: TimescaleDB refreshes its aggregates from the raw rows "
                      "already (CALL refresh_continuous_aggregate)", file=sys.stderr)
                return 2
            hours = request_rebuild(conn, start, end)
            print(f"{hours} hourly buckets queued for a rebuild from the raw rows", file=out)
        report = maintain(conn)
    refreshed = (f"{report.refresh.hours} hourly buckets refreshed" if report.backend == "postgres"
                 else "aggregates refreshed up to the last complete hour")
    print(
        f"{report.backend}: {len(report.partitions_created)} partitions created, "
        f"{refreshed}, {len(report.dropped)} old partitions/chunks dropped",
        file=out,
    )
    return 0
