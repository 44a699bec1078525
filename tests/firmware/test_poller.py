"""Polling real Modbus slaves (the simulators' pymodbus bank) with the firmware's retry policy."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from fw_testkit import FastClock, MemoryFlash, energy_bank_meters, write_config

from firmware.config import load_config
from firmware.counters import Counters
from firmware.gateway import Firmware, Hardware
from firmware.hal import SerialModbusPort, TcpModbusPort
from firmware.poller import MeterPoller
from tds_core.protocol import decode

sim = pytest.importorskip("simulators", reason="the simulators package (Modbus banks) is needed")
from simulators import faults  # noqa: E402
from simulators.testing import serve_bank  # noqa: E402


class _NoNetwork:
    def session(self, settings):  # pragma: no cover - the poll tests never connect
        raise AssertionError("no network in poll tests")


async def _no_reboot(reason: str) -> None:  # pragma: no cover
    raise AssertionError(reason)


@asynccontextmanager
async def _bank() -> AsyncIterator[Any]:
    """A simulators bank serving RTU frames over TCP; ports opened by ``_firmware`` close before it stops."""
    async with serve_bank(tcp_framer="rtu") as served:
        served.ports = []
        try:
            yield served
        finally:
            for port in served.ports:
                port.close()


def _firmware(tmp_path: Path, served: Any, clock: FastClock, **overrides) -> Firmware:
    cfg = load_config(write_config(tmp_path / "gateway.yaml", **overrides))
    port = TcpModbusPort("127.0.0.1", served.tcp_port, framer="rtu")
    served.ports.append(port)
    hw = Hardware(clock=clock, flash=MemoryFlash(), modbus=port, network=_NoNetwork(), reboot=_no_reboot,
                  rng=random.Random(1))
    return Firmware(cfg, hw)


def test_good_meter_value_matches_what_the_slave_served(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _bank() as served:
            meters = energy_bank_meters(served.bank, 2)
            clock = FastClock(speed=1)
            fw = _firmware(tmp_path, served, clock, meters=meters)
            poller = MeterPoller(fw.hw.modbus, clock, fw.config.modbus, Counters())
            value = await poller.read(fw.config.meters[0])
            served_read = [r for r in served.bank.reads if r.slave_id == 1][-1]
            assert served_read.outcome == "ok"
            assert value == served_read.value and value > 0
            assert clock.sleeps == [5.0]  # only the timeout timer of the one attempt: no retry, no backoff

    asyncio.run(scenario())


def test_silent_meter_fails_three_attempts_with_1_2_4_backoff_and_is_not_published(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _bank() as served:
            meters = energy_bank_meters(served.bank, 2)
            served.bank.add_fault(2, faults.no_reply())
            clock = FastClock(speed=10)
            fw = _firmware(tmp_path, served, clock, meters=meters)
            await fw.boot()
            assert await fw.poll_once() == 1
            # per attempt: the 5 s timeout timer on the clock, then for D02 the backoff (1, 2, 4 s)
            # (the first 5.0 is D01's successful attempt)
            assert clock.sleeps == [5.0, 5.0, 1.0, 5.0, 2.0, 5.0, 4.0]
            assert [r.outcome for r in served.bank.reads if r.slave_id == 2] == ["no_reply"] * 3
            c = fw.counters()
            assert (c.polls, c.meter_reads, c.enqueued, c.queue_depth) == (1, 1, 1, 1)
            assert dict(c.meter_failures) == {"D02": 1}
            msg = await fw.store.get(fw.store.seq_after(-1))
            telemetry = decode(msg.topic, msg.payload)
            assert [r.device_code for r in telemetry.readings] == ["D01"]  # D02 absent, not a zero
            assert telemetry.gateway_mac == "aa:bb:cc:dd:ee:01"
            # the bus still works after the timed-out requests were cancelled
            served.bank.clear_faults()
            assert await fw.poll_once() == 1
            msg = await fw.store.get(fw.store.seq_after(msg.seq))
            assert [r.device_code for r in decode(msg.topic, msg.payload).readings] == ["D01", "D02"]

    asyncio.run(scenario())


def test_exception_response_is_retried_then_recovers(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _bank() as served:
            meters = energy_bank_meters(served.bank, 1)
            served.bank.add_fault(1, faults.exception(4))
            clock = FastClock(speed=10)
            fw = _firmware(tmp_path, served, clock, meters=meters)
            poller = MeterPoller(fw.hw.modbus, clock, fw.config.modbus, Counters())

            async def heal() -> None:
                while not served.bank.reads:
                    await asyncio.sleep(0.001)
                served.bank.clear_faults()

            healer = asyncio.create_task(heal())
            value = await poller.read(fw.config.meters[0])
            await healer
            outcomes = [r.outcome for r in served.bank.reads]
            assert outcomes[0] == "exception" and outcomes[-1] == "ok"
            assert value == served.bank.reads[-1].value
            assert clock.sleeps == [5.0, 1.0, 5.0]  # attempt, backoff 1 s, attempt

    asyncio.run(scenario())


def test_legacy_publishes_one_message_per_good_meter(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _bank() as served:
            meters = energy_bank_meters(served.bank, 3)
            served.bank.add_fault(3, faults.exception(11))
            clock = FastClock(speed=10)
            fw = _firmware(tmp_path, served, clock, payload_format="legacy",
                           gateway_code="GW-TEST-001", meters=meters)
            await fw.boot()
            assert await fw.poll_once() == 2
            got = []
            cursor = -1
            while (seq := fw.store.seq_after(cursor)) is not None:
                msg = await fw.store.get(seq)
                t = decode(msg.topic, msg.payload)
                got.append((msg.topic, t.gateway_code, t.readings[0].device_code, t.readings[0].kind))
                cursor = seq
            assert got == [
                ("telemetry/GW-TEST-001/D01/data", "GW-TEST-001", "D01", "energia"),
                ("telemetry/GW-TEST-001/D02/data", "GW-TEST-001", "D02", "energia"),
            ]
            assert dict(fw.counters().meter_failures) == {"D03": 1}

    asyncio.run(scenario())


def test_rtu_over_a_serial_pty(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serve_bank(tcp=False, rtu=True) as served:
            energy_bank_meters(served.bank, 1)
            cfg = load_config(write_config(tmp_path / "gateway.yaml", modbus={"port": served.rtu_device}))
            port = SerialModbusPort(served.rtu_device, baudrate=19200, timeout_s=2)
            poller = MeterPoller(port, FastClock(speed=1), cfg.modbus, Counters())
            try:
                value = await poller.read(cfg.meters[0])
            finally:
                port.close()
            assert value == served.bank.reads[-1].value

    asyncio.run(scenario())
