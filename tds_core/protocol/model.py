"""Decoded message model (plain frozen dataclasses: cheap to build on the hot path) and decoder limits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

__all__ = ["DEFAULT_LIMITS", "Limits", "Reading", "Telemetry"]


@dataclass(frozen=True, slots=True)
class Reading:
    """One measured value of one device. ``kind`` is the legacy ``tipo`` (e.g. "energia"); None in v1."""

    device_code: str
    value: float
    unit: str
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class Telemetry:
    """One decoded telemetry message.

    ``timestamp`` is tz-aware UTC. v1 messages carry ``gateway_mac`` (lower-case, colons) and no
    ``gateway_code``; legacy messages carry ``gateway_code`` and no ``gateway_mac``.
    """

    format: Literal["v1", "legacy"]
    timestamp: datetime
    readings: tuple[Reading, ...]
    gateway_mac: str | None
    gateway_code: str | None


@dataclass(frozen=True, slots=True)
class Limits:
    """Decoder bounds. ``None`` disables a time bound.

    ``max_age`` is generous because gateways store and forward readings after an outage.
    Legacy messages always carry exactly one reading, whatever ``max_readings`` says.
    """

    max_payload_bytes: int = 16384
    max_readings: int = 32
    max_future_skew: timedelta | None = timedelta(minutes=5)
    max_age: timedelta | None = timedelta(days=400)


DEFAULT_LIMITS = Limits()


# Hot-path constructors for the decoder, on values it has already validated. A frozen dataclass'
# generated __init__ goes through object.__setattr__ per field and costs ~3x more than writing the
# slots directly; 8 readings per message make that a large share of decode(). Same result as cls(...);
# tests/protocol pin that they cover every field.
_new = object.__new__
_r_code, _r_value, _r_unit, _r_kind = (getattr(Reading, f).__set__ for f in ("device_code", "value", "unit", "kind"))
_t_format, _t_ts, _t_readings, _t_mac, _t_code = (
    getattr(Telemetry, f).__set__ for f in ("format", "timestamp", "readings", "gateway_mac", "gateway_code")
)


def _new_reading(device_code: str, value: float, unit: str, kind: str | None) -> Reading:
    obj = _new(Reading)
    _r_code(obj, device_code)
    _r_value(obj, value)
    _r_unit(obj, unit)
    _r_kind(obj, kind)
    return obj


def _new_telemetry(
    format: str, timestamp: datetime, readings: tuple[Reading, ...], gateway_mac: str | None, gateway_code: str | None
) -> Telemetry:
    obj = _new(Telemetry)
    _t_format(obj, format)
    _t_ts(obj, timestamp)
    _t_readings(obj, readings)
    _t_mac(obj, gateway_mac)
    _t_code(obj, gateway_code)
    return obj
