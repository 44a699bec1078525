"""Durations on the command line: `730d`, `2y`, `12h`, `90m`, `30s`, `4w`."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdwy])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_duration(text: str, *, name: str = "duration") -> timedelta:
    """Parse `<integer><unit>` (units s, m, h, d, w, y = 365 days) into a positive timedelta.

    Raises ValueError naming `name`, the value and what was expected.
    """
    match = _DURATION.match(text or "")
    if not match:
        raise ValueError(
            f"{name}: expected a duration like 730d, 2y or 12h (integer and one of s, m, h, d, w, y), got {text!r}"
        )
    amount = int(match[1])
    if amount <= 0:
        raise ValueError(f"{name}: expected a positive duration, got {text!r}")
    return timedelta(seconds=amount * _UNIT_SECONDS[match[2]])


def format_duration(value: timedelta) -> str:
    """The shortest exact `<integer><unit>` spelling of `value` (inverse of parse_duration)."""
    seconds = int(value.total_seconds())
    for unit in ("y", "w", "d", "h", "m"):
        if seconds and seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"
