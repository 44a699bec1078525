"""The scenario suite: one test per file in scenarios/suite/, each a full run (fleet, broker, database,
consumer) whose every expectation must hold. Files tagged `slow` are in the slow tier (`-m slow`).

Runs on the session's PostgreSQL server (conftest `pg_admin_dsn`): each run creates and drops its own
database there. Reports go to the test's temporary directory.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from scenarios.runner import RunOptions, run_scenario
from scenarios.schema import load_scenario

SUITE = Path(__file__).resolve().parents[2] / "scenarios" / "suite"


def _params() -> list:
    out = []
    for path in sorted(SUITE.glob("*.yaml")):
        sc = load_scenario(path)
        marks = [pytest.mark.slow, pytest.mark.timeout(7200)] if "slow" in sc.tags else [pytest.mark.timeout(600)]
        if sc.parts.broker == "mosquitto":
            marks.append(pytest.mark.mosquitto)
        out.append(pytest.param(path, marks=marks, id=path.stem))
    return out


@pytest.mark.parametrize("path", _params())
def test_scenario(path: Path, pg_admin_dsn: str, tmp_path: Path) -> None:
    if importlib.util.find_spec("simulators.fleet") is None:
        pytest.skip("simulators/fleet.py (the fleet engine) is not in this tree yet")
    sc = load_scenario(path)
    if sc.parts.broker == "mosquitto":
        from tds_core.broker.mosquitto import mosquitto_available

        if not mosquitto_available():
            pytest.skip("needs Mosquitto: apt-get install mosquitto")
    result = run_scenario(sc, RunOptions(reports_dir=tmp_path / "reports", admin_dsn=pg_admin_dsn))
    failed = [f"{o.name}: {o.message}" for o in result.outcomes if not o.passed]
    assert result.error is None, f"run broke: {result.error} (reports: {tmp_path / 'reports'})"
    assert not failed, "\n".join(failed)
    # The report's summary is computed apart from the checks: it must agree with the database.
    summary = result.to_json()["summary"]
    if any(o.kind == "readings_stored_equal_produced" for o in result.outcomes):
        assert summary["rows_stored"] > 0 and summary["readings_acked"] > 0, summary
        assert summary["distinct_values_served"] > 0, summary
