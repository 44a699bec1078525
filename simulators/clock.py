"""Clocks a bank can read: any ``Callable[[], datetime]`` returning a tz-aware datetime works.

The fleet engine brings its own virtual clock; these two cover tests and simple runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """Wall-clock time in UTC (the default for a bank that is not driven by a virtual clock)."""
    return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to: ``clock()`` returns the current simulated instant."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError(f"start={start.isoformat()} is naive; expected a tz-aware datetime")
        self._now = start

    def __call__(self) -> datetime:
        return self._now

    def set(self, at: datetime) -> None:
        """Jump to ``at`` (may go backwards: the models are pure functions of time)."""
        if at.tzinfo is None:
            raise ValueError(f"at={at.isoformat()} is naive; expected a tz-aware datetime")
        self._now = at

    def advance(self, delta: timedelta | float) -> datetime:
        """Move forward by ``delta`` (a timedelta or seconds) and return the new instant."""
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        self._now += delta
        return self._now


class ScaledClock:
    """Simulated time running ``speed`` times faster than the monotonic clock, starting at ``start``.

    ``speed=288`` makes a simulated day pass in 5 real minutes.
    """

    def __init__(self, start: datetime, speed: float = 1.0, monotonic: Callable[[], float] = time.monotonic):
        if start.tzinfo is None:
            raise ValueError(f"start={start.isoformat()} is naive; expected a tz-aware datetime")
        if not speed > 0:
            raise ValueError(f"speed={speed!r} must be > 0")
        self.start = start
        self.speed = speed
        self._monotonic = monotonic
        self._t0 = monotonic()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=(self._monotonic() - self._t0) * self.speed)
