"""Smoke test of `python -m bench ingest` at a tiny size: correctness and report shape only, never timing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from bench.env import BenchEnv, gateway_macs
from bench.ingest import IngestBenchConfig, latency_timeline, render_table, run_bench, timeline_summary, verify
from bench.stats import TimestampParser, payload_timestamp, percentiles
from tds_core.broker.mosquitto import mosquitto_available
from tds_core.storage.partitions import ensure_partitions

pytestmark = pytest.mark.timeout(300)

RESULT_FIELDS = {"design", "broker", "offered_msg_s", "achieved_msg_s", "achieved_readings_s", "latency_ms", "loss",
                 "cpu_pct", "publishers"}


def _tiny(tmp_path: Path, dsn: str, broker: str, impl: str = "paho") -> IngestBenchConfig:
    return IngestBenchConfig(
        publisher_impl=impl,
        rates=[150.0], duration=1.5, warmup=0.5, gateways=6, devices=4, publishers=2, broker=broker, dsn=dsn,
        tds_flood_messages=150, seed_messages=120, seed_rate=200.0, writer_rows=4000, writer_batch=1000,
        drain_timeout=60.0,
        report_dir=tmp_path / "reports",
    )


def _check_report(report: dict, broker: str) -> None:
    path = Path(report["path"])
    assert path.is_file()
    assert json.loads(path.read_text())["results"] == report["results"]
    assert {"started", "host", "config", "results", "targets"} <= report.keys()
    assert len(report["host"]["load_avg_start"]) == 3
    designs = [r["design"] for r in report["results"]]
    assert designs == ["tds", "tds-max", "seed", "writer"]
    for result in report["results"][:3]:
        assert result.keys() >= RESULT_FIELDS, result.keys()
        assert result["broker"] == broker
        loss = result["loss"]
        # Every PUBACKed message is in the database with all its readings, exactly once.
        assert loss["acked_messages"] > 0
        assert loss["lost_messages"] == 0, loss
        assert loss["duplicates"] == 0, loss
        assert loss["rows"] == loss["expected_rows"] + loss["unacked_but_stored_messages"] * 4, loss
        assert result["publishers"]["errors"] == []
        assert {"p50", "p95", "p99"} <= result["latency_ms"].keys()
        assert result["latency_ms"]["p99"] is not None
    timeline = report["results"][0]["latency_timeline"]
    assert timeline and sum(x["messages"] for x in timeline) == report["results"][0]["latency_samples"]
    assert all(x["p50"] <= x["p99"] <= x["max"] for x in timeline)
    assert report["results"][1]["loss"]["acked_messages"] == 150
    assert report["results"][2]["loss"]["acked_messages"] == 120
    writer = report["results"][3]
    assert writer["rows"] == 4000 and writer["achieved_readings_s"] > 0
    assert {"tds_5000_msg_s_p99_150ms_no_loss", "ratio_vs_seed", "writer_at_least_200k"} <= report["targets"].keys()
    assert report["targets"]["no_loss_everywhere"] is True
    assert "p99 ms" in render_table(report["results"])


def test_bench_embedded_broker(tmp_path: Path, pg_admin_dsn: str) -> None:
    report = run_bench(_tiny(tmp_path, pg_admin_dsn, "embedded"), out=open("/dev/null", "w"))  # noqa: SIM115
    _check_report(report, "embedded")


@pytest.mark.mosquitto
@pytest.mark.parametrize("impl", ["paho", "raw"])
def test_bench_mosquitto_mtls(tmp_path: Path, pg_admin_dsn: str, impl: str) -> None:
    if not mosquitto_available():
        pytest.skip("Mosquitto not installed: apt-get install mosquitto")
    report = run_bench(_tiny(tmp_path, pg_admin_dsn, "mosquitto", impl), out=open("/dev/null", "w"))  # noqa: SIM115
    _check_report(report, "mosquitto")


def _ts(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def test_verify_detects_missing_and_partial_messages(pg_admin_dsn: str) -> None:
    """The loss check must be able to fail: an acked message absent, another with a reading missing."""
    with BenchEnv(gateways=2, devices=2, dsn=pg_admin_dsn, broker="none") as env:
        t1, t2 = 1_700_000_000_000_001, 1_700_000_000_500_002
        with psycopg.connect(env.db_dsn) as conn:
            gw_id, tenant_id = conn.execute("SELECT id, tenant_id FROM gateways WHERE mac = %s",
                                            (env.macs[0],)).fetchone()
            ids = dict(conn.execute("SELECT code, id FROM devices WHERE gateway_id = %s", (gw_id,)).fetchall())
            ensure_partitions(conn, {_ts(t1).date()})
            rows = [(_ts(t1), ids["D01"]), (_ts(t1), ids["D02"]), (_ts(t2), ids["D01"])]
            for time, device in rows:
                conn.execute("INSERT INTO readings VALUES (%s, %s, %s, %s, 1.0)", (time, device, gw_id, tenant_id))
        ok = verify(env.db_dsn, {env.macs[0]: [t1]}, 2)
        assert ok["ok"] and ok["lost_messages"] == 0 and ok["unacked_but_stored_messages"] == 1
        bad = verify(env.db_dsn, {env.macs[0]: [t1, t2], env.macs[1]: [t1]}, 2)
        assert bad["missing_messages"] == 1 and bad["partial_messages"] == 1 and not bad["ok"]


def test_helpers() -> None:
    assert payload_timestamp(b'{"gateway_mac":"x","timestamp":"2026-01-02T03:04:05.000123Z","leituras":[]}') \
        == b"2026-01-02T03:04:05.000123Z"
    parse = TimestampParser()
    assert parse(b"1970-01-01T00:00:01.500000Z") == pytest.approx(1.5)
    assert parse("1970-01-01T00:00:02Z") == 2.0
    assert percentiles([3.0, 1.0, 2.0, 4.0]) == {"p50": 3.0, "p95": 4.0, "p99": 4.0, "max": 4.0}
    assert percentiles([])["p99"] is None
    timeline = latency_timeline({0: [10.0, 20.0], 2: [500.0]})
    assert timeline == [{"s": 0, "messages": 2, "p50": 20.0, "p99": 20.0, "max": 20.0},
                        {"s": 2, "messages": 1, "p50": 500.0, "p99": 500.0, "max": 500.0}]
    summary = timeline_summary({"offered_msg_s": 5000.0, "latency_timeline": timeline})
    assert summary == "tds at 5,000 msg/s: 1 of 2 seconds with p99 over 150 ms; worst second +2s (max 500 ms)"
    assert gateway_macs(2) == ["02:00:00:00:00:01", "02:00:00:00:00:02"]
    with pytest.raises(ValueError, match="rates"):
        IngestBenchConfig(rates=[0])
