"""A pure-Python null-modem cable: two pseudo-terminals whose traffic is forwarded both ways.

Open ``pair.device_a`` with the slave bank (``bank.start_serial(pair.device_a)``) and ``pair.device_b`` with the
master (the firmware's serial client). Nothing external is needed (no socat). The bridge lives in the event
loop (``add_reader`` on the two master fds), so it never blocks it. A pty does not throttle to the baud rate.

We keep each pty's slave side open ourselves, so the peer can close and reopen its device without the master
side seeing EIO/HUP in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty

log = logging.getLogger(__name__)

_CHUNK = 4096


class _End:
    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no CR/LF translation: Modbus frames are binary
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.pending = bytearray()  # bytes waiting for this end to accept them

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class PtyPair:
    """Two cross-connected ptys. Use ``async with PtyPair() as pair:`` or ``await pair.open()`` / ``close()``."""

    def __init__(self) -> None:
        self._a: _End | None = None
        self._b: _End | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.bytes_a_to_b = 0
        self.bytes_b_to_a = 0

    @property
    def device_a(self) -> str:
        """Path of the first end (e.g. /dev/pts/7)."""
        return self._require()[0].path

    @property
    def device_b(self) -> str:
        """Path of the second end."""
        return self._require()[1].path

    def _require(self) -> tuple[_End, _End]:
        if self._a is None or self._b is None:
            raise RuntimeError("PtyPair is not open; call await pair.open() first")
        return self._a, self._b

    async def open(self) -> PtyPair:
        """Create both ptys and start forwarding (must run inside the event loop that serves them)."""
        if self._a is not None:
            return self
        self._loop = asyncio.get_running_loop()
        a = _End()
        try:
            b = _End()
        except OSError:
            a.close()
            raise
        self._a, self._b = a, b
        self._loop.add_reader(a.master, self._forward, a, b, True)
        self._loop.add_reader(b.master, self._forward, b, a, False)
        log.debug("pty pair %s <-> %s", a.path, b.path)
        return self

    def _forward(self, src: _End, dst: _End, a_to_b: bool) -> None:
        try:
            data = os.read(src.master, _CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: no slave side open (cannot happen while we hold it) or closed
            log.debug("pty %s read failed: %s", src.path, exc)
            return
        if not data:
            return
        if a_to_b:
            self.bytes_a_to_b += len(data)
        else:
            self.bytes_b_to_a += len(data)
        if dst.pending:
            dst.pending += data
            return
        self._write(dst, bytes(data))

    def _write(self, dst: _End, data: bytes) -> None:
        try:
            written = os.write(dst.master, data)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            log.debug("pty %s write failed: %s", dst.path, exc)
            return
        if written < len(data):
            dst.pending += data[written:]
            assert self._loop is not None
            self._loop.add_writer(dst.master, self._drain, dst)

    def _drain(self, dst: _End) -> None:
        assert self._loop is not None
        self._loop.remove_writer(dst.master)
        data = bytes(dst.pending)
        dst.pending.clear()
        if data:
            self._write(dst, data)

    def close(self) -> None:
        """Stop forwarding and close all four descriptors (idempotent)."""
        ends = [e for e in (self._a, self._b) if e is not None]
        self._a = self._b = None
        for end in ends:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(end.master)
                self._loop.remove_writer(end.master)
            end.close()

    async def __aenter__(self) -> PtyPair:
        return await self.open()

    async def __aexit__(self, *exc_info) -> None:
        self.close()
