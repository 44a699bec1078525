"""Measurement units the platform accepts (exact spelling, case-sensitive: "kWh" is not "KWH")."""

from __future__ import annotations

__all__ = ["KNOWN_UNITS"]

KNOWN_UNITS: frozenset[str] = frozenset(
    {"kWh", "Wh", "MWh", "kW", "W", "kvarh", "V", "A", "Hz", "m³", "L", "°C", "°F", "%", "bar", "kPa"}
)
