"""Fleet file parsing: explicit gateways, templates/groups, and the errors a bad file gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from tds_core.registry.fleet import load_fleet, parse_fleet
from tds_core.yamlconf import ConfigError, load_yaml_text

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet.yaml"

BASE = """\
tenants:
  - code: acme
    name: ACME
    gateways:
      - mac: "AA-BB-CC-00-00-01"
        code: GW-0001
        devices:
          - {code: D01, slave_id: 1, register: 0, unit: kWh}
"""


def _parse(text: str):
    return parse_fleet(load_yaml_text(text, "fleet.yaml"))


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as err:
        _parse(text)
    return str(err.value)


def test_example_file_loads() -> None:
    spec = load_fleet(EXAMPLE)
    assert [t.code for t in spec.tenants] == ["acme", "solar"]
    assert len(spec.gateways) == 202 and spec.device_count == 3 + 1 + 200 * 8
    assert spec.gateways[1].payload_format == "legacy"
    last = spec.gateways[-1]
    assert (last.mac, last.code, last.tenant_code, len(last.devices)) == ("aa:bb:cc:01:00:c7", "SOL-0200", "solar", 8)


def test_defaults_and_normalization() -> None:
    gw = _parse(BASE).gateways[0]
    assert gw.mac == "aa:bb:cc:00:00:01" and gw.payload_format == "v1" and not gw.revoke
    dev = gw.devices[0]
    assert (dev.data_type, dev.scale, dev.kind, dev.word_order) == ("uint16", 0.01, "energy", "big")


def test_bad_mac_names_line_and_path() -> None:
    text = BASE + '      - mac: "zz"\n        code: GW-0002\n'
    assert _error(text) == "fleet.yaml:9: tenants[0].gateways[1].mac: expected a MAC like aa:bb:cc:dd:ee:ff, got 'zz'"


def test_template_group_generates_macs_and_codes() -> None:
    text = """\
gateway_templates:
  t1:
    payload_format: legacy
    devices: [{code: D01, slave_id: 1, register: 0, unit: m³}]
tenants:
  - code: a
    name: A
    gateway_groups:
      - {template: t1, count: 3, mac_start: "aa:bb:cc:00:00:fe", code: "X-{n:03d}", first: 0}
      - {template: t1, count: 1, mac_start: "aa:bb:cc:00:10:00", code: "Y", payload_format: v1}
"""
    spec = _parse(text)
    assert [(g.mac, g.code, g.payload_format) for g in spec.gateways] == [
        ("aa:bb:cc:00:00:fe", "X-000", "legacy"),
        ("aa:bb:cc:00:00:ff", "X-001", "legacy"),
        ("aa:bb:cc:00:01:00", "X-002", "legacy"),
        ("aa:bb:cc:00:10:00", "Y", "v1"),
    ]
    assert spec.gateways[0].devices[0].kind == "water"


def test_unknown_template_suggests() -> None:
    text = """\
gateway_templates: {meter8: {devices: []}}
tenants:
  - code: a
    name: A
    gateway_groups:
      - {template: meter9, count: 2, mac_start: "aa:bb:cc:00:00:01", code: "G{n}"}
"""
    assert _error(text) == (
        "fleet.yaml:6: tenants[0].gateway_groups[0].template: expected one of meter8, got 'meter9' "
        "(did you mean 'meter8'?)"
    )


def test_duplicate_mac_names_both_lines() -> None:
    text = BASE + "  - code: other\n    name: Other\n    gateways:\n      - {mac: \"aa:bb:cc:00:00:01\", code: GW-9}\n"
    assert _error(text) == (
        "fleet.yaml:12: tenants[1].gateways[0].mac: duplicate MAC aa:bb:cc:00:00:01 "
        "(also at line 5, tenants[0].gateways[0].mac)"
    )


def test_group_overlapping_explicit_mac() -> None:
    text = BASE + "    gateway_groups:\n      - {count: 5, mac_start: \"aa:bb:cc:00:00:00\", code: \"G{n}\"}\n"
    msg = _error(text)
    assert msg.startswith("fleet.yaml:10: tenants[0].gateway_groups[0].mac_start (gateway 1 of the group: G2): "
                          "duplicate MAC aa:bb:cc:00:00:01 (also at line 5")


def test_group_code_without_n_collides() -> None:
    text = BASE + "    gateway_groups:\n      - {count: 2, mac_start: \"aa:bb:cc:00:01:00\", code: \"SAME\"}\n"
    assert "duplicate gateway code SAME (also at line 10" in _error(text)


def test_duplicate_tenant_code() -> None:
    text = BASE + "  - code: acme\n    name: Again\n"
    assert _error(text) == "fleet.yaml:9: tenants[1].code: duplicate tenant code 'acme' (also at line 2)"


def test_more_than_eight_devices() -> None:
    devices = "".join(f"          - {{code: D{i:02d}, slave_id: {i}, register: 0, unit: kWh}}\n" for i in range(1, 10))
    text = BASE.split("          - {code: D01")[0] + devices
    assert _error(text) == "fleet.yaml:7: tenants[0].gateways[0].devices: at most 8 devices per gateway, got 9"


def test_unknown_unit() -> None:
    text = BASE.replace("unit: kWh", "unit: kwh")
    msg = _error(text)
    assert msg.startswith("fleet.yaml:8: tenants[0].gateways[0].devices[0].unit: expected one of ")
    assert msg.endswith("got 'kwh' (did you mean 'kWh'?)")


def test_duplicate_device_and_overlapping_registers() -> None:
    dup = BASE + "          - {code: D01, slave_id: 2, register: 0, unit: kWh}\n"
    assert _error(dup) == "fleet.yaml:9: tenants[0].gateways[0].devices[1]: duplicate device code 'D01' (line 8)"
    overlap = BASE.replace("register: 0, unit", "register: 0, data_type: uint32, unit") + \
        "          - {code: D02, slave_id: 1, register: 1, unit: kWh}\n"
    assert "devices[1]: device 'D02' reads slave 1 register 1 (uint16), overlapping device 'D01' (line 8)" \
        in _error(overlap)


def test_register_range_depends_on_width() -> None:
    text = BASE.replace("register: 0, unit", "register: 65535, data_type: float32, unit")
    assert "devices[0].register: expected an integer from 0 to 65534, got 65535" in _error(text)


def test_unknown_key_in_gateway() -> None:
    text = BASE.replace("        code: GW-0001", "        code: GW-0001\n        payload: v1")
    assert "fleet.yaml:7: tenants[0].gateways[0].payload: unknown key (did you mean 'payload_format'?)" in _error(text)


def test_missing_tenants() -> None:
    assert _error("gateway_templates: {}\n") == "fleet.yaml:1: missing required key 'tenants'"
