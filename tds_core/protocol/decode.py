"""Bytes + topic -> :class:`Telemetry`, or a :class:`Rejection` with a stable reason.

Order of checks: size (before any decoding), UTF-8, JSON, top-level object, topic, then fields in
payload order. Any input ends in a Telemetry or a Rejection; nothing else escapes (a bad ``now``
argument, a caller bug, raises ValueError).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

try:  # optional accelerator for the common valid message; every verdict still comes from the stdlib path
    from orjson import JSONDecodeError as _FastJSONError
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - orjson is a declared dependency
    _fast_loads = None

from .errors import Reason, Rejection, show
from .model import DEFAULT_LIMITS, Limits, Reading, Telemetry, _new_reading, _new_telemetry
from .timestamps import parse_timestamp
from .topics import _DEVICE_CODE_RE, normalize_mac, parse_topic
from .units import KNOWN_UNITS

__all__ = ["decode"]

logger = logging.getLogger(__name__)

_INF = float("inf")
_MISSING: Any = object()
_UNITS_HINT = ", ".join(sorted(KNOWN_UNITS))
_device_code_ok = _DEVICE_CODE_RE.fullmatch
# Device codes seen valid ("D01".."D08" repeat across gateways): a set lookup instead of a regex match.
_GOOD_CODES: set[str] = set()
_GOOD_CODES_MAX = 65536


class _NonFinite(Exception):
    """Raised from inside the JSON scanner at the first NaN/Infinity literal or overflowing number."""


def _reject_constant(literal: str) -> float:
    raise _NonFinite(literal)


def _finite_float(literal: str) -> float:
    value = float(literal)
    if value == _INF or value == -_INF:  # "1e999" and 309-digit literals overflow silently
        raise _NonFinite(literal)
    return value


_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_constant=_reject_constant)


def decode(topic: str, payload: bytes, *, now: datetime | None = None, limits: Limits = DEFAULT_LIMITS) -> Telemetry:
    """Decode one telemetry message received on ``topic`` (v1 or legacy).

    ``now`` (tz-aware; default: the current time) anchors the clock-skew window of ``limits``.
    Raises :class:`Rejection` for every bad input, whatever the bytes and the topic.
    """
    if type(payload) is not bytes:
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise Rejection(Reason.WRONG_TYPE, f"payload: expected bytes, got {show(payload)}")
        payload = bytes(payload)
    if len(payload) > limits.max_payload_bytes:
        raise Rejection(
            Reason.PAYLOAD_TOO_LARGE,
            f"payload: {len(payload)} bytes, more than the limit of {limits.max_payload_bytes} bytes",
        )
    if _fast_loads is not None and (telemetry := _decode_fast(topic, payload, now, limits)) is not None:
        return telemetry
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejection(
            Reason.NOT_UTF8,
            f"payload: byte 0x{payload[exc.start]:02x} at offset {exc.start} is not valid UTF-8 ({exc.reason})",
        ) from None
    doc = _parse_json(text)
    if type(doc) is not dict:
        raise Rejection(Reason.NOT_AN_OBJECT, f"payload: expected a JSON object, got {show(doc)}")
    info = parse_topic(topic)
    if info.kind == "v1":
        return _decode_v1(info.mac, doc, now, limits)
    if info.kind == "legacy":
        return _decode_legacy(info.gateway_code, info.device_code, doc, now, limits)
    raise Rejection(
        Reason.BAD_TOPIC,
        f"topic {show(topic)}: a {info.kind} topic carries no telemetry; "
        "expected tds_new/devices/{mac}/telemetry or telemetry/{gateway}/{device}/data",
    )


# Fast path: orjson (UTF-8 check and parse in one C call, ~5x the stdlib with our float hook) for a v1
# message whose every reading is the plain valid shape. It only ever ACCEPTS: anything else (a parse
# error, another topic, any Rejection, an unusual reading) returns None and the message goes through the
# stdlib path from the start, so every rejection reason and detail is the stdlib path's. Where the two
# parsers differ on input orjson accepts: an integer beyond 64 bits becomes a float in orjson (the stdlib
# keeps an int, which the decoder then converts to the same float, or rejects past 4,300 digits; orjson
# calls those infinite and fails) and the stdlib fails on nesting orjson takes (up to 1,024 levels); the
# opener count below keeps deep documents off the fast path.
_FAST_MAX_OPENERS = 64  # '{' + '[' in the payload; a valid v1 message has readings + 2 (at most 34)


def _decode_fast(topic: str, payload: bytes, now: datetime | None, limits: Limits) -> Telemetry | None:
    if payload.count(b"{") + payload.count(b"[") > _FAST_MAX_OPENERS:
        return None
    try:
        doc = _fast_loads(payload)
    except _FastJSONError:
        return None
    if type(doc) is not dict:
        return None
    try:
        info = parse_topic(topic)
        if info.kind != "v1":
            return None
        return _decode_v1(info.mac, doc, now, limits, strict=True)
    except Rejection:
        return None


def _parse_json(text: str) -> Any:
    try:
        return _DECODER.decode(text)
    except _NonFinite as exc:
        raise Rejection(Reason.NON_FINITE, _locate_non_finite(text, exc.args[0])) from None
    except RecursionError:
        raise Rejection(Reason.MALFORMED_JSON, "payload: JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        near = exc.doc[max(0, exc.pos - 10) : exc.pos + 10]
        raise Rejection(
            Reason.MALFORMED_JSON,
            f"payload: {exc.msg} at line {exc.lineno} column {exc.colno} (near {show(near)})",
        ) from None
    except ValueError as exc:  # e.g. an integer literal longer than Python's 4300-digit limit
        raise Rejection(Reason.MALFORMED_JSON, f"payload: {exc}") from None


class _Literal:
    """Stand-in for a non-finite literal while we look for where it sits (rejection path only)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _locate_non_finite(text: str, literal: str) -> str:
    """Build the detail for a non-finite number: re-parse with markers and report its field path."""
    marker_float = lambda s: _Literal(s) if float(s) in (_INF, -_INF) else float(s)  # noqa: E731
    decoder = json.JSONDecoder(parse_float=marker_float, parse_constant=_Literal)
    expect = f"expected a finite number, got {literal} (JSON has no NaN or infinities)"
    try:
        doc = decoder.decode(text)
    except (ValueError, RecursionError):  # a later syntax error: the literal is still the first problem
        return f"payload: {expect}"
    stack: list[tuple[str, Any]] = [("", doc)]  # iterative: the document may be deep
    while stack:
        path, node = stack.pop()
        if isinstance(node, _Literal):
            return f"{path or 'payload'}: {expect}"
        if isinstance(node, dict):
            stack.extend((f"{path}.{k}" if path else k, v) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(node))))
    return f"payload: {expect}"


# ---- fields -------------------------------------------------------------------------------------------


def _field(doc: dict, name: str, path: str = "") -> Any:
    value = doc.get(name, _MISSING)
    if value is _MISSING:
        where = f"{path}: " if path else ""
        raise Rejection(Reason.MISSING_FIELD, f"{where}missing field {name!r}")
    return value


def _string(doc: dict, name: str, what: str, path: str = "") -> str:
    value = _field(doc, name, path)
    if type(value) is not str:
        raise Rejection(Reason.WRONG_TYPE, f"{path + '.' if path else ''}{name}: expected {what}, got {show(value)}")
    return value


def _timestamp(doc: dict, now: datetime | None, limits: Limits) -> datetime:
    raw = _field(doc, "timestamp")
    ts = parse_timestamp("timestamp", raw)
    skew, max_age = limits.max_future_skew, limits.max_age
    if skew is None and max_age is None:
        return ts
    if now is None:
        now = datetime.now(UTC)
    elif now.utcoffset() is None:
        raise ValueError("decode(now=...): now must be timezone-aware")
    ahead = ts - now
    if skew is not None and ahead > skew:
        raise Rejection(
            Reason.CLOCK_SKEW,
            f"timestamp: {show(raw)} is {ahead} ahead of the server clock ({now.isoformat()}); "
            f"at most {skew} is allowed",
        )
    if max_age is not None and -ahead > max_age:
        raise Rejection(
            Reason.CLOCK_SKEW,
            f"timestamp: {show(raw)} is {-ahead} older than the server clock ({now.isoformat()}); "
            f"at most {max_age} is allowed",
        )
    return ts


def _readings(doc: dict, max_readings: int, legacy: bool) -> list:
    items = _field(doc, "leituras")
    if type(items) is not list:
        raise Rejection(Reason.WRONG_TYPE, f"leituras: expected an array of readings, got {show(items)}")
    if not items:
        raise Rejection(Reason.NO_READINGS, "leituras: [] (empty array); expected at least one reading")
    if legacy and len(items) != 1:
        raise Rejection(
            Reason.TOO_MANY_READINGS,
            f"leituras: {len(items)} readings; a legacy message carries exactly one "
            "(its topic names one device and the store keeps one value per device and time)",
        )
    if len(items) > max_readings:
        raise Rejection(
            Reason.TOO_MANY_READINGS, f"leituras: {len(items)} readings, more than the limit of {max_readings}"
        )
    return items


def _value_and_unit(item: dict, path: str) -> tuple[float, str]:
    value = _field(item, "valor", path)
    kind = type(value)
    if kind is not float:
        if kind is not int:  # bool is not int here: type() is exact
            raise Rejection(Reason.WRONG_TYPE, f"{path}.valor: expected a finite number, got {show(value)}")
        try:
            value = float(value)
        except OverflowError:
            raise Rejection(
                Reason.NON_FINITE, f"{path}.valor: expected a finite number, got {show(value)} (overflows a float)"
            ) from None
    unit = _field(item, "unidade", path)
    if type(unit) is not str:
        raise Rejection(Reason.WRONG_TYPE, f"{path}.unidade: expected a unit string, got {show(unit)}")
    if unit not in KNOWN_UNITS:
        raise Rejection(
            Reason.UNKNOWN_UNIT, f"{path}.unidade: unknown unit {show(unit)}; expected one of {_UNITS_HINT}"
        )
    return value, unit


def _check_device_code(code: object, path: str) -> str:
    if type(code) is not str:
        raise Rejection(Reason.WRONG_TYPE, f"{path}: expected a device code string, got {show(code)}")
    if _device_code_ok(code) is None:
        raise Rejection(Reason.BAD_DEVICE_CODE, f"{path}: {show(code)} is not 1-32 characters of A-Z a-z 0-9 _ . -")
    return code


def _decode_v1(
    topic_mac: str, doc: dict, now: datetime | None, limits: Limits, strict: bool = False
) -> Telemetry | None:
    """The v1 fields of a parsed payload. ``strict`` (the orjson fast path): None for any reading off the
    plain valid shape, instead of validating it field by field."""
    raw_mac = _string(doc, "gateway_mac", "a MAC address string")
    if raw_mac != topic_mac:  # fast path: firmware sends the canonical form used in its topic
        try:
            mac = normalize_mac(raw_mac)
        except ValueError:
            raise Rejection(
                Reason.BAD_MAC, f"gateway_mac: {show(raw_mac)} is not six hex pairs like aa:bb:cc:dd:ee:ff"
            ) from None
        if mac != topic_mac:
            raise Rejection(
                Reason.MAC_MISMATCH,
                f"gateway_mac: {show(raw_mac)} differs from the MAC in the topic ({topic_mac})",
            )
    ts = _timestamp(doc, now, limits)
    readings = []
    seen: dict[str, int] = {}  # device code -> index, to name the first occurrence of a duplicate
    for i, item in enumerate(_readings(doc, limits.max_readings, legacy=False)):
        # Fast path for the common, valid reading; anything unusual goes to _v1_reading for a precise verdict.
        if type(item) is dict:
            code = item.get("dispositivo_codigo")
            value = item.get("valor")
            unit = item.get("unidade")
            if (
                type(code) is str
                and type(value) is float  # the JSON hook already refused non-finite floats
                and type(unit) is str
                and unit in KNOWN_UNITS
                and code not in seen
                and (code in _GOOD_CODES or _remember_code(code))
            ):
                seen[code] = i
                readings.append(_new_reading(code, value, unit, None))
                continue
        if strict:
            return None
        readings.append(_v1_reading(item, i, seen))
    return _new_telemetry("v1", ts, tuple(readings), topic_mac, None)


def _remember_code(code: str) -> bool:
    """True (and cached) if ``code`` is a valid device code; the cache is bounded by clearing it."""
    if _device_code_ok(code) is None:
        return False
    if len(_GOOD_CODES) >= _GOOD_CODES_MAX:
        _GOOD_CODES.clear()
    _GOOD_CODES.add(code)
    return True


def _v1_reading(item: object, i: int, seen: dict[str, int]) -> Reading:
    """Validate one v1 reading field by field (slow path): raise the first problem, or return it."""
    path = f"leituras[{i}]"
    if type(item) is not dict:
        raise Rejection(Reason.WRONG_TYPE, f"{path}: expected a reading object, got {show(item)}")
    code = _check_device_code(_field(item, "dispositivo_codigo", path), path + ".dispositivo_codigo")
    if code in seen:
        raise Rejection(
            Reason.DUPLICATE_DEVICE,
            f"{path}.dispositivo_codigo: {show(code)} already appears in leituras[{seen[code]}]; "
            "one reading per device per message",
        )
    value, unit = _value_and_unit(item, path)
    seen[code] = i
    return _new_reading(code, value, unit, None)


def _decode_legacy(topic_gateway: str, topic_device: str, doc: dict, now: datetime | None, limits: Limits) -> Telemetry:
    gateway_code = _string(doc, "gateway_code", "a gateway code string")
    if gateway_code != topic_gateway:
        raise Rejection(
            Reason.GATEWAY_MISMATCH,
            f"gateway_code: {show(gateway_code)} differs from the gateway code in the topic ({topic_gateway})",
        )
    device_code = _string(doc, "device_code", "a device code string")
    if device_code != topic_device:
        raise Rejection(
            Reason.DEVICE_MISMATCH,
            f"device_code: {show(device_code)} differs from the device code in the topic ({topic_device})",
        )
    ts = _timestamp(doc, now, limits)
    (item,) = _readings(doc, limits.max_readings, legacy=True)
    path = "leituras[0]"
    if type(item) is not dict:
        raise Rejection(Reason.WRONG_TYPE, f"{path}: expected a reading object, got {show(item)}")
    kind = item.get("tipo")
    if kind is not None and (type(kind) is not str or not kind.isprintable()):
        raise Rejection(Reason.WRONG_TYPE, f"{path}.tipo: expected a printable string, got {show(kind)}")
    value, unit = _value_and_unit(item, path)
    return _new_telemetry("legacy", ts, (_new_reading(device_code, value, unit, kind),), None, gateway_code)
