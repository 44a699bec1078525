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

    assert main(["db", "maintain", "--dsn", empty_db_dsn]) == 0
    assert "postgres: 0 partitions created" in capsys.readouterr().out


def test_bad_retention_is_one_clear_line(empty_db_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "migrate", "--dsn", empty_db_dsn, "--retention", "2 years"]) == 2
    err = capsys.readouterr().err
    assert "--retention: expected a duration like 730d, 2y or 12h" in err and "'2 years'" in err


def test_status_of_an_unmigrated_database(empty_db_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "status", "--dsn", empty_db_dsn]) == 1
    assert "not migrated" in capsys.readouterr().out
