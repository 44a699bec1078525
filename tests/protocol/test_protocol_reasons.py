"""Every decode reason code: a message that triggers it, and a detail naming the field and the value."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from _protocol_samples import LEGACY_TOPIC, MAC, NOW, V1_TOPIC, dumps, legacy_doc, v1_doc

from tds_core.protocol import DEFAULT_LIMITS, Limits, Reason, Rejection, decode

INGEST_REASONS = {
    Reason.UNKNOWN_GATEWAY,
    Reason.UNKNOWN_DEVICE,
    Reason.UNIT_MISMATCH,
    Reason.GATEWAY_REVOKED,
    Reason.IDENTITY_MISMATCH,
}


def v1(mutate: Callable[[dict[str, Any]], object]) -> bytes:
    doc = v1_doc()
    mutate(doc)
    return dumps(doc)


def legacy(mutate: Callable[[dict[str, Any]], object]) -> bytes:
    doc = legacy_doc()
    mutate(doc)
    return dumps(doc)


def reading(i: int, **fields: object) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        doc["leituras"][i].update(fields)

    return mutate


def drop(*path: str | int) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        node: Any = doc
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return mutate


def setf(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc.__setitem__(key, value)


def many(n: int) -> list[dict[str, Any]]:
    return [{"dispositivo_codigo": f"D{i:02d}", "valor": float(i), "unidade": "kWh"} for i in range(n)]


# (id, topic, payload, expected reason, substrings the detail must contain: field path and value)
CASES: list[tuple[str, str, bytes, Reason, list[str]]] = [
    ("too-large", V1_TOPIC, b" " * 16385, Reason.PAYLOAD_TOO_LARGE, ["payload", "16385 bytes", "16384"]),
    ("too-large-before-utf8", V1_TOPIC, b"\xff" * 20000, Reason.PAYLOAD_TOO_LARGE, ["20000 bytes"]),
    ("not-utf8", V1_TOPIC, b'{"gateway_mac":"\xff"}', Reason.NOT_UTF8, ["payload", "0xff", "offset 16"]),
    ("utf16", V1_TOPIC, '{"a":1}'.encode("utf-16"), Reason.NOT_UTF8, ["payload", "offset 0"]),
    ("truncated", V1_TOPIC, b'{"gateway_mac":', Reason.MALFORMED_JSON, ["payload", "line 1 column 16"]),
    ("trailing", V1_TOPIC, b'{"a":1} x', Reason.MALFORMED_JSON, ["payload", "Extra data"]),
    ("deep", V1_TOPIC, b"[" * 6000 + b"]" * 6000, Reason.MALFORMED_JSON, ["payload", "nested too deeply"]),
    ("empty", V1_TOPIC, b"", Reason.MALFORMED_JSON, ["payload"]),
    ("array", V1_TOPIC, b"[1,2]", Reason.NOT_AN_OBJECT, ["payload", "[1, 2] (array)"]),
    ("string", V1_TOPIC, b'"hi"', Reason.NOT_AN_OBJECT, ["payload", '"hi" (string)']),
    ("no-timestamp", V1_TOPIC, v1(drop("timestamp")), Reason.MISSING_FIELD, ["'timestamp'"]),
    ("no-mac", V1_TOPIC, v1(drop("gateway_mac")), Reason.MISSING_FIELD, ["'gateway_mac'"]),
    ("no-leituras", V1_TOPIC, v1(drop("leituras")), Reason.MISSING_FIELD, ["'leituras'"]),
    ("no-unidade", V1_TOPIC, v1(drop("leituras", 1, "unidade")), Reason.MISSING_FIELD, ["leituras[1]", "'unidade'"]),
    ("no-valor", V1_TOPIC, v1(drop("leituras", 2, "valor")), Reason.MISSING_FIELD, ["leituras[2]", "'valor'"]),
    (
        "no-code",
        V1_TOPIC,
        v1(drop("leituras", 0, "dispositivo_codigo")),
        Reason.MISSING_FIELD,
        ["leituras[0]", "'dispositivo_codigo'"],
    ),
    ("legacy-no-device", LEGACY_TOPIC, legacy(drop("device_code")), Reason.MISSING_FIELD, ["'device_code'"]),
    (
        "valor-string",
        V1_TOPIC,
        v1(reading(2, valor="12.5")),
        Reason.WRONG_TYPE,
        ['leituras[2].valor: expected a finite number, got "12.5" (string)'],
    ),
    ("valor-bool", V1_TOPIC, v1(reading(0, valor=True)), Reason.WRONG_TYPE, ["leituras[0].valor", "true (boolean)"]),
    ("valor-null", V1_TOPIC, v1(reading(1, valor=None)), Reason.WRONG_TYPE, ["leituras[1].valor", "null"]),
    ("unit-number", V1_TOPIC, v1(reading(0, unidade=3)), Reason.WRONG_TYPE, ["leituras[0].unidade", "3 (number)"]),
    ("code-list", V1_TOPIC, v1(reading(0, dispositivo_codigo=[1])), Reason.WRONG_TYPE, ["dispositivo_codigo", "[1]"]),
    ("mac-number", V1_TOPIC, v1(setf("gateway_mac", 42)), Reason.WRONG_TYPE, ["gateway_mac", "42 (number)"]),
    ("ts-number", V1_TOPIC, v1(setf("timestamp", 1771425000)), Reason.WRONG_TYPE, ["timestamp", "1771425000"]),
    ("leituras-object", V1_TOPIC, v1(setf("leituras", {})), Reason.WRONG_TYPE, ["leituras", "{} (object)"]),
    ("reading-string", V1_TOPIC, v1(setf("leituras", ["x"])), Reason.WRONG_TYPE, ["leituras[0]", '"x" (string)']),
    ("tipo-number", LEGACY_TOPIC, legacy(reading(0, tipo=5)), Reason.WRONG_TYPE, ["leituras[0].tipo", "5 (number)"]),
    ("gw-code-number", LEGACY_TOPIC, legacy(setf("gateway_code", 1)), Reason.WRONG_TYPE, ["gateway_code", "1"]),
    (
        "nan",
        V1_TOPIC,
        dumps(v1_doc()).replace(b"123.45", b"NaN"),
        Reason.NON_FINITE,
        ["leituras[0].valor", "NaN"],
    ),
    (
        "minus-infinity",
        V1_TOPIC,
        dumps(v1_doc()).replace(b"-3.5", b"-Infinity"),
        Reason.NON_FINITE,
        ["leituras[2].valor", "-Infinity"],
    ),
    (
        "overflow-float",
        V1_TOPIC,
        dumps(v1_doc()).replace(b"123.45", b"1e999"),
        Reason.NON_FINITE,
        ["leituras[0].valor", "1e999"],
    ),
    (
        "nan-elsewhere",
        V1_TOPIC,
        dumps(v1_doc())[:-1] + b',"extra":{"x":[0,Infinity]}}',
        Reason.NON_FINITE,
        ["extra.x[1]", "Infinity"],
    ),
    (
        "overflow-int",
        V1_TOPIC,
        v1(reading(1, valor=10**400)),
        Reason.NON_FINITE,
        ["leituras[1].valor", "overflows"],
    ),
    ("ts-garbage", V1_TOPIC, v1(setf("timestamp", "yesterday")), Reason.BAD_TIMESTAMP, ["timestamp", '"yesterday"']),
    (
        "ts-feb-30",
        V1_TOPIC,
        v1(setf("timestamp", "2026-02-30T00:00:00Z")),
        Reason.BAD_TIMESTAMP,
        ["timestamp", '"2026-02-30T00:00:00Z"', "day is out of range"],
    ),
    (
        "ts-date-only",
        V1_TOPIC,
        v1(setf("timestamp", "2026-02-18")),
        Reason.BAD_TIMESTAMP,
        ["timestamp", '"2026-02-18"'],
    ),
    (
        "ts-naive",
        V1_TOPIC,
        v1(setf("timestamp", "2026-02-18T14:30:00")),
        Reason.TIMESTAMP_NO_ZONE,
        ["timestamp", '"2026-02-18T14:30:00"'],
    ),
    (
        "ts-future",
        V1_TOPIC,
        v1(setf("timestamp", "2026-02-18T14:40:00Z")),
        Reason.CLOCK_SKEW,
        ["timestamp", '"2026-02-18T14:40:00Z"', "0:10:00 ahead", "0:05:00"],
    ),
    (
        "ts-too-old",
        LEGACY_TOPIC,
        legacy(setf("timestamp", "2025-01-01T00:00:00-03:00")),
        Reason.CLOCK_SKEW,
        ["timestamp", '"2025-01-01T00:00:00-03:00"', "older", "400 days"],
    ),
    ("no-readings", V1_TOPIC, v1(setf("leituras", [])), Reason.NO_READINGS, ["leituras", "[]"]),
    ("legacy-no-readings", LEGACY_TOPIC, legacy(setf("leituras", [])), Reason.NO_READINGS, ["leituras"]),
    ("33-readings", V1_TOPIC, v1(setf("leituras", many(33))), Reason.TOO_MANY_READINGS, ["leituras", "33", "32"]),
    (
        "legacy-two",
        LEGACY_TOPIC,
        legacy(lambda d: d["leituras"].append(dict(d["leituras"][0]))),
        Reason.TOO_MANY_READINGS,
        ["leituras", "2 readings", "exactly one"],
    ),
    (
        "duplicate",
        V1_TOPIC,
        v1(reading(2, dispositivo_codigo="D01")),
        Reason.DUPLICATE_DEVICE,
        ["leituras[2].dispositivo_codigo", '"D01"', "leituras[0]"],
    ),
    (
        "mac-mismatch",
        V1_TOPIC,
        v1(setf("gateway_mac", "AA-BB-CC-DD-EE-00")),
        Reason.MAC_MISMATCH,
        ["gateway_mac", '"AA-BB-CC-DD-EE-00"', MAC],
    ),
    ("bad-mac-payload", V1_TOPIC, v1(setf("gateway_mac", "aa:bb:cc")), Reason.BAD_MAC, ["gateway_mac", '"aa:bb:cc"']),
    (
        "bad-mac-mixed-separators",
        V1_TOPIC,
        v1(setf("gateway_mac", "aa:bb-cc:dd:ee:ff")),
        Reason.BAD_MAC,
        ["gateway_mac", '"aa:bb-cc:dd:ee:ff"'],
    ),
    ("bad-mac-topic", "tds_new/devices/gw-1/telemetry", dumps(v1_doc()), Reason.BAD_MAC, ["topic", '"gw-1"']),
    (
        "bad-code-space",
        V1_TOPIC,
        v1(reading(1, dispositivo_codigo="D 02")),
        Reason.BAD_DEVICE_CODE,
        ["leituras[1].dispositivo_codigo", '"D 02"'],
    ),
    (
        "bad-code-long",
        V1_TOPIC,
        v1(reading(0, dispositivo_codigo="D" * 33)),
        Reason.BAD_DEVICE_CODE,
        ["leituras[0].dispositivo_codigo", "D" * 33],
    ),
    ("bad-code-empty", V1_TOPIC, v1(reading(0, dispositivo_codigo="")), Reason.BAD_DEVICE_CODE, ['""']),
    (
        "bad-code-topic",
        "telemetry/GW-TEST-001/D 01/data",
        dumps(legacy_doc()),
        Reason.BAD_DEVICE_CODE,
        ["topic", '"D 01"'],
    ),
    (
        "unknown-unit",
        V1_TOPIC,
        v1(reading(0, unidade="KWH")),
        Reason.UNKNOWN_UNIT,
        ["leituras[0].unidade", '"KWH"', "kWh"],
    ),
    ("legacy-unit", LEGACY_TOPIC, legacy(reading(0, unidade="")), Reason.UNKNOWN_UNIT, ["leituras[0].unidade", '""']),
    ("topic-unknown", "foo/bar", dumps(v1_doc()), Reason.BAD_TOPIC, ["topic", '"foo/bar"']),
    ("topic-status", f"tds_new/devices/{MAC}/status", dumps(v1_doc()), Reason.BAD_TOPIC, ["status", MAC]),
    (
        "topic-wildcard",
        V1_TOPIC.replace(MAC, "+"),
        dumps(v1_doc()),
        Reason.BAD_TOPIC,
        ["topic", "devices/+/telemetry", "wildcards"],
    ),
    ("topic-legacy-gw-hash", "telemetry/GW#1/D01/data", dumps(legacy_doc()), Reason.BAD_TOPIC, ["GW#1", "wildcards"]),
    ("topic-empty", "", dumps(v1_doc()), Reason.BAD_TOPIC, ['topic ""']),
    (
        "gateway-mismatch",
        LEGACY_TOPIC,
        legacy(setf("gateway_code", "GW-OTHER")),
        Reason.GATEWAY_MISMATCH,
        ["gateway_code", '"GW-OTHER"', "GW-TEST-001"],
    ),
    (
        "device-mismatch",
        LEGACY_TOPIC,
        legacy(setf("device_code", "D02")),
        Reason.DEVICE_MISMATCH,
        ["device_code", '"D02"', "D01"],
    ),
]


@pytest.mark.parametrize(("topic", "payload", "reason", "needles"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rejection_reason_and_detail(topic: str, payload: bytes, reason: Reason, needles: list[str]) -> None:
    with pytest.raises(Rejection) as info:
        decode(topic, payload, now=NOW)
    assert info.value.reason is reason, info.value.detail
    for needle in needles:
        assert needle in info.value.detail, (needle, info.value.detail)


def test_every_decode_reason_has_a_case() -> None:
    covered = {case[3] for case in CASES}
    assert covered == set(Reason) - INGEST_REASONS


def test_reason_values_are_stable() -> None:
    # Stored in dead_letters.reason and used as metric labels: changing one is a migration, not a refactor.
    assert sorted(r.value for r in Reason) == sorted(
        [
            "payload_too_large",
            "not_utf8",
            "malformed_json",
            "not_an_object",
            "missing_field",
            "wrong_type",
            "non_finite",
            "bad_timestamp",
            "timestamp_no_zone",
            "clock_skew",
            "no_readings",
            "too_many_readings",
            "duplicate_device",
            "mac_mismatch",
            "bad_mac",
            "bad_device_code",
            "unknown_unit",
            "bad_topic",
            "gateway_mismatch",
            "device_mismatch",
            "unknown_gateway",
            "unknown_device",
            "unit_mismatch",
            "gateway_revoked",
            "identity_mismatch",
        ]
    )
    assert Reason.BAD_MAC == "bad_mac" and f"{Reason.BAD_MAC}" == "bad_mac"


def test_valid_samples_decode() -> None:
    # The mutations above are meaningful only if the untouched samples pass.
    assert len(decode(V1_TOPIC, dumps(v1_doc()), now=NOW).readings) == 3
    assert decode(LEGACY_TOPIC, dumps(legacy_doc()), now=NOW).readings[0].kind == "energia"


def test_equivalent_mac_spellings_are_accepted() -> None:
    payload = v1(setf("gateway_mac", "AA-BB-CC-DD-EE-FF"))
    topic = "tds_new/devices/AA:BB:CC:DD:EE:FF/telemetry"
    assert decode(topic, payload, now=NOW).gateway_mac == MAC


def test_limits_are_configurable() -> None:
    too_old = v1(setf("timestamp", "2000-01-01T00:00:00Z"))
    future = v1(setf("timestamp", "2030-01-01T00:00:00+01:00"))
    unbounded = Limits(max_future_skew=None, max_age=None)
    assert decode(V1_TOPIC, too_old, now=NOW, limits=unbounded).timestamp.year == 2000
    assert decode(V1_TOPIC, future, now=NOW, limits=unbounded).timestamp.year == 2029  # 00:00+01:00 is 23:00Z
    with pytest.raises(Rejection) as info:
        decode(V1_TOPIC, dumps(v1_doc()), now=NOW, limits=Limits(max_readings=2))
    assert info.value.reason is Reason.TOO_MANY_READINGS and "limit of 2" in info.value.detail
    with pytest.raises(Rejection) as info:
        decode(V1_TOPIC, dumps(v1_doc()), now=NOW, limits=Limits(max_payload_bytes=100))
    assert info.value.reason is Reason.PAYLOAD_TOO_LARGE
    # the window edges themselves are accepted
    edge = v1(setf("timestamp", "2026-02-18T14:35:00Z"))
    assert decode(V1_TOPIC, edge, now=NOW).timestamp == NOW + DEFAULT_LIMITS.max_future_skew
    assert decode(V1_TOPIC, edge, now=NOW + timedelta(days=400, minutes=5)).timestamp.day == 18


def test_default_now_is_the_current_time() -> None:
    # 2026-02-18 is in the past or near present: a timestamp from 1999 is always too old.
    with pytest.raises(Rejection) as info:
        decode(V1_TOPIC, v1(setf("timestamp", "1999-01-01T00:00:00Z")))
    assert info.value.reason is Reason.CLOCK_SKEW


def test_naive_now_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decode(V1_TOPIC, dumps(v1_doc()), now=NOW.replace(tzinfo=None))


@pytest.mark.parametrize("payload", [bytearray(dumps(v1_doc())), memoryview(dumps(v1_doc()))])
def test_bytes_like_payloads(payload: bytes) -> None:
    assert decode(V1_TOPIC, payload, now=NOW).gateway_mac == MAC


@pytest.mark.parametrize("topic", [None, 5, b"tds_new/devices/aa:bb:cc:dd:ee:ff/telemetry"])
def test_non_string_topic(topic: Any) -> None:
    with pytest.raises(Rejection) as info:
        decode(topic, dumps(v1_doc()), now=NOW)
    assert info.value.reason is Reason.BAD_TOPIC and "topic" in info.value.detail


def test_non_bytes_payload() -> None:
    with pytest.raises(Rejection) as info:
        decode(V1_TOPIC, "{}", now=NOW)  # type: ignore[arg-type]
    assert info.value.reason is Reason.WRONG_TYPE and '"{}" (string)' in info.value.detail


def test_detail_truncates_long_values_and_is_storable() -> None:
    payload = v1(reading(0, unidade="x" * 500))
    with pytest.raises(Rejection) as info:
        decode(V1_TOPIC, payload, now=NOW)
    assert "x" * 60 + "…" in info.value.detail and "x" * 61 not in info.value.detail
    # NUL and lone surrogates cannot go into a PostgreSQL text column: the detail escapes them
    with pytest.raises(Rejection) as info:
        decode("bad/\x00/\ud800", dumps(v1_doc()), now=NOW)
    info.value.detail.encode("utf-8")
    assert "\x00" not in info.value.detail


def test_lone_surrogate_in_tipo_is_refused() -> None:
    payload = dumps(legacy_doc()).replace(b'"energia"', b'"\\ud800"')
    with pytest.raises(Rejection) as info:
        decode(LEGACY_TOPIC, payload, now=NOW)
    assert info.value.reason is Reason.WRONG_TYPE and "leituras[0].tipo" in info.value.detail
    info.value.detail.encode("utf-8")


def test_rejection_pickles_and_prints() -> None:
    rej = Rejection(Reason.BAD_MAC, "gateway_mac: x")
    copy = pickle.loads(pickle.dumps(rej))
    assert (copy.reason, copy.detail) == (Reason.BAD_MAC, "gateway_mac: x")
    assert str(rej) == "bad_mac: gateway_mac: x"
