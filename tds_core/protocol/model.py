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
