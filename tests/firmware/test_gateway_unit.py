"""The main loop with the network switched off and a stand-in bus: reconnect backoff on the clock, the
crash watchdog, and queueing while offline. (Real brokers and buses: test_e2e_mqtt.py, test_poller.py.)"""

from __future__ import annotations

import asyncio
import random
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fw_testkit import FastClock, MemoryFlash, write_config

from firmware.config import load_config
from firmware.gateway import Firmware, Hardware
from firmware.hal import TransportError


class FixedBus:
    """A ModbusPort whose every slave answers registers [0, 12345] (uint32 123.45 at scale 0.01)."""

    async def client(self) -> FixedBus:
        return self

    def close(self) -> None:
        pass

    async def read_holding_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> Any:
        return SimpleNamespace(isError=lambda: False, registers=[0, 12345][:count])

    read_input_registers = read_holding_registers


class NetworkDown:
    """The virtual gateway's "network down" switch, permanently off."""

    def __init__(self) -> None:
        self.attempts = 0

    @asynccontextmanager
    async def session(self, settings: Any):
        self.attempts += 1
        raise TransportError("network down")
        yield  # pragma: no cover


class BrokenFlash(MemoryFlash):
    """Flash whose writes fail ``failures`` times (a worn SD card), then work."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def write(self, name: str, data: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError(5, "Input/output error")
        await super().write(name, data)


def _fw(tmp_path: Path, flash: MemoryFlash, clock: FastClock, reboot: Any, **overrides: Any) -> Firmware:
    cfg = load_config(write_config(tmp_path / "gateway.yaml", **overrides))
    return Firmware(cfg, Hardware(clock=clock, flash=flash, modbus=FixedBus(), network=NetworkDown(),
                                  reboot=reboot, rng=random.Random(5)))


def test_offline_gateway_queues_and_reconnects_with_capped_backoff(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = FastClock(speed=1000)

        async def reboot(reason: str) -> None:
            raise AssertionError(reason)

        fw = _fw(tmp_path, MemoryFlash(), clock, reboot, reconnect={"initial_s": 1, "max_s": 8},
                 poll_interval_s=30)
        task = asyncio.ensure_future(fw.run())
        while fw.counters().connect_failures < 8:
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.wait({task})
        c = fw.counters()
        assert c.connects == 0 and c.connect_failures - 1 <= c.reconnects <= c.connect_failures
        assert c.queue_depth == c.enqueued >= 1 and c.published == 0
        # drop the Modbus timeout timers (5 s) and the poll sleeps (~30 s): what is left is the link's backoff
        backoffs = [s for s in clock.sleeps if s < 8 and s != 5.0][:7]
        for delay, base in zip(backoffs, [1, 2, 4, 8, 8, 8, 8], strict=True):
            assert 0.5 * base <= delay < base, backoffs

    asyncio.run(scenario())


def test_an_unexpected_error_is_a_watchdog_reboot_not_a_dead_gateway(tmp_path: Path) -> None:
    class Stop(Exception):
        pass

    async def scenario() -> None:
        reasons: list[str] = []

        async def reboot(reason: str) -> None:
            reasons.append(reason)
            if reason == "test over":
                raise Stop()

        fw = _fw(tmp_path, BrokenFlash(failures=1), FastClock(speed=1000), reboot, poll_interval_s=0.5)
        task = asyncio.ensure_future(fw.run())
        while not (reasons and fw.counters().enqueued >= 1):
            await asyncio.sleep(0.01)
        assert reasons == ["crash: OSError"]  # the first poll's flash write failed: reboot, not death
        fw.request_reboot("test over")
        await asyncio.wait({task})
        assert isinstance(task.exception(), Stop)
        c = fw.counters()
        assert (c.crashes, c.boots, reasons) == (1, 2, ["crash: OSError", "test over"])

    asyncio.run(scenario())
