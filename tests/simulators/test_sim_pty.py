"""PtyPair: binary-clean, bidirectional, survives a large burst and a reopen of one end."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import serial

from simulators.pty_bridge import PtyPair

BINARY = bytes(range(256))  # includes CR, LF, XON/XOFF, ^C, ^D: a cooked tty would mangle these

pytestmark = pytest.mark.timeout(30)  # a hung socket or pty must fail fast, not eat the suite's budget


async def _write_all(port: serial.Serial, data: bytes) -> None:
    view = memoryview(data)
    for _ in range(2000):
        with contextlib.suppress(serial.SerialTimeoutException):
            view = view[port.write(view) or 0 :]
        if not view:
            return
        await asyncio.sleep(0.001)  # let the bridge drain the pty
    raise AssertionError(f"{len(view)} bytes could not be written")


async def _read_exactly(port: serial.Serial, n: int) -> bytes:
    buf = b""
    for _ in range(2000):
        buf += port.read(n - len(buf))
        if len(buf) >= n:
            return buf
        await asyncio.sleep(0.001)  # the bridge runs in this loop: yield to it
    return buf


def test_bytes_flow_both_ways_unchanged():
    async def scenario():
        async with PtyPair() as pair:
            a = serial.Serial(pair.device_a, timeout=0, write_timeout=0)
            b = serial.Serial(pair.device_b, timeout=0, write_timeout=0)
            a.write(BINARY)
            assert await _read_exactly(b, len(BINARY)) == BINARY
            b.write(BINARY[::-1])
            assert await _read_exactly(a, len(BINARY)) == BINARY[::-1]
            burst = BINARY * 64  # 16 KiB: more than one pty buffer, exercises the pending path
            writer = asyncio.create_task(_write_all(a, burst))
            assert await _read_exactly(b, len(burst)) == burst
            await writer
            b.close()
            b = serial.Serial(pair.device_b, timeout=0, write_timeout=0)  # the master reconnects
            a.write(b"\x01\x03\x00\x00\x00\x01\x84\x0a")
            assert await _read_exactly(b, 8) == b"\x01\x03\x00\x00\x00\x01\x84\x0a"
            assert pair.bytes_a_to_b == 256 + len(burst) + 8
            a.close()
            b.close()

    asyncio.run(scenario())


def test_device_paths_need_open():
    pair = PtyPair()
    with pytest.raises(RuntimeError, match="not open"):
        _ = pair.device_a
