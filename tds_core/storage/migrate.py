"""Versioned SQL migrations.

Files in `migrations/` are named `NNNN_name.sql` (every backend), or `NNNN_name.postgres.sql` and
`NNNN_name.timescale.sql` (one per backend, same version). A file whose first line is
`-- tds:no-transaction` runs statement by statement outside a transaction (TimescaleDB refuses to create
continuous aggregates inside one); every other file runs in one transaction with its bookkeeping row.
The backend chosen at the first migration is recorded and never silently switched.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from tds_core.storage.capabilities import Backend, detect

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+?)(?:\.(postgres|timescale))?\.sql$")
_LOCK_KEY = 0x7D5_0001  # advisory lock: concurrent `tds db migrate` runs wait for each other
NO_TRANSACTION = "-- tds:no-transaction"


class MigrationError(RuntimeError):
    """A migration could not be applied, or the database's history disagrees with the files."""


@dataclass(frozen=True)
class Migration:
    """One SQL file to apply."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    @property
    def transactional(self) -> bool:
        return not self.sql.startswith(NO_TRANSACTION)


def discover(backend: Backend) -> list[Migration]:
    """The migrations for `backend`, in version order."""
    found: dict[int, Migration] = {}
    for entry in resources.files("tds_core.storage").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if not match:
            continue
        version, name, only = int(match[1]), match[2], match[3]
        if only is not None and only != backend:
            continue
        if version in found:
            raise MigrationError(f"two migrations with version {version:04d} for backend {backend}")
        found[version] = Migration(version, name, entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def split_statements(sql: str) -> list[str]:
    """Split SQL on top-level semicolons, respecting quotes, dollar quotes and comments."""
    statements: list[str] = []
    buf: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            buf.append(sql[i:end])
            i = end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = n if end < 0 else end + 2
            buf.append(sql[i:end])
            i = end
        elif ch == "'":
            end = i + 1
            while end < n:
                if sql[end] == "'" and not sql.startswith("''", end):
                    break
                end += 2 if sql.startswith("''", end) else 1
            buf.append(sql[i : end + 1])
            i = end + 1
        elif ch == "$" and (m := re.match(r"\$[A-Za-z_]*\$", sql[i:])):
            tag = m.group(0)
            end = sql.find(tag, i + len(tag))
            end = n if end < 0 else end + len(tag)
            buf.append(sql[i:end])
            i = end
        elif ch == ";":
            statements.append("".join(buf).strip())
            buf = []
            i += 1
        else:
            buf.append(ch)
            i += 1
    statements.append("".join(buf).strip())
    return [s for s in statements if s and not all(line.strip().startswith("--") for line in s.splitlines())]


def _ensure_bookkeeping(conn: psycopg.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS tds_schema_migrations (
            version    integer PRIMARY KEY,
            name       text NOT NULL,
            backend    text NOT NULL,
            checksum   text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def current_backend(conn: psycopg.Connection) -> Backend | None:
    """The backend recorded by earlier migrations, or None on a fresh database."""
    exists = conn.execute("SELECT to_regclass('tds_schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute("SELECT backend FROM tds_schema_migrations ORDER BY version LIMIT 1").fetchone()
    return row[0] if row else None


def migrate(conninfo: str, backend: str = "auto") -> list[Migration]:
    """Apply every pending migration; return those applied now. Safe to run concurrently and repeatedly."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            return _migrate_locked(conn, backend)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def _migrate_locked(conn: psycopg.Connection, wanted: str) -> list[Migration]:
    recorded = current_backend(conn)
    chosen = detect(conn).choose_backend(wanted if recorded is None else recorded)
    if recorded is not None and wanted not in ("auto", recorded):
        raise MigrationError(f"database was migrated for backend {recorded!r}; refusing to switch to {wanted!r}")
    _ensure_bookkeeping(conn)
    applied = {
        row[0]: row[1] for row in conn.execute("SELECT version, checksum FROM tds_schema_migrations").fetchall()
    }
    done: list[Migration] = []
    for migration in discover(chosen):
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                log.warning(
                    "migration %04d_%s changed after it was applied (checksum %s, file %s)",
                    migration.version, migration.name, applied[migration.version], migration.checksum,
                )
            continue
        log.info("applying migration %04d_%s (%s)", migration.version, migration.name, chosen)
        _apply(conn, migration, chosen)
        done.append(migration)
    return done


def _apply(conn: psycopg.Connection, migration: Migration, backend: Backend) -> None:
    record = (
        "INSERT INTO tds_schema_migrations (version, name, backend, checksum) VALUES (%s, %s, %s, %s)",
        (migration.version, migration.name, backend, migration.checksum),
    )
    try:
        if migration.transactional:
            with conn.transaction():
                conn.execute(migration.sql)  # type: ignore[arg-type]  # trusted file content
                conn.execute(*record)
        else:
            for statement in split_statements(migration.sql):
                conn.execute(statement)  # type: ignore[arg-type]
            conn.execute(*record)
    except psycopg.Error as exc:
        raise MigrationError(f"migration {migration.version:04d}_{migration.name} failed: {exc}") from exc
