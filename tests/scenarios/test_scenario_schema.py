"""Scenario files: valid ones load; every bad field is reported as `file:line: field.path: problem`."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from scenarios.schema import load_scenario
from tds_core.yamlconf import ConfigError

SUITE = Path(__file__).resolve().parents[2] / "scenarios" / "suite"

BASE = """\
name: t
clock: {mode: virtual, duration: 1h}
fleet:
  gateway_templates:
    m2:
      poll_interval: 1m
      devices:
        - {code: E1, slave_id: 1, register: 0, data_type: uint32, unit: kWh, model: {kind: energy, base_kw: 2}}
        - {code: T1, slave_id: 2, register: 0, data_type: int16, scale: 0.1, unit: °C}
  tenants:
    - code: acme
      name: ACME
      gateway_groups:
        - {template: m2, count: 3, mac_start: "02:00:00:00:00:01", code: "GW-{n:02d}", group: north}
      gateways:
        - mac: "02:00:00:00:01:00"
          code: LEG-1
          payload_format: legacy
          poll_interval: 30s
          devices:
            - {code: W1, slave_id: 5, register: 0, unit: m³, model: water}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_scenario(write(tmp_path, text))
    return str(info.value)


def test_valid_scenario_loads_fleet_extras_timeline_and_expectations(tmp_path: Path) -> None:
    sc = load_scenario(write(tmp_path, BASE + """\
timeline:
  - {at: 10m, network_partition: {group: north, for: 30m}}
  - {at: 5m, modbus_fault: {gateway: GW-01, slave_id: 2, kind: no_reply, for: 2m}}
  - {at: 20m, malformed_messages: {gateway: LEG-1, count: 4, kinds: [malformed_json, wrong_type]}}
expectations:
  - readings_stored_equal_produced
  - in_order: {group: north}
  - gateway_online: {at: 20m, group: north, online: false}
  - dead_letters: {malformed_json: 2, wrong_type: 2}
"""))
    assert [g.code for g in sc.fleet.gateways] == ["LEG-1", "GW-01", "GW-02", "GW-03"]
    legacy, first = sc.fleet.gateways[0], sc.fleet.gateways[1]
    assert legacy.poll_interval == timedelta(seconds=30) and legacy.group is None
    assert legacy.models[0].kind == "water"
    assert first.poll_interval == timedelta(minutes=1) and first.group == "north"
    assert [m.kind for m in first.models] == ["energy", "temperature"]  # T1 defaults from its unit
    assert first.models[0].params == {"base_kw": 2}
    assert sc.fleet.groups == {"north": [g.mac for g in sc.fleet.gateways[1:]]}
    assert [e.kind for e in sc.timeline] == ["network_partition", "modbus_fault", "malformed_messages"]
    assert sc.timeline[0].duration == timedelta(minutes=30)
    assert sc.expectations[3].params["counts"] == {"malformed_json": 2, "wrong_type": 2}
    assert sc.fleet.registry.device_count == 7  # the registry part went through parse_fleet


@pytest.mark.parametrize(("extra", "expected"), [
    ("timeline:\n  - {at: soon, reboot: {group: north}}\n",
     "s.yaml:23: timeline[0].at: expected a duration like 10m, 30s, 1h30m or 2d, got 'soon'"),
    ("timeline:\n  - {at: 2h, reboot: {group: north}}\n",
     "s.yaml:23: timeline[0].at: 2h is after the end of the run"),
    ("timeline:\n  - at: 1m\n    reboot: {group: south}\n",
     "s.yaml:24: timeline[0].reboot.group: no gateway group 'south' in the fleet (groups: north)"),
    ("timeline:\n  - at: 1m\n    power_los: {group: north}\n",
     "s.yaml:24: timeline[0].power_los: unknown key (did you mean 'power_loss'?)"),
    ("timeline:\n  - at: 1m\n    modbus_fault: {gateway: GW-01, slave_id: 9, kind: no_reply}\n",
     "s.yaml:24: timeline[0].modbus_fault.slave_id: gateway GW-01 has no meter on slave 9"),
    ("timeline:\n  - at: 1m\n    modbus_fault: {gateway: GW-09, slave_id: 1, kind: no_reply}\n",
     "timeline[0].modbus_fault.gateway: no gateway 'GW-09' in the fleet (did you mean"),
    ("timeline:\n  - at: 1m\n    database_outage: {}\n",
     "s.yaml:24: timeline[0].database_outage: missing required key 'for'"),
    ("timeline:\n  - at: 1m\n    consumer_kill: {restart_after: 1m}\n",
     "consumer_kill needs `parts: {consumer: subprocess}`"),
    ("expectations:\n  - latncy: {p95_ms: 5}\n",
     "s.yaml:23: expectations[0]: unknown expectation 'latncy' (did you mean 'latency'?)"),
    ("expectations:\n  - dead_letters: {malformed_jsn: 1}\n",
     "s.yaml:23: expectations[0].dead_letters.malformed_jsn: unknown dead-letter reason (did you mean"),
    ("expectations:\n  - gateway_online: {at: 5m, group: north}\n",
     "s.yaml:23: expectations[0].gateway_online: missing required key 'online'"),
    ("expectations:\n  - latency: {}\n",
     "expectations[0].latency: name at least one bound"),
    ("parts: {broker: rabbit}\n", "s.yaml:22: parts.broker: expected one of embedded, mosquitto, got 'rabbit'"),
    ("parts: {database: {dsn: mysql://x}}\n", "s.yaml:22: parts.database.dsn: expected postgresql://"),
])
def test_errors_name_file_line_and_field(tmp_path: Path, extra: str, expected: str) -> None:
    text = BASE + extra if "expectations:" in extra else BASE + extra + "expectations: [no_duplicates]\n"
    message = load_error(tmp_path, text)
    assert expected in message, message
    assert message.startswith(str(tmp_path / "s.yaml") + ":")


def test_fleet_extras_and_registry_errors_keep_lines(tmp_path: Path) -> None:
    bad_model = BASE.replace("model: {kind: energy, base_kw: 2}", "model: {kind: nuclear}")
    assert "s.yaml:8: fleet.gateway_templates.m2.devices[0].model.kind: expected one of energy, water" in \
        load_error(tmp_path, bad_model + "expectations: [no_duplicates]\n")
    bad_poll = BASE.replace("poll_interval: 30s", "poll_interval: often")
    assert "s.yaml:19: fleet.tenants[0].gateways[0].poll_interval: expected a duration" in \
        load_error(tmp_path, bad_poll + "expectations: [no_duplicates]\n")
    bad_mac = BASE.replace('"02:00:00:00:01:00"', '"zz"')
    assert "s.yaml:16: fleet.tenants[0].gateways[0].mac: expected a MAC" in \
        load_error(tmp_path, bad_mac + "expectations: [no_duplicates]\n")
    unknown = BASE.replace("name: ACME", "name: ACME\n      gatways: []")
    assert "fleet.tenants[0].gatways: unknown key (did you mean 'gateways'?)" in \
        load_error(tmp_path, unknown + "expectations: [no_duplicates]\n")


def test_top_level_unknown_key_and_missing_sections(tmp_path: Path) -> None:
    assert "s.yaml:23: expectatons: unknown key (did you mean 'expectations'?)" in \
        load_error(tmp_path, BASE + "expectations: []\nexpectatons: []\n")
    assert "missing required key 'expectations'" in load_error(tmp_path, BASE)


@pytest.mark.parametrize("path", sorted(SUITE.glob("*.yaml")), ids=lambda p: p.stem)
def test_suite_files_are_valid(path: Path) -> None:
    sc = load_scenario(path)
    assert sc.name == path.stem and sc.expectations
