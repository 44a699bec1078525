"""`tds db migrate | status | maintain` end to end on a real database."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from tds_core.cli import main
from tds_core.storage.config import get_settings


def test_migrate_status_maintain(empty_db_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "migrate", "--dsn", empty_db_dsn, "--backend", "postgres", "--retention", "400d"]) == 0
    out = capsys.readouterr().out
    assert "applied 0002_readings (postgres)" in out
    assert "retention 400d" in out
    with psycopg.connect(empty_db_dsn) as conn:
        assert get_settings(conn).retention == timedelta(days=400)
    assert main(["db", "migrate", "--dsn", empty_db_dsn]) == 0
    assert "up to date (postgres)" in capsys.readouterr().out

    assert main(["db", "status", "--dsn", empty_db_dsn]) == 0
    out = capsys.readouterr().out
    assert "backend: postgres" in out and "migration 0002_readings" in out
    assert "retention: 400d; partitions ahead: 7" in out and "partitions: 8 (" in out
    assert "rollup log entries waiting for refresh: 0; hours queued for a rebuild: 0" in out

    assert main(["db", "maintain", "--dsn", empty_db_dsn]) == 0
    assert "postgres: 0 partitions created" in capsys.readouterr().out


def test_bad_retention_is_one_clear_line(empty_db_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "migrate", "--dsn", empty_db_dsn, "--retention", "2 years"]) == 2
    err = capsys.readouterr().err
    assert "--retention: expected a duration like 730d, 2y or 12h" in err and "'2 years'" in err


def test_status_of_an_unmigrated_database(empty_db_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "status", "--dsn", empty_db_dsn]) == 1
    assert "not migrated" in capsys.readouterr().out


def test_maintain_rebuild_recomputes_hand_edited_hours(empty_db_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    from datetime import UTC, datetime

    from storage_testkit import seed_registry

    from tds_core.storage.writer import BatchWriter

    assert main(["db", "migrate", "--dsn", empty_db_dsn, "--backend", "postgres"]) == 0
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    with psycopg.connect(empty_db_dsn) as conn:
        reg = seed_registry(conn)
        BatchWriter(conn).write([(hour + timedelta(minutes=m), reg.devices["A-E1"], reg.gw_a, reg.tenant_a, 1.0)
                                 for m in range(10)])
    assert main(["db", "maintain", "--dsn", empty_db_dsn]) == 0
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM readings WHERE time >= %s", (hour + timedelta(minutes=5),))
    capsys.readouterr()
    start = hour.strftime("%Y-%m-%dT%H:%M")
    assert main(["db", "maintain", "--dsn", empty_db_dsn, "--rebuild", start, "2999-01-01"]) == 0
    assert "1 hourly buckets queued for a rebuild" in capsys.readouterr().out
    with psycopg.connect(empty_db_dsn) as conn:
        assert conn.execute("SELECT reading_count FROM readings_hourly").fetchall() == [(5,)]


def test_maintain_rebuild_bad_window(empty_db_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "migrate", "--dsn", empty_db_dsn, "--backend", "postgres"]) == 0
    with pytest.raises(SystemExit) as raised:  # argparse: usage line and exit 2
        main(["db", "maintain", "--dsn", empty_db_dsn, "--rebuild", "yesterday", "2026-01-01"])
    assert raised.value.code == 2
    assert "expected an ISO 8601 date or date-time, got 'yesterday'" in capsys.readouterr().err
    assert main(["db", "maintain", "--dsn", empty_db_dsn, "--rebuild", "2026-02-01", "2026-01-01"]) == 2
    assert "--rebuild: END 2026-01-01T00:00:00+00:00 is not after START" in capsys.readouterr().err
