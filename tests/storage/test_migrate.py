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


def test_unique_reading_index_is_ascending_on_every_partition_and_survives_the_upgrade(empty_db_dsn: str) -> None:
    """0006 swaps the seed's (device, time DESC) index for an ascending one, keeping rows and uniqueness."""
    from datetime import UTC, datetime, timedelta

    from tds_core.storage.partitions import ensure_partitions

    migrate(empty_db_dsn, backend="postgres")
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        # Back to the state before 0006, with rows in it: the seed's index and no record of 0006.
        conn.execute("DROP INDEX readings_device_time_idx")
        conn.execute("CREATE UNIQUE INDEX readings_device_time_idx ON readings (device_id, time DESC)")
        conn.execute("DELETE FROM tds_schema_migrations WHERE version = 6")
        now = datetime.now(UTC).replace(microsecond=0)
        ensure_partitions(conn, [(now - timedelta(days=d)).date() for d in (1, 0)])
        conn.execute(
            "INSERT INTO readings (time, device_id, gateway_id, tenant_id, value)"
            " SELECT %s - make_interval(mins => m), d, 1, 1, m FROM generate_series(1, 3) d, generate_series(0, 9) m",
            (now,),
        )

    assert [m.version for m in migrate(empty_db_dsn, backend="postgres")] == [6]
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (30,)
        definitions = conn.execute(
            """SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
               WHERE i.indisunique AND (c.oid = 'readings'::regclass
                     OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'readings'::regclass))"""
        ).fetchall()
        assert len(definitions) >= 3  # the parent and at least two daily partitions
        assert all(d.endswith("(device_id, \"time\")") for _, d in definitions), definitions
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO readings (time, device_id, gateway_id, tenant_id, value)"
                         " SELECT time, device_id, gateway_id, tenant_id, 0 FROM readings LIMIT 1")
