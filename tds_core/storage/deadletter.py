"""Dead letters: messages the consumer could not store, kept with the reason (and deduplicated)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class DeadLetter:
    """One rejected message. `reason` is a stable code (tds_core.protocol.Reason), `detail` says why."""

    topic: str
    payload: bytes
    reason: str
    detail: str
    client_id: str | None = None
    received_at: datetime = field(default_factory=_now)

    @property
    def digest(self) -> bytes:
        """sha256(topic NUL payload NUL reason): a redelivery of the same rejected message lands once."""
        h = hashlib.sha256(self.topic.encode())
        h.update(b"\0")
        h.update(self.payload)
        h.update(b"\0")
        h.update(self.reason.encode())
        return h.digest()
