"""Expectation checkers fed synthetic observations (so each can be seen failing), malformed payloads
checked against the real decoder, and the report writers (JUnit parses, one test case per expectation)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scenarios.expectations import check_all
from scenarios.malformed import malformed
from scenarios.observations import DeadLetterRecord, Observations, OnlineSample, StoredRow
from scenarios.reports import RunResult, write_reports
from scenarios.schema import MALFORMED_KINDS, parse_scenario
from tds_core.protocol import Rejection, decode
from tds_core.yamlconf import load_yaml_text

T0 = datetime(2026, 3, 1, tzinfo=UTC)
A, B = "02:00:00:00:00:01", "02:00:00:00:00:02"

SCENARIO = """\
name: synthetic
clock: {mode: virtual, duration: 1h}
fleet:
  tenants:
    - code: t
      name: T
      gateways:
        - {mac: "02:00:00:00:00:01", code: GA, group: g, devices: [{code: E1, slave_id: 1, register: 0, unit: kWh}]}
        - {mac: "02:00:00:00:00:02", code: GB, devices: [{code: E1, slave_id: 1, register: 0, unit: kWh}]}
expectations:
  - readings_stored_equal_produced: {min_readings: 4}
  - no_duplicates
  - all_published_acked
  - in_order: {group: g}
  - dead_letters: {malformed_json: 2}
  - gateway_online: {at: 30m, group: g, online: false}
  - latency: {p95_ms: 100}
"""


def scenario():
    return parse_scenario(load_yaml_text(SCENARIO, "synthetic.yaml"))


def good_observations() -> Observations:
    obs = Observations(gateway_codes={A: "GA", B: "GB"})
    for mac in (A, B):
        series = [(T0 + timedelta(minutes=5 * i), 100.0 + i) for i in range(3)]
        obs.produced[(mac, "E1")] = {v for _, v in series}
        for i, (at, value) in enumerate(series):
            obs.expected.add((mac, "E1", at))
            obs.acked_values[(mac, "E1", at)] = value
            obs.stored[(mac, "E1", at)] = StoredRow(value, 1000 + i)
        obs.published[mac] = obs.acked[mac] = 3
        obs.dropped[mac] = obs.queued[mac] = 0
    obs.dead_letters = [DeadLetterRecord("malformed_json", f"tds_new/devices/{A}/telemetry", "x")] * 2
    obs.online_samples = [OnlineSample("gateway_online[group g offline at 30m]", 1800, {A: False})]
    obs.latencies_ms = [10.0, 20.0, 30.0, 50.0]
    return obs


def verdicts(obs: Observations) -> dict[str, tuple[bool, str]]:
    sc = scenario()
    return {o.kind: (o.passed, o.message) for o in check_all(sc.expectations, obs, sc.fleet)}


def test_all_pass_on_consistent_observations() -> None:
    result = verdicts(good_observations())
    assert all(ok for ok, _ in result.values()), result


def test_missing_row_fails_stored_equal_produced_and_in_order() -> None:
    obs = good_observations()
    del obs.stored[(A, "E1", T0 + timedelta(minutes=5))]
    result = verdicts(obs)
    ok, message = result["readings_stored_equal_produced"]
    assert not ok and "1 acked readings missing" in message and "GA/E1@2026-03-01T00:05:00+00:00" in message
    assert not result["in_order"][0]


def test_phantom_and_wrong_value_rows_fail() -> None:
    obs = good_observations()
    obs.stored[(B, "E1", T0 + timedelta(hours=9))] = StoredRow(1.0, 2000)
    obs.stored[(B, "E1", T0)] = StoredRow(99.0, 1000)
    result = verdicts(obs)
    ok, message = result["readings_stored_equal_produced"]
    assert not ok and "1 stored rows no meter produced" in message and "stored 99.0 published 100.0" in message
    assert not result["no_duplicates"][0]


def test_unbalanced_accounting_and_unacked_messages_fail() -> None:
    obs = good_observations()
    obs.published[B] = 2
    obs.dropped[A] = 1
    obs.published[A] = 4
    result = verdicts(obs)
    assert "GB acked+dropped 3 > published 2" in result["no_duplicates"][1]
    ok, message = result["all_published_acked"]
    assert not ok and "GA published 4 acked 3 dropped 1" in message
    obs.dropped[A] = 0
    obs.drained = False
    assert "not empty after the drain" in verdicts(obs)["all_published_acked"][1]


def test_out_of_order_commit_fails_in_order() -> None:
    obs = good_observations()
    obs.stored[(A, "E1", T0 + timedelta(minutes=10))] = StoredRow(102.0, 5)  # committed before earlier rows
    ok, message = verdicts(obs)["in_order"]
    assert not ok and "was committed before the earlier" in message


def test_dead_letter_counts_online_and_latency_fail_with_expected_vs_actual() -> None:
    obs = good_observations()
    obs.dead_letters = [*obs.dead_letters[:1], DeadLetterRecord("unknown_gateway", "t", "who")]
    obs.online_samples[0].observed[A] = True
    obs.latencies_ms = [10.0] * 90 + [500.0] * 10
    result = verdicts(obs)
    assert result["dead_letters"] == (False, result["dead_letters"][1])
    assert "malformed_json: expected 2, got 1" in result["dead_letters"][1]
    assert "unknown_gateway: expected 0, got 1" in result["dead_letters"][1]
    assert "1 of 1 gateways not offline" in result["gateway_online"][1] and "GA=online" in result["gateway_online"][1]
    assert "p95_ms 500.0 > 100" in result["latency"][1]


def test_too_few_readings_fails() -> None:
    obs = good_observations()
    obs.expected = {k for k in obs.expected if k[0] == A}
    obs.stored = {k: v for k, v in obs.stored.items() if k[0] == A}
    ok, message = verdicts(obs)["readings_stored_equal_produced"]
    assert not ok and "only 3 readings were acked, expected at least 4" in message


@pytest.mark.parametrize("kind", sorted(MALFORMED_KINDS))
def test_malformed_payloads_are_rejected_with_their_reason(kind: str) -> None:
    reason = MALFORMED_KINDS[kind]
    topics = set()
    for n in range(3):
        topic, payload = malformed(kind, A, "E1", "kWh", n, T0)
        topics.add(payload)
        if kind == "unknown_device":  # passes decode; the registry refuses it (tested in ingest)
            assert decode(topic, payload, now=T0).readings[0].device_code == f"NOPE{n}"
            continue
        with pytest.raises(Rejection) as info:
            decode(topic, payload, now=T0)
        assert info.value.reason == reason, info.value.detail
    assert len(topics) == 3  # distinct payloads: dead letters are unique by digest


def test_reports_one_junit_case_per_expectation(tmp_path: Path) -> None:
    sc = scenario()
    obs = good_observations()
    obs.latencies_ms = [10.0] * 90 + [500.0] * 10
    obs.commits = [(0.5, 10), (1.0, 20), (2.5, 5)]
    outcomes = check_all(sc.expectations, obs, sc.fleet)
    result = RunResult("synthetic", "synthetic.yaml", "20260301-000000", T0, 12.5, 3600, "virtual",
                       {"broker": "embedded"}, outcomes, obs, [{"fleet_offset": "0s", "event": "x", "wall_s": 0}])
    paths = write_reports(tmp_path / "run", result)
    suite = ET.parse(paths["junit"]).getroot()
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [e.name for e in sc.expectations]
    assert suite.get("tests") == "7" and suite.get("failures") == "1"
    failed = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["latency[p95_ms<=100]"]
    data = json.loads(paths["json"].read_text())
    assert data["passed"] is False and len(data["expectations"]) == 7
    assert data["summary"]["rows_stored"] == 6
    html = paths["html"].read_text()
    assert html.count("<svg") == 3 and "FAILED" in html and "latency[p95_ms&lt;=100]" in html


def test_power_loss_write_is_reported_but_a_real_drop_still_fails() -> None:
    obs = good_observations()
    obs.dropped[A] = obs.lost_on_power_loss[A] = 1  # a queue write cut by the power: never published
    ok, message = verdicts(obs)["all_published_acked"]
    assert ok and "1 queue writes lost with the power" in message
    obs.dropped[A] = 2  # plus one message that existed and was dropped without a PUBACK
    ok, message = verdicts(obs)["all_published_acked"]
    assert not ok and "GA published 3 acked 3 dropped 1" in message
