"""The migration runner on a real PostgreSQL."""

import psycopg
import pytest

from tds_core.storage.migrate import MigrationError, current_backend, discover, migrate, split_statements


def test_fresh_database_gets_every_migration_once(empty_db_dsn: str) -> None:
    applied = migrate(empty_db_dsn, backend="postgres")
    assert [m.version for m in applied] == [m.version for m in discover("postgres")]
    assert migrate(empty_db_dsn, backend="postgres") == []  # idempotent
    with psycopg.connect(empty_db_dsn) as conn:
        assert current_backend(conn) == "postgres"
        assert conn.execute("SELECT to_regclass('gateways') IS NOT NULL").fetchone() == (True,)


def test_refuses_timescale_on_a_server_without_it(empty_db_dsn: str) -> None:
    with pytest.raises(ValueError, match="no usable TimescaleDB"):
        migrate(empty_db_dsn, backend="timescale")


def test_refuses_to_switch_backend(empty_db_dsn: str) -> None:
    migrate(empty_db_dsn, backend="postgres")
    with pytest.raises(MigrationError, match="refusing to switch"):
        migrate(empty_db_dsn, backend="timescale")


def test_split_statements_respects_quotes_and_dollar_bodies() -> None:
    sql = """
    -- a comment; with a semicolon
    CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;
    SELECT 'a;b', 'it''s;';
    /* block; comment */ SELECT 2;
    """
    parts = split_statements(sql)
    assert len(parts) == 3
    assert parts[0].endswith("$$ SELECT 1; $$")
    assert "'a;b'" in parts[1] and "'it''s;'" in parts[1]
