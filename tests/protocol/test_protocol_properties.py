"""Property tests: decode raises nothing but Rejection, whatever it is fed; valid telemetry round-trips."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from _protocol_samples import LEGACY_TOPIC, NOW, V1_TOPIC, legacy_doc, v1_doc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tds_core.protocol import KNOWN_UNITS, Reading, Rejection, Telemetry, decode, encode_legacy, encode_v1
from tds_core.protocol.model import Limits

# Bounded runs: the whole file stays within a few seconds. No deadline: CI machines are shared.
BOUNDED = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
UNBOUNDED_CLOCK = Limits(max_future_skew=None, max_age=None)

any_text = st.text(st.characters(codec=None, categories=None))  # includes lone surrogates and NUL
valid_topics = st.sampled_from(
    [
        V1_TOPIC,
        LEGACY_TOPIC,
        "tds_new/devices/AA-BB-CC-DD-EE-FF/telemetry",
        "tds_new/devices/aa:bb:cc:dd:ee:ff/status",
        "tds_new/devices/aa:bb:cc:dd:ee:ff/commands/ota",
    ]
)
topics = valid_topics | any_text | st.builds("/".join, st.lists(any_text | valid_topics, max_size=6))

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()  # NaN and infinities too: json.dumps writes them as NaN / Infinity literals
    | any_text
    | st.sampled_from(["2026-02-18T14:30:00Z", "aa:bb:cc:dd:ee:ff", "D01", "kWh", "GW-TEST-001"])
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=20,
)


def decode_or_reject(topic: Any, payload: Any, **kwargs: Any) -> Telemetry | Rejection:
    """Decode; a Rejection is a fine outcome, any other exception fails the test."""
    try:
        return decode(topic, payload, **kwargs)
    except Rejection as rej:
        assert isinstance(rej.reason, str) and rej.reason
        rej.detail.encode("utf-8")  # storable as PostgreSQL text
        assert "\x00" not in rej.detail
        return rej


@BOUNDED
@given(topic=topics, payload=st.binary(max_size=600))
def test_arbitrary_bytes_and_topics_raise_only_rejection(topic: str, payload: bytes) -> None:
    decode_or_reject(topic, payload, now=NOW)


@BOUNDED
@given(topic=topics, doc=json_values)
def test_arbitrary_json_documents_raise_only_rejection(topic: str, doc: Any) -> None:
    decode_or_reject(topic, json.dumps(doc).encode("utf-8", "surrogatepass"), now=NOW)


V1_FIELDS = [("gateway_mac",), ("timestamp",), ("leituras",), ("leituras", 0), ("leituras", 1)] + [
    ("leituras", i, f) for i in (0, 2) for f in ("dispositivo_codigo", "valor", "unidade", "extra")
]
LEGACY_FIELDS = [("gateway_code",), ("device_code",), ("timestamp",), ("leituras",), ("leituras", 0)] + [
    ("leituras", 0, f) for f in ("tipo", "valor", "unidade")
]


def _place(doc: dict[str, Any], path: tuple, value: Any) -> dict[str, Any]:
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


@BOUNDED
@given(
    target=st.sampled_from([("v1", p) for p in V1_FIELDS] + [("legacy", p) for p in LEGACY_FIELDS]),
    value=json_values,
    ensure_ascii=st.booleans(),
)
def test_arbitrary_values_in_payload_fields_raise_only_rejection(
    target: tuple[str, tuple], value: Any, ensure_ascii: bool
) -> None:
    kind, path = target
    doc = _place(v1_doc() if kind == "v1" else legacy_doc(), path, value)
    payload = json.dumps(doc, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")
    result = decode_or_reject(V1_TOPIC if kind == "v1" else LEGACY_TOPIC, payload, now=NOW)
    if isinstance(result, Telemetry):  # anything accepted must satisfy the model's invariants
        assert result.timestamp.tzinfo is UTC
        for reading in result.readings:
            assert type(reading.value) is float and math.isfinite(reading.value)
            assert reading.unit in KNOWN_UNITS


# ---- round trips -------------------------------------------------------------------------------------

CODE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
device_codes = st.text(CODE_CHARS, min_size=1, max_size=32)
values = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53)
units = st.sampled_from(sorted(KNOWN_UNITS))
offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
timestamps = st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets)
gateway_codes = st.text(
    st.characters(exclude_characters="/+#\x00", exclude_categories=("Cs",)), min_size=1, max_size=64
)
kinds = st.none() | st.text(max_size=20).filter(str.isprintable)
macs = st.binary(min_size=6, max_size=6).flatmap(
    lambda b: st.sampled_from([":".join(f"{x:02x}" for x in b), "-".join(f"{x:02X}" for x in b)])
)


@BOUNDED
@given(
    mac=macs,
    ts=timestamps,
    readings=st.lists(
        st.builds(Reading, device_codes, values, units), min_size=1, max_size=32, unique_by=lambda r: r.device_code
    ),
)
def test_v1_round_trip(mac: str, ts: datetime, readings: list[Reading]) -> None:
    topic, payload = encode_v1(mac, ts, readings)
    decoded = decode(topic, payload, limits=UNBOUNDED_CLOCK)
    assert decoded == Telemetry("v1", ts, tuple(readings), mac.lower().replace("-", ":"), None)
    assert decoded.timestamp.tzinfo is UTC


@BOUNDED
@given(gateway=gateway_codes, device=device_codes, ts=timestamps, value=values, unit=units, kind=kinds)
def test_legacy_round_trip(gateway: str, device: str, ts: datetime, value: float, unit: str, kind: str | None) -> None:
    reading = Reading(device, value, unit, kind)
    topic, payload = encode_legacy(gateway, device, ts, reading)
    decoded = decode(topic, payload, limits=UNBOUNDED_CLOCK)
    assert decoded == Telemetry("legacy", ts, (reading,), None, gateway)
    assert decoded.timestamp.utcoffset() == timedelta(0)
