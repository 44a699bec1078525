"""Each fault kind observed from a real pymodbus client, on the bank's (virtual) schedule."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer.rtu import FramerRTU

from simulators import faults
from simulators.meters import EnergyMeter, TemperatureSensor
from simulators.modbus_bank import ModbusBank, NoAnswer
from simulators.registers import decode_registers
from simulators.testing import energy_meters, rtu_client, serve_bank, tcp_client

pytestmark = pytest.mark.timeout(30)  # a hung socket or pty must fail fast, not eat the suite's budget


def test_no_reply_during_window_only(clock):
    async def scenario():
        async with serve_bank(energy_meters(2), clock=clock) as served:
            now = clock()
            served.bank.add_fault(1, faults.no_reply(now, now + timedelta(hours=1)))
            client = tcp_client(served.tcp_port, timeout=0.2)
            assert await client.connect()
            with pytest.raises(ModbusIOException):
                await client.read_holding_registers(0, device_id=1)
            assert served.bank.reads[-1].outcome == "no_reply"
            assert not (await client.read_holding_registers(0, device_id=2)).isError()  # other slave unaffected
            clock.advance(timedelta(hours=1))  # window over on the virtual clock
            client.close()
            client = tcp_client(served.tcp_port, timeout=0.5)
            assert await client.connect()
            assert not (await client.read_holding_registers(0, device_id=1)).isError()
            client.close()

    asyncio.run(scenario())


def test_exception_code_response(clock):
    async def scenario():
        async with serve_bank(energy_meters(1), clock=clock, tcp=False, rtu=True) as served:
            served.bank.add_fault(1, faults.exception(6))
            client = rtu_client(served.rtu_device)
            assert await client.connect()
            rr = await client.read_holding_registers(0, device_id=1)
            assert rr.isError() and rr.exception_code == 6
            assert served.bank.reads[-1].exception_code == 6
            client.close()

    asyncio.run(scenario())


def test_delay_makes_short_timeouts_fail_and_long_ones_pass(clock):
    async def scenario():
        async with serve_bank(energy_meters(1), clock=clock) as served:
            served.bank.add_fault(1, faults.delay(0.4))
            impatient = tcp_client(served.tcp_port, timeout=0.1)
            assert await impatient.connect()
            with pytest.raises(ModbusIOException):
                await impatient.read_holding_registers(0, device_id=1)
            impatient.close()
            patient = tcp_client(served.tcp_port, timeout=3)
            assert await patient.connect()
            rr = await patient.read_holding_registers(0, device_id=1)
            assert rr.registers == served.bank.registers_at(1)
            assert served.bank.reads[-1].delay_s == 0.4
            patient.close()

    asyncio.run(scenario())


def test_bad_crc_on_rtu_is_detected_by_the_client(clock):
    received: list[bytes] = []

    def trace(sending: bool, data: bytes) -> bytes:
        if not sending:
            received.append(bytes(data))
        return data

    async def scenario():
        async with serve_bank(energy_meters(1), clock=clock, tcp=False, rtu=True) as served:
            now = clock()
            served.bank.add_fault(1, faults.bad_crc(now, now + timedelta(minutes=5)))
            client = rtu_client(served.rtu_device, timeout=0.3, trace_packet=trace)
            assert await client.connect()
            with pytest.raises(ModbusIOException):
                await client.read_holding_registers(0, device_id=1)
            frame = b"".join(received)
            assert len(frame) == 7 and frame[:2] == b"\x01\x03"  # a whole answer arrived ...
            crc = int.from_bytes(frame[-2:], "big")
            assert not FramerRTU.check_CRC(frame[:-2], crc)  # ... with a wrong CRC
            assert served.bank.reads[-1].outcome == "bad_crc"
            clock.advance(timedelta(minutes=5))
            received.clear()
            rr = await client.read_holding_registers(0, device_id=1)
            assert not rr.isError()
            assert FramerRTU.check_CRC(received[-1][:-2], int.from_bytes(received[-1][-2:], "big"))
            client.close()

    asyncio.run(scenario())


def test_bad_crc_on_tcp_corrupts_the_mbap_header(clock):
    received: list[bytes] = []

    def trace(sending: bool, data: bytes) -> bytes:
        if not sending:
            received.append(bytes(data))
        return data

    async def scenario():
        async with serve_bank(energy_meters(1), clock=clock) as served:
            served.bank.add_fault(1, faults.bad_crc())
            client = tcp_client(served.tcp_port, timeout=0.2, trace_packet=trace)
            assert await client.connect()
            with pytest.raises(ModbusIOException):
                await client.read_holding_registers(0, device_id=1)
            assert received and received[0][2:4] != b"\x00\x00"  # protocol id must be 0
            client.close()

    asyncio.run(scenario())


def test_stuck_value_freezes_then_resumes(clock):
    async def scenario():
        async with serve_bank({1: EnergyMeter("D01", 1, base_kw=2.0, profile="flat")}, clock=clock) as served:
            start = clock()
            served.bank.add_fault(1, faults.stuck(start, start + timedelta(hours=6)))
            client = tcp_client(served.tcp_port)
            assert await client.connect()
            frozen = set()
            for _ in range(5):
                rr = await client.read_holding_registers(0, device_id=1)
                frozen.add(decode_registers(rr.registers))
                clock.advance(timedelta(hours=1))
            assert len(frozen) == 1
            clock.advance(timedelta(hours=1))
            rr = await client.read_holding_registers(0, device_id=1)
            assert decode_registers(rr.registers) > frozen.pop() + 10  # ≈ 2 kW × 6 h later
            client.close()

    asyncio.run(scenario())


def test_counter_reset_restarts_from_zero(clock):
    async def scenario():
        meter = EnergyMeter("D01", 1, base_kw=1.0, initial=300.0)
        async with serve_bank({1: meter}, clock=clock) as served:
            client = tcp_client(served.tcp_port)
            assert await client.connect()
            before = decode_registers((await client.read_holding_registers(0, device_id=1)).registers)
            assert before > 300
            clock.advance(timedelta(minutes=5))
            served.bank.add_fault(1, faults.counter_reset())  # at "now"
            clock.advance(timedelta(hours=2))
            after = decode_registers((await client.read_holding_registers(0, device_id=1)).registers)
            assert 0 < after < 10  # two hours at ~1 kW from zero
            assert meter.resets == (clock() - timedelta(hours=2),)
            client.close()

    asyncio.run(scenario())


def test_intermittent_fault_is_deterministic(clock):
    async def outcomes(seed: int) -> list[str]:
        bank = ModbusBank("b", clock=clock, seed=seed)
        bank.add_meter(1, EnergyMeter("D01", 1))
        bank.add_fault(1, faults.no_reply(probability=0.3))
        result = []
        for _ in range(200):
            try:
                await bank.request(1, 3, 0, 1)
                result.append("ok")
            except NoAnswer as exc:
                result.append(exc.outcome)
        return result

    first, again, other = (asyncio.run(outcomes(s)) for s in (1, 1, 2))
    assert first == again != other
    assert 30 < first.count("no_reply") < 90


def test_in_process_bad_crc_and_no_reply(clock):
    async def scenario():
        bank = ModbusBank("b", clock=clock)
        bank.add_meter(1, EnergyMeter("D01", 1))
        bank.add_fault(1, faults.bad_crc())
        with pytest.raises(NoAnswer) as info:
            await bank.request(1, 3, 0, 1)
        assert info.value.outcome == "bad_crc"
        bank.clear_faults()
        assert await bank.request(1, 3, 0, 1) == bank.registers_at(1)

    asyncio.run(scenario())


def test_fault_validation(clock):
    now = clock()
    with pytest.raises(ValueError, match="code=99"):
        faults.exception(99)
    with pytest.raises(ValueError, match="seconds=0"):
        faults.delay(0)
    with pytest.raises(ValueError, match="must be after start"):
        faults.no_reply(now, now)
    with pytest.raises(ValueError, match="kind='melt'"):
        faults.Fault("melt")
    with pytest.raises(ValueError, match="tz-aware"):
        faults.no_reply(now.replace(tzinfo=None))
    bank = ModbusBank("b", clock=clock)
    bank.add_meter(1, TemperatureSensor("T01", 1))
    with pytest.raises(ValueError, match="counter_reset needs a counter"):
        bank.add_fault(1, faults.counter_reset())
    with pytest.raises(KeyError, match="no slave_id=2"):
        bank.add_fault(2, faults.no_reply())
