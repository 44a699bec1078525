"""Helpers for tests in any area: spin a bank (TCP and/or RTU over a pty pair) in a few lines.

Tests in this repository are plain sync pytest functions that run a coroutine with ``asyncio.run``::

    async def scenario():
        async with serve_bank(energy_meters(8), clock=clock, rtu=True) as served:
            client = rtu_client(served.rtu_device)
            await client.connect()
            rr = await client.read_holding_registers(0, count=1, device_id=1)

    asyncio.run(scenario())
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.framer import FramerType

from .clock import Clock, system_clock
from .meters import EnergyMeter, Meter
from .modbus_bank import ModbusBank
from .pty_bridge import PtyPair


@dataclass
class ServedBank:
    """A running bank and where to reach it."""

    bank: ModbusBank
    tcp_port: int | None = None
    rtu_device: str | None = None  # the master's end of the pty pair
    pty: PtyPair | None = None


def energy_meters(count: int, *, seed: int = 0, base_kw: float = 0.5, first_slave: int = 1) -> dict[int, Meter]:
    """``count`` energy meters D01.. on consecutive slave ids, seeded deterministically."""
    return {
        first_slave + i: EnergyMeter(f"D{i + 1:02d}", seed * 1000 + i, base_kw=base_kw) for i in range(count)
    }


@contextlib.asynccontextmanager
async def serve_bank(
    meters: Mapping[int, Meter] | Iterable[tuple[int, Meter]] = (),
    *,
    clock: Clock = system_clock,
    name: str = "test-bank",
    tcp: bool = True,
    tcp_framer: str = "socket",
    rtu: bool = False,
    **bank_kwargs,
) -> AsyncIterator[ServedBank]:
    """Start a :class:`ModbusBank` with ``meters`` (seed encoding: uint16 × 0.01 at register 0).

    ``tcp`` listens on 127.0.0.1 with a free port; ``rtu`` opens a :class:`PtyPair` and serves its first end.
    For other encodings, call ``served.bank.add_meter`` yourself (allowed while serving).
    """
    bank = ModbusBank(name, clock=clock, **bank_kwargs)
    items = meters.items() if isinstance(meters, Mapping) else meters
    for slave_id, meter in items:
        bank.add_meter(slave_id, meter)
    served = ServedBank(bank)
    try:
        if tcp:
            served.tcp_port = await bank.start_tcp(framer=tcp_framer)
        if rtu:
            served.pty = await PtyPair().open()
            await bank.start_serial(served.pty.device_a)
            served.rtu_device = served.pty.device_b
        yield served
    finally:
        await bank.stop()
        if served.pty is not None:
            served.pty.close()


def tcp_client(port: int, *, timeout: float = 0.5, retries: int = 0, framer: str = "socket", **kwargs):
    """An async pymodbus TCP client for a bank on 127.0.0.1 (create inside the running loop)."""
    return AsyncModbusTcpClient(
        "127.0.0.1", port=port, framer=FramerType(framer), timeout=timeout, retries=retries, **kwargs
    )


def rtu_client(device: str, *, timeout: float = 0.5, retries: int = 0, **kwargs):
    """An async pymodbus RTU client on a serial device (create inside the running loop)."""
    return AsyncModbusSerialClient(device, framer=FramerType.RTU, timeout=timeout, retries=retries, **kwargs)
