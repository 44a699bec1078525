"""Durations in scenario files: `500ms`, `30s`, `10m`, `1h30m`, `2d`, `4w` (and `0s` for offsets)."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
EXPECTED = "a duration like 10m, 30s, 1h30m or 2d"


def parse_duration(value: object, *, allow_zero: bool = False) -> timedelta:
    """Parse a duration string; ValueError when it is not one (or is zero and `allow_zero` is false)."""
    if not isinstance(value, str):
        raise ValueError(value)
    text = value.strip().replace(" ", "")
    pos, total = 0, 0.0
    while pos < len(text):
        match = _PART.match(text, pos)
        if not match:
            raise ValueError(value)
        total += float(match[1]) * _SECONDS[match[2]]
        pos = match.end()
    if not text or (total <= 0 and not allow_zero):
        raise ValueError(value)
    return timedelta(seconds=total)


def format_duration(value: timedelta) -> str:
    """A compact spelling (`1h30m`, `45s`, `250ms`) for reports and messages."""
    ms = round(value.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    out, rest = [], ms
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out)
