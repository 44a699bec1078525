"""Store-and-forward: a bounded, persistent FIFO of outgoing MQTT messages on ``Flash``.

One flash file per message, named by a zero-padded sequence number (``queue/000000000042``): appending
is one atomic write, acknowledging is one delete, a reboot rebuilds the order from the names, and a torn
or corrupt entry costs one message, never the queue. Only the sequence numbers live in RAM (a full
10,000-message queue is ~80 kB of ints), so thousands of virtual gateways stay cheap; payloads are read
back from flash when sent.

A message leaves the queue only when ``ack`` is called (after its PUBACK). When the queue is full,
``put`` drops the oldest message (even one in flight: its late PUBACK is then a no-op) and counts it.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import zlib
from dataclasses import dataclass

from .hal import Flash

__all__ = ["MessageStore", "StoredMessage"]

log = logging.getLogger(__name__)

_MAGIC = b"TDSQ1"
_WIDTH = 12


@dataclass(frozen=True)
class StoredMessage:
    """One queued message. ``seq`` orders messages; the payload carries its original timestamp."""

    seq: int
    topic: str
    payload: bytes


def _encode(topic: str, payload: bytes) -> bytes:
    body = topic.encode("utf-8") + b"\n" + payload
    return _MAGIC + b" " + f"{zlib.crc32(body):08x}".encode() + b"\n" + body


def _decode(blob: bytes) -> tuple[str, bytes]:
    header, sep, body = blob.partition(b"\n")
    expected = _MAGIC + b" " + f"{zlib.crc32(body):08x}".encode()
    if not sep or header != expected:
        raise ValueError("bad header or checksum")
    topic, sep, payload = body.partition(b"\n")
    if not sep:
        raise ValueError("no topic separator")
    return topic.decode("utf-8"), payload


class MessageStore:
    """The queue. Call ``await load()`` once after construction (it reads what survived a reboot)."""

    def __init__(self, flash: Flash, max_messages: int, *, prefix: str = "queue/") -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages: expected >= 1, got {max_messages}")
        self.flash = flash
        self.max_messages = max_messages
        self.prefix = prefix
        self._seqs: list[int] = []  # sorted, oldest first
        self._next = 0
        self._changed = asyncio.Event()
        self.dropped = 0
        self.corrupt = 0

    def _name(self, seq: int) -> str:
        return f"{self.prefix}{seq:0{_WIDTH}d}"

    async def load(self) -> None:
        """Rebuild the index from flash. Entries beyond ``max_messages`` (a smaller new limit) are dropped."""
        seqs = []
        for name in await self.flash.list(self.prefix):
            tail = name[len(self.prefix):]
            if len(tail) == _WIDTH and tail.isdigit():
                seqs.append(int(tail))
            else:
                log.warning("event=queue_stray_file name=%s", name)
        seqs.sort()
        self._seqs = seqs
        self._next = seqs[-1] + 1 if seqs else 0
        while len(self._seqs) > self.max_messages:
            await self._drop_oldest()
        log.info("event=queue_loaded depth=%d next_seq=%d", len(self._seqs), self._next)

    def __len__(self) -> int:
        return len(self._seqs)

    async def put(self, topic: str, payload: bytes) -> int:
        """Append durably; drop the oldest first when full. Returns the new message's sequence number."""
        while len(self._seqs) >= self.max_messages:
            await self._drop_oldest()
        seq = self._next
        self._next += 1
        await self.flash.write(self._name(seq), _encode(topic, payload))
        bisect.insort(self._seqs, seq)  # concurrent puts may finish their writes out of order
        self._notify()
        return seq

    async def _drop_oldest(self) -> None:
        seq = self._seqs.pop(0)
        self.dropped += 1
        await self.flash.delete(self._name(seq))
        log.warning("event=queue_drop_oldest seq=%d dropped_total=%d", seq, self.dropped)

    async def ack(self, seq: int) -> None:
        """Remove a delivered message (no-op when it was already dropped)."""
        i = bisect.bisect_left(self._seqs, seq)
        if i < len(self._seqs) and self._seqs[i] == seq:
            del self._seqs[i]
            await self.flash.delete(self._name(seq))

    def seq_after(self, cursor: int) -> int | None:
        """The oldest queued sequence number greater than ``cursor`` (-1 for the head), or None."""
        i = bisect.bisect_right(self._seqs, cursor)
        return self._seqs[i] if i < len(self._seqs) else None

    async def get(self, seq: int) -> StoredMessage | None:
        """Read one message back; None (and the entry removed, counted as corrupt) if it is unreadable."""
        blob = await self.flash.read(self._name(seq))
        if blob is None:
            return None  # dropped or acknowledged meanwhile
        try:
            topic, payload = _decode(blob)
        except (ValueError, UnicodeDecodeError) as exc:
            self.corrupt += 1
            log.error("event=queue_corrupt seq=%d error=%s", seq, exc)
            await self.ack(seq)
            return None
        return StoredMessage(seq, topic, payload)

    async def wait_after(self, cursor: int) -> int:
        """Wait until a message newer than ``cursor`` exists; return its sequence number."""
        while True:
            seq = self.seq_after(cursor)
            if seq is not None:
                return seq
            self._changed.clear()
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
