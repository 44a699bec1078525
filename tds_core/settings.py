"""Where the parts are: one place that turns flags and environment into URLs.

Every part can be named by URL; with nothing named, the database is the embedded PostgreSQL kept in
`.tds/pgdata` (started on demand) and the broker is the embedded amqtt broker.
"""

from __future__ import annotations

import os
from pathlib import Path

from tds_core.storage.embedded import EmbeddedPostgres

DATABASE_ENV = "TDS_DATABASE_URL"
BROKER_ENV = "TDS_BROKER_URL"
STATE_DIR_ENV = "TDS_STATE_DIR"
EMBEDDED_DB_NAME = "tds"

_embedded: EmbeddedPostgres | None = None


def state_dir() -> Path:
    """Directory for local state (embedded database, PKI, broker data): $TDS_STATE_DIR or ./.tds."""
    return Path(os.environ.get(STATE_DIR_ENV, ".tds"))


def embedded_postgres() -> EmbeddedPostgres:
    """The process-wide embedded PostgreSQL handle (not started until asked)."""
    global _embedded
    if _embedded is None:
        _embedded = EmbeddedPostgres(state_dir() / "pgdata")
    return _embedded


def database_url(explicit: str | None = None) -> str:
    """The database DSN: the flag, else $TDS_DATABASE_URL, else the embedded server (started on demand)."""
    if explicit:
        return explicit
    if from_env := os.environ.get(DATABASE_ENV):
        return from_env
    server = embedded_postgres()
    server.start()
    return server.ensure_database(EMBEDDED_DB_NAME)


def broker_url(explicit: str | None = None) -> str | None:
    """The broker URL: the flag, else $TDS_BROKER_URL, else None (meaning: the embedded broker)."""
    return explicit or os.environ.get(BROKER_ENV) or None
