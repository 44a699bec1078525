"""Telemetry -> (topic, payload). Used by firmware, simulators and tests, so inputs are validated:
anything :func:`~tds_core.protocol.decode` would reject raises ValueError here instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime

from .errors import show
from .model import DEFAULT_LIMITS, Reading
from .timestamps import format_offset, format_utc
from .topics import is_device_code, legacy_topic, normalize_mac, v1_topic
from .units import KNOWN_UNITS

__all__ = ["encode_legacy", "encode_v1"]


def _dumps(doc: dict) -> bytes:
    payload = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    if len(payload) > DEFAULT_LIMITS.max_payload_bytes:
        raise ValueError(f"payload: {len(payload)} bytes, more than {DEFAULT_LIMITS.max_payload_bytes}")
    return payload


def _check_reading(path: str, reading: object) -> Reading:
    if not isinstance(reading, Reading):
        raise ValueError(f"{path}: expected a Reading, got {show(reading)}")
    if not is_device_code(reading.device_code):
        raise ValueError(f"{path}.device_code: {show(reading.device_code)} is not 1-32 characters of A-Z a-z 0-9 _ . -")
    value = reading.value
    if type(value) is bool or not isinstance(value, (int, float)):
        raise ValueError(f"{path}.value: expected a finite number, got {show(value)}")
    try:
        finite = math.isfinite(value)
    except OverflowError:
        finite = False
    if not finite:
        raise ValueError(f"{path}.value: expected a finite number, got {show(value)}")
    if reading.unit not in KNOWN_UNITS:
        raise ValueError(f"{path}.unit: unknown unit {show(reading.unit)}; expected one of {sorted(KNOWN_UNITS)}")
    return reading


def encode_v1(gateway_mac: str, timestamp: datetime, readings: Sequence[Reading]) -> tuple[str, bytes]:
    """Build a v1 message: topic ``tds_new/devices/{mac}/telemetry`` and its compact JSON payload.

    ``timestamp`` must be tz-aware (rendered in UTC with 'Z'); 1-32 readings, one per device, no ``kind``.
    """
    topic = v1_topic(gateway_mac)
    mac = normalize_mac(gateway_mac)
    stamp = format_utc(timestamp)
    if isinstance(readings, Reading) or not isinstance(readings, Sequence):
        raise ValueError(f"readings: expected a sequence of Reading, got {show(readings)}")
    if not readings:
        raise ValueError("readings: empty; a v1 message carries at least one reading")
    if len(readings) > DEFAULT_LIMITS.max_readings:
        raise ValueError(f"readings: {len(readings)} readings, more than {DEFAULT_LIMITS.max_readings}")
    items = []
    seen: dict[str, int] = {}
    for i, reading in enumerate(readings):
        path = f"readings[{i}]"
        _check_reading(path, reading)
        if reading.kind is not None:
            raise ValueError(f"{path}.kind: {show(reading.kind)}; v1 has no 'tipo' field, use kind=None")
        if reading.device_code in seen:
            raise ValueError(
                f"{path}.device_code: {show(reading.device_code)} already in readings[{seen[reading.device_code]}]"
            )
        seen[reading.device_code] = i
        code, value, unit = reading.device_code, float(reading.value), reading.unit
        items.append({"dispositivo_codigo": code, "valor": value, "unidade": unit})
    return topic, _dumps({"gateway_mac": mac, "timestamp": stamp, "leituras": items})


def encode_legacy(gateway_code: str, device_code: str, timestamp: datetime, reading: Reading) -> tuple[str, bytes]:
    """Build a legacy message: topic ``telemetry/{gateway_code}/{device_code}/data`` and its payload.

    ``timestamp`` keeps its own UTC offset on the wire (e.g. -03:00); ``reading.device_code`` must equal
    ``device_code``; ``reading.kind`` becomes ``tipo`` (omitted when None).
    """
    topic = legacy_topic(gateway_code, device_code)
    stamp = format_offset(timestamp)
    _check_reading("reading", reading)
    if reading.device_code != device_code:
        raise ValueError(
            f"reading.device_code: {show(reading.device_code)} differs from device_code {show(device_code)}"
        )
    item: dict[str, object] = {}
    if reading.kind is not None:
        if not isinstance(reading.kind, str) or not reading.kind.isprintable():
            raise ValueError(f"reading.kind: expected a printable string or None, got {show(reading.kind)}")
        item["tipo"] = reading.kind
    item["valor"] = float(reading.value)
    item["unidade"] = reading.unit
    doc = {"gateway_code": gateway_code, "device_code": device_code, "timestamp": stamp, "leituras": [item]}
    return topic, _dumps(doc)
