"""What a run observed, gathered independently of the core's own counters.

Two sources that do not trust each other: the harness's accounting (what each meter produced and each
gateway published and got PUBACKed, from the fleet engine) and the database as it is at the end (rows,
dead letters, online flags). The expectation checkers compare the two; the reports plot them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

RowKey = tuple[str, str, datetime]  # (gateway mac, device code, reading time)


@dataclass
class StoredRow:
    """One row of `readings`, mapped back to names: its value and the id of the transaction that wrote it."""

    value: float
    xid: int


@dataclass
class DeadLetterRecord:
    """One row of `dead_letters` (the payload is left out)."""

    reason: str
    topic: str
    detail: str
    client_id: str | None = None


@dataclass
class OnlineSample:
    """Gateways' `online` flags in the database, read at fleet offset `at_s` for one expectation."""

    expectation: str
    at_s: float
    observed: dict[str, bool | None]  # mac -> online (None: unknown gateway)
    waited_s: float = 0.0


@dataclass
class Observations:
    """Everything the checkers and the reports need. Plain data, so tests can build it by hand."""

    # Values each meter served to a successful poll (any time: the served instant can trail the message
    # timestamp when a poll is retried), and the readings the broker acknowledged, with their values.
    produced: dict[tuple[str, str], set[float]] = field(default_factory=dict)
    acked_values: dict[RowKey, float] = field(default_factory=dict)
    expected: set[RowKey] = field(default_factory=set)  # acked readings: what the database must hold
    lost_on_power_loss: dict[str, int] = field(default_factory=dict)
    published: dict[str, int] = field(default_factory=dict)
    acked: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    queued: dict[str, int] = field(default_factory=dict)  # still in a gateway's queue after the drain
    drained: bool = True  # every gateway's store-and-forward queue was empty at the end
    failed_polls: dict[tuple[str, str], int] = field(default_factory=dict)
    stored: dict[RowKey, StoredRow] = field(default_factory=dict)
    dead_letters: list[DeadLetterRecord] = field(default_factory=list)
    online_samples: list[OnlineSample] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    commits: list[tuple[float, int]] = field(default_factory=list)  # (wall seconds since start, rows)
    redelivered_rows: int = 0  # rows the consumer found already stored (redeliveries; harmless)
    gateway_codes: dict[str, str] = field(default_factory=dict)  # mac -> code
    malformed_sent: dict[str, int] = field(default_factory=dict)  # reason -> count the harness injected
    accounting_snapshot: dict[str, Any] = field(default_factory=dict)

    def was_produced(self, key: RowKey, value: float) -> bool:
        """True when the meter of `key` served `value` at some poll."""
        return value in self.produced.get((key[0], key[1]), ())

    def stored_per_gateway(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for mac, _, _ in self.stored:
            out[mac] = out.get(mac, 0) + 1
        return out

    def expected_per_gateway(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for mac, _, _ in self.expected:
            out[mac] = out.get(mac, 0) + 1
        return out
