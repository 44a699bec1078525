"""ISO 8601 timestamps as the wire carries them: parse (zone required) and render."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from .errors import Reason, Rejection, show

__all__ = ["format_offset", "format_utc", "parse_timestamp"]

# Strict shape first (fromisoformat alone also takes week dates, "20260218", bare dates ...).
# ASCII digits only: \d would let Unicode digits through.
_TS_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
    r"(Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?"
)
_EXPECTED = "expected ISO 8601 like 2026-02-18T14:30:00Z or 2026-02-18T15:30:00-03:00"


def parse_timestamp(field: str, value: object) -> datetime:
    """Parse a wire timestamp into an aware UTC datetime; raise :class:`Rejection` naming ``field``."""
    if not isinstance(value, str):
        raise Rejection(Reason.WRONG_TYPE, f"{field}: expected a string timestamp, got {show(value)}")
    try:
        return _parse_cached(value)
    except _BadTimestamp as exc:
        reason, why = exc.args
        raise Rejection(reason, f"{field}: {show(value)} {why}") from None


class _BadTimestamp(Exception):
    """(reason, explanation) from the cached parser; parse_timestamp adds the field name."""


# Gateways publish on aligned polling ticks, so one timestamp string arrives from many gateways:
# caching the successful parses makes the common case a dict lookup. Failures are not cached.
@lru_cache(maxsize=4096)
def _parse_cached(value: str) -> datetime:
    m = _TS_RE.fullmatch(value)
    if m is None:
        raise _BadTimestamp(Reason.BAD_TIMESTAMP, f"is not a timestamp; {_EXPECTED}")
    if m.group(1) is None:
        raise _BadTimestamp(Reason.TIMESTAMP_NO_ZONE, "has no time zone; add 'Z' (UTC) or an offset like -03:00")
    try:
        # 3.11's fromisoformat reads 'Z'; it still checks the calendar (Feb 30, hour 24, second 60)
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:  # OverflowError: year 1 shifted before datetime.min
        raise _BadTimestamp(Reason.BAD_TIMESTAMP, f"is not a valid date/time ({exc})") from None


def _check_aware(timestamp: datetime) -> timedelta:
    if not isinstance(timestamp, datetime):
        raise ValueError(f"timestamp: expected a datetime, got {show(timestamp)}")
    offset = timestamp.utcoffset()
    if offset is None:
        raise ValueError(f"timestamp: {timestamp.isoformat()} is naive; give it a time zone (e.g. UTC)")
    try:
        timestamp.astimezone(UTC)  # the decoder converts to UTC: year 1 at +01:00 would not survive
    except OverflowError:
        raise ValueError(f"timestamp: {timestamp.isoformat()} is outside the range of UTC datetimes") from None
    return offset


def _clock(ts: datetime) -> str:
    text = f"{ts.year:04d}-{ts.month:02d}-{ts.day:02d}T{ts.hour:02d}:{ts.minute:02d}:{ts.second:02d}"
    return f"{text}.{ts.microsecond:06d}" if ts.microsecond else text


def format_utc(timestamp: datetime) -> str:
    """Render an aware datetime in UTC as ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` (ValueError if naive)."""
    _check_aware(timestamp)
    return _clock(timestamp.astimezone(UTC)) + "Z"


def format_offset(timestamp: datetime) -> str:
    """Render an aware datetime with its own offset, ``YYYY-MM-DDTHH:MM:SS[.ffffff]±HH:MM``.

    ValueError if naive or if the offset is not whole minutes (the wire format has no seconds).
    """
    offset = _check_aware(timestamp)
    if offset % timedelta(minutes=1):
        raise ValueError(f"timestamp: UTC offset {offset} is not a whole number of minutes")
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{_clock(timestamp)}{sign}{hours:02d}:{mins:02d}"
