"""Encoders: exact wire form, validation of inputs, and decode(encode(x)) == x for both formats."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from _protocol_samples import MAC, NOW

from tds_core.protocol import Reading, Telemetry, decode, encode_legacy, encode_v1
from tds_core.protocol.model import Limits, _new_reading, _new_telemetry

BRT = timezone(timedelta(hours=-3))
UNBOUNDED = Limits(max_future_skew=None, max_age=None)


def test_v1_wire_form() -> None:
    readings = [Reading("D01", 123.45, "kWh"), Reading("D02", 7, "m³")]
    topic, payload = encode_v1("AA-BB-CC-DD-EE-FF", NOW.astimezone(BRT), readings)
    assert topic == f"tds_new/devices/{MAC}/telemetry"
    assert (
        payload
        == (
            '{"gateway_mac":"aa:bb:cc:dd:ee:ff","timestamp":"2026-02-18T14:30:00Z","leituras":['
            '{"dispositivo_codigo":"D01","valor":123.45,"unidade":"kWh"},'
            '{"dispositivo_codigo":"D02","valor":7.0,"unidade":"m³"}]}'
        ).encode()
    )
    assert decode(topic, payload, now=NOW) == Telemetry("v1", NOW, tuple(readings), MAC, None)


def test_legacy_wire_form_keeps_offset() -> None:
    ts = datetime(2026, 2, 18, 11, 30, 0, 250000, tzinfo=BRT)
    reading = Reading("D01", 123.45, "kWh", "energia")
    topic, payload = encode_legacy("GW-TEST-001", "D01", ts, reading)
    assert topic == "telemetry/GW-TEST-001/D01/data"
    assert json.loads(payload) == {
        "gateway_code": "GW-TEST-001",
        "device_code": "D01",
        "timestamp": "2026-02-18T11:30:00.250000-03:00",
        "leituras": [{"tipo": "energia", "valor": 123.45, "unidade": "kWh"}],
    }
    decoded = decode(topic, payload, now=NOW)
    assert decoded == Telemetry("legacy", ts, (reading,), None, "GW-TEST-001")
    assert decoded.timestamp.tzinfo is UTC and decoded.timestamp.hour == 14


def test_legacy_without_kind_omits_tipo() -> None:
    topic, payload = encode_legacy("GW", "D01", NOW, Reading("D01", 1.5, "V"))
    assert b"tipo" not in payload and b"+00:00" in payload
    assert decode(topic, payload, now=NOW).readings == (Reading("D01", 1.5, "V"),)


def test_v1_microseconds_and_offsets_render_in_utc() -> None:
    ts = datetime(2026, 2, 18, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    topic, payload = encode_v1(MAC, ts, [Reading("D01", 0.0, "W")])
    assert b'"timestamp":"2026-02-18T18:29:59.999999Z"' in payload
    assert decode(topic, payload, now=NOW, limits=UNBOUNDED).timestamp == ts


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("nope", NOW, [Reading("D01", 1.0, "kWh")]), "MAC"),
        ((MAC, NOW.replace(tzinfo=None), [Reading("D01", 1.0, "kWh")]), "naive"),
        ((MAC, "2026-02-18T14:30:00Z", [Reading("D01", 1.0, "kWh")]), "expected a datetime"),
        ((MAC, NOW, []), "empty"),
        ((MAC, NOW, Reading("D01", 1.0, "kWh")), "sequence"),
        ((MAC, NOW, [Reading(f"D{i}", 1.0, "kWh") for i in range(33)]), "33 readings"),
        ((MAC, NOW, [Reading("D01", 1.0, "kWh"), Reading("D01", 2.0, "kWh")]), r"readings\[1\].device_code"),
        ((MAC, NOW, [Reading("D 1", 1.0, "kWh")]), r"readings\[0\].device_code"),
        ((MAC, NOW, [Reading("D01", float("nan"), "kWh")]), r"readings\[0\].value.*nan"),
        ((MAC, NOW, [Reading("D01", float("-inf"), "kWh")]), r"readings\[0\].value"),
        ((MAC, NOW, [Reading("D01", 10**400, "kWh")]), r"readings\[0\].value"),
        ((MAC, NOW, [Reading("D01", True, "kWh")]), r"readings\[0\].value.*true"),
        ((MAC, NOW, [Reading("D01", "1.0", "kWh")]), r"readings\[0\].value"),
        ((MAC, NOW, [Reading("D01", 1.0, "KWH")]), r"readings\[0\].unit.*KWH"),
        ((MAC, NOW, [Reading("D01", 1.0, "kWh", "energia")]), r"readings\[0\].kind.*tipo"),
        ((MAC, NOW, ["D01"]), r"readings\[0\]: expected a Reading"),
    ],
)
def test_encode_v1_validates(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode_v1(*args)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("GW/1", "D01", NOW, Reading("D01", 1.0, "kWh")), "gateway code"),
        (("GW", "D01", NOW, Reading("D02", 1.0, "kWh")), "differs"),
        (("GW", "D01", NOW.replace(tzinfo=None), Reading("D01", 1.0, "kWh")), "naive"),
        (("GW", "D01", NOW.replace(tzinfo=timezone(timedelta(seconds=30))), Reading("D01", 1.0, "kWh")), "minutes"),
        (("GW", "D01", NOW, Reading("D01", 1.0, "kWh", "\ud800")), "kind"),
        (("GW", "D01", NOW, Reading("D01", 1.0, "kWh", 5)), "kind"),
        (("GW", "D01", NOW, Reading("D01", float("inf"), "kWh")), "value"),
    ],
)
def test_encode_legacy_validates(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode_legacy(*args)


def test_hot_path_constructors_match_the_dataclasses() -> None:
    # decode builds instances by writing slots directly; they must equal the public constructors' output
    # and cover every field (a field added to the dataclass must be added there too).
    r = _new_reading("D01", 1.0, "kWh", "energia")
    assert r == Reading("D01", 1.0, "kWh", "energia") and hash(r) == hash(Reading("D01", 1.0, "kWh", "energia"))
    t = _new_telemetry("v1", NOW, (r,), MAC, None)
    assert t == Telemetry("v1", NOW, (r,), MAC, None)
    assert Reading.__slots__ == ("device_code", "value", "unit", "kind")
    assert Telemetry.__slots__ == ("format", "timestamp", "readings", "gateway_mac", "gateway_code")
