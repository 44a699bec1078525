"""Firmware counters: a mutable tally inside the firmware, a frozen snapshot for everyone else."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

__all__ = ["Counters", "CountersSnapshot"]


@dataclass(frozen=True)
class CountersSnapshot:
    """Counters at one instant (since the firmware main loop last started, except where noted).

    ``meter_failures`` maps meter code -> readings that failed all attempts (never published).
    ``queue_depth`` is a gauge: messages on flash waiting for their PUBACK.
    """

    polls: int = 0
    meter_reads: int = 0
    meter_failures: MappingProxyType[str, int] = field(default_factory=lambda: MappingProxyType({}))
    enqueued: int = 0
    published: int = 0
    acked: int = 0
    dropped: int = 0
    corrupt: int = 0
    connects: int = 0
    connect_failures: int = 0
    reconnects: int = 0
    commands: int = 0
    commands_rejected: int = 0
    boots: int = 0
    crashes: int = 0
    queue_depth: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (meter_failures as a dict) for logs and JSON."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["meter_failures"] = dict(self.meter_failures)
        return out


@dataclass
class Counters:
    """The live tally. Only the firmware writes it; call ``snapshot()`` to read."""

    polls: int = 0
    meter_reads: int = 0
    meter_failures: dict[str, int] = field(default_factory=dict)
    enqueued: int = 0
    published: int = 0
    acked: int = 0
    dropped: int = 0
    corrupt: int = 0
    connects: int = 0
    connect_failures: int = 0
    reconnects: int = 0
    commands: int = 0
    commands_rejected: int = 0
    boots: int = 0
    crashes: int = 0

    def meter_failed(self, code: str) -> None:
        """Count one failed reading of meter ``code``."""
        self.meter_failures[code] = self.meter_failures.get(code, 0) + 1

    def snapshot(self, queue_depth: int = 0) -> CountersSnapshot:
        """A frozen copy."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["meter_failures"] = MappingProxyType(dict(self.meter_failures))
        return CountersSnapshot(**values, queue_depth=queue_depth)
