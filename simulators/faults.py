"""Fault injection per slave id, on a schedule expressed in the bank's clock.

A :class:`Fault` is active for ``start <= t < end`` (``None`` = unbounded) on the bank's clock, so faults scheduled
in simulated time fire at the right simulated instant. Kinds:

* ``no_reply`` - the slave stays silent (the master times out).
* ``exception`` - the slave answers with Modbus exception ``code`` (1-8, 10, 11).
* ``delay`` - the answer is held back ``seconds`` of *real* time (client timeouts are real time).
* ``bad_crc`` - the answer leaves with a corrupted CRC (RTU framing) or protocol id (TCP/MBAP framing).
* ``stuck`` - the value freezes at what the meter showed at ``start``.
* ``counter_reset`` - the counter restarts from 0 at ``start`` (an event: ``end`` is ignored; counters only).

``probability`` < 1 makes a fault intermittent; the draw is deterministic per (seed, slave, request number).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime

from pymodbus.constants import ExcCodes

FAULT_KINDS = ("no_reply", "exception", "delay", "bad_crc", "stuck", "counter_reset")
# order in which concurrent faults are applied to one request: silence wins over everything
_PRIORITY = {"no_reply": 0, "bad_crc": 1, "exception": 2, "delay": 3, "stuck": 4, "counter_reset": 5}


@dataclass(frozen=True)
class Fault:
    """One scheduled fault. Build with the helpers below or directly (validated on creation)."""

    kind: str
    start: datetime | None = None
    end: datetime | None = None
    code: int = int(ExcCodes.DEVICE_FAILURE)
    seconds: float = 0.0
    probability: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind={self.kind!r} is unknown; expected one of {FAULT_KINDS}")
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
                raise ValueError(f"fault {self.kind}: {name}={value!r} must be a tz-aware datetime or None")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(
                f"fault {self.kind}: end={self.end.isoformat()} must be after start={self.start.isoformat()}"
            )
        if self.kind == "exception" and self.code not in {int(c) for c in ExcCodes}:
            raise ValueError(
                f"fault exception: code={self.code!r} is not a Modbus exception code; "
                f"expected one of {sorted(int(c) for c in ExcCodes)}"
            )
        if self.kind == "delay" and not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ValueError(f"fault delay: seconds={self.seconds!r} must be a finite number > 0")
        if not 0 < self.probability <= 1:
            raise ValueError(f"fault {self.kind}: probability={self.probability!r} must be in (0, 1]")

    @property
    def priority(self) -> int:
        """Lower applies first."""
        return _PRIORITY[self.kind]

    def active(self, at: datetime) -> bool:
        """True when ``at`` falls in [start, end)."""
        if self.start is not None and at < self.start:
            return False
        return self.end is None or at < self.end

    def anchored(self, now: datetime) -> Fault:
        """This fault with an open start replaced by ``now`` (stuck and counter_reset need an instant)."""
        return self if self.start is not None else replace(self, start=now)


def no_reply(start: datetime | None = None, end: datetime | None = None, probability: float = 1.0) -> Fault:
    """The slave does not answer."""
    return Fault("no_reply", start, end, probability=probability)


def exception(
    code: int = int(ExcCodes.DEVICE_FAILURE), start: datetime | None = None, end: datetime | None = None,
    probability: float = 1.0,
) -> Fault:
    """The slave answers with exception ``code``."""
    return Fault("exception", start, end, code=code, probability=probability)


def delay(
    seconds: float, start: datetime | None = None, end: datetime | None = None, probability: float = 1.0
) -> Fault:
    """The slave answers ``seconds`` late (real seconds)."""
    return Fault("delay", start, end, seconds=seconds, probability=probability)


def bad_crc(start: datetime | None = None, end: datetime | None = None, probability: float = 1.0) -> Fault:
    """The slave's answer is corrupted on the wire."""
    return Fault("bad_crc", start, end, probability=probability)


def stuck(start: datetime | None = None, end: datetime | None = None) -> Fault:
    """The value freezes at what it was at ``start`` (default: when the fault is added)."""
    return Fault("stuck", start, end)


def counter_reset(at: datetime | None = None) -> Fault:
    """The counter restarts from 0 at ``at`` (default: when the fault is added)."""
    return Fault("counter_reset", at, None)
