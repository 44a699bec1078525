"""Config loading: valid files, and errors that name file:line and the field path."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.config import ConfigError, load_config

GOOD = """\
mac: "AA-BB-CC-DD-EE-FF"
gateway_code: GW-TEST-001
payload_format: legacy
poll_interval_s: 60
broker:
  url: mqtt://broker.local
modbus:
  port: /dev/ttyUSB0
  baudrate: 19200
meters:
  - code: D01
    slave_id: 1
    register: 0
    data_type: uint16
    scale: 0.01
    unit: kWh
    kind: energy
  - {code: D02, slave_id: 2, register: 10, data_type: float32, word_order: little, unit: "°C", kind: temperature}
"""


def _write(tmp_path: Path, text: str, name: str = "gateway.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _error(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    return info.value.errors


def test_good_config_is_normalised(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, GOOD))
    assert cfg.mac == "aa:bb:cc:dd:ee:ff"
    assert cfg.payload_format == "legacy" and cfg.gateway_code == "GW-TEST-001"
    assert (cfg.broker.host, cfg.broker.port, cfg.broker.tls) == ("broker.local", 1883, False)
    assert cfg.modbus.baudrate == 19200 and cfg.modbus.timeout_s == 5.0 and cfg.modbus.attempts == 3
    assert cfg.modbus.backoff_s == (1.0, 2.0, 4.0)
    assert cfg.queue.max_messages == 10_000
    d1, d2 = cfg.meters
    assert (d1.code, d1.slave_id, d1.register, d1.scale, d1.unit, d1.tipo) == ("D01", 1, 0, 0.01, "kWh", "energia")
    assert (d2.data_type, d2.word_order, d2.scale, d2.unit, d2.tipo) == ("float32", "little", 1.0, "°C", "temperatura")


def test_slave_id_out_of_range_names_file_line_and_path(tmp_path: Path) -> None:
    text = GOOD.replace("slave_id: 1\n", "slave_id: 300\n")
    errors = _error(tmp_path, text)
    line = text.splitlines().index("    slave_id: 300") + 1
    assert errors == [f"{tmp_path / 'gateway.yaml'}:{line}: meters[0].slave_id: expected an integer 1..247, got 300"]


def test_flow_mapping_errors_point_at_their_line(tmp_path: Path) -> None:
    errors = _error(tmp_path, GOOD.replace('unit: "°C"', 'unit: "C"'))
    line = GOOD.splitlines().index(next(x for x in GOOD.splitlines() if "D02" in x)) + 1
    assert len(errors) == 1
    assert errors[0].startswith(f"{tmp_path / 'gateway.yaml'}:{line}: meters[1].unit: expected one of ")
    assert errors[0].endswith("got 'C'")


def test_legacy_requires_gateway_code(tmp_path: Path) -> None:
    errors = _error(tmp_path, GOOD.replace("gateway_code: GW-TEST-001\n", ""))
    assert errors == [f"{tmp_path / 'gateway.yaml'}:2: gateway_code: required when payload_format is legacy"]


def test_every_problem_is_reported(tmp_path: Path) -> None:
    text = (GOOD.replace('"AA-BB-CC-DD-EE-FF"', "nope").replace("url: mqtt://broker.local", "url: http://x")
            .replace("data_type: uint16", "data_type: uint64").replace("poll_interval_s: 60", "poll_interval_s: 0")
            + "colour: blue\n")
    errors = _error(tmp_path, text)
    paths = [e.split(": ")[1] for e in errors]
    assert paths == ["colour", "mac", "poll_interval_s", "broker.url", "meters[0].data_type"], errors
    assert all(e.startswith(f"{tmp_path / 'gateway.yaml'}:") for e in errors)
    assert "got 'uint64'" in errors[-1]


def test_more_than_eight_meters_is_refused(tmp_path: Path) -> None:
    meters = "".join(
        f"  - {{code: D{i:02d}, slave_id: {i}, register: 0, unit: kWh}}\n" for i in range(1, 10)
    )
    head = GOOD.split("meters:")[0]
    errors = _error(tmp_path, head + "meters:\n" + meters)
    assert errors == [f"{tmp_path / 'gateway.yaml'}:11: meters: expected a list of 1..8 meters, got 9 meters"]


def test_duplicate_meter_code(tmp_path: Path) -> None:
    errors = _error(tmp_path, GOOD.replace("code: D02", "code: D01"))
    assert len(errors) == 1 and "meters[1].code: duplicate code 'D01' (also meters[0])" in errors[0]


def test_mqtts_requires_certificates_that_exist(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("x")
    text = GOOD.replace("url: mqtt://broker.local", "url: mqtts://broker.local\n  ca: ca.crt\n  cert: dev.crt")
    errors = _error(tmp_path, text)
    assert [e.split(": ", 1)[1] for e in errors] == [
        f"broker.cert: file not found: {tmp_path / 'dev.crt'}",
        "broker.key: required for mqtts:// (mutual TLS)",
    ]


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    errors = _error(tmp_path, "mac: aa:bb:cc:dd:ee:ff\nmeters: [\n  {code: D01\n")
    assert len(errors) == 1 and errors[0].startswith(f"{tmp_path / 'gateway.yaml'}:")
    assert ": invalid YAML: " in errors[0]
    assert int(errors[0].split(":")[1]) >= 3


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    errors = _error(tmp_path, GOOD + "poll_interval_s: 30\n")
    assert "invalid YAML: duplicate key 'poll_interval_s'" in errors[0]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_overlay_is_validated_like_the_file(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, GOOD))
    assert cfg.with_overlay({"poll_interval_s": 5}).poll_interval_s == 5.0
    with pytest.raises(ConfigError) as info:
        cfg.with_overlay({"poll_interval_s": -1})
    assert info.value.errors == ["command config: poll_interval_s: expected a number >0..86400, got -1"]
    with pytest.raises(ConfigError, match=r"mac: cannot be changed by command"):
        cfg.with_overlay({"mac": "aa:bb:cc:dd:ee:00"})


def test_the_shipped_example_is_valid(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "firmware" / "gateway.example.yaml"
    certs = tmp_path / "certs"
    certs.mkdir()
    for name in ("ca.crt", "device.crt", "device.key"):
        (certs / name).write_text("placeholder")
    cfg = load_config(_write(tmp_path, example.read_text(encoding="utf-8")))
    assert cfg.broker.tls and cfg.broker.port == 8883 and cfg.broker.ca == str(certs / "ca.crt")
    assert [m.code for m in cfg.meters] == ["D01", "D02", "D03"]
    assert cfg.meters[2].function == "input" and cfg.meters[1].unit == "m³"
