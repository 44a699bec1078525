"""Storage fixtures: a migrated database per backend (plain PostgreSQL always; TimescaleDB when reachable)
and a small registry (two tenants, their gateways and devices) to write readings against."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from storage_testkit import Store, seed_registry

from tds_core.storage.migrate import migrate

TIMESCALE_ENV = "TDS_TEST_TIMESCALE_DSN"
TIMESCALE_IMAGE = "timescale/timescaledb:latest-pg16"
SKIP_TIMESCALE = "TimescaleDB not reachable: set TDS_TEST_TIMESCALE_DSN or run a Docker engine"


def _with_dbname(dsn: str, dbname: str) -> str:
    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo(**params)


def _docker_answers() -> bool:
    """True when a Docker engine answers within 2 s (absent: fails in milliseconds, FIELD-NOTES)."""
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def timescale_admin_dsn() -> Iterator[str]:
    """Admin DSN of a server with TimescaleDB: $TDS_TEST_TIMESCALE_DSN, else a container, else skip."""
    if dsn := os.environ.get(TIMESCALE_ENV):
        yield dsn
        return
    if not _docker_answers():
        pytest.skip(SKIP_TIMESCALE)
    from testcontainers.community.postgres import PostgresContainer

    with PostgresContainer(TIMESCALE_IMAGE, driver=None) as container:
        yield container.get_connection_url()


@pytest.fixture()
def timescale_dsn(timescale_admin_dsn: str) -> Iterator[str]:
    """A fresh database migrated for the TimescaleDB backend, dropped after the test."""
    name = f"tds_ts_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(timescale_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = _with_dbname(timescale_admin_dsn, name)
    try:
        migrate(dsn, backend="timescale")
        yield dsn
    finally:
        with psycopg.connect(timescale_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(params=["postgres", pytest.param("timescale", marks=pytest.mark.timescale)])
def backend_dsn(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(backend, DSN of a fresh migrated database) for each backend."""
    if request.param == "postgres":
        return "postgres", request.getfixturevalue("db_dsn")
    return "timescale", request.getfixturevalue("timescale_dsn")


@pytest.fixture()
def store(backend_dsn: tuple[str, str]) -> Iterator[Store]:
    """A Store for each backend (the TimescaleDB one skips when no TimescaleDB is reachable)."""
    backend, dsn = backend_dsn
    with psycopg.connect(dsn) as conn:
        yield Store(backend, dsn, conn, seed_registry(conn))


@pytest.fixture()
def plain_store(db_dsn: str) -> Iterator[Store]:
    """A Store on plain PostgreSQL only (partition-specific behaviour)."""
    with psycopg.connect(db_dsn) as conn:
        yield Store("postgres", db_dsn, conn, seed_registry(conn))
