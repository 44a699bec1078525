"""A real pymodbus async client reading from ModbusBank over TCP, RTU-over-TCP and RTU via a pty pair."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from pymodbus.exceptions import ModbusIOException

from simulators.meters import EnergyMeter, TemperatureSensor, WaterMeter
from simulators.modbus_bank import ModbusBank, NoAnswer
from simulators.registers import decode_registers
from simulators.testing import energy_meters, rtu_client, serve_bank, tcp_client

pytestmark = pytest.mark.timeout(30)  # a hung socket or pty must fail fast, not eat the suite's budget


def test_tcp_read_matches_model_and_is_accounted(clock):
    async def scenario():
        async with serve_bank(energy_meters(3), clock=clock) as served:
            client = tcp_client(served.tcp_port)
            assert await client.connect()
            for sid in (1, 2, 3):
                rr = await client.read_holding_registers(0, count=1, device_id=sid)
                assert not rr.isError()
                expected = round(served.bank.value_at(sid) * 100) / 100
                assert decode_registers(rr.registers, "uint16", 0.01) == expected
                read = served.bank.reads[-1]
                assert (read.slave_id, read.outcome, read.registers, read.value) == (
                    sid, "ok", tuple(rr.registers), expected)
                assert read.at == clock() and read.meter_code == f"D{sid:02d}"
            client.close()

    asyncio.run(scenario())


def test_rtu_over_pty_pair_and_unknown_slave_is_silent(clock):
    async def scenario():
        async with serve_bank(energy_meters(8), clock=clock, tcp=False, rtu=True) as served:
            client = rtu_client(served.rtu_device, timeout=0.3)
            assert await client.connect()
            for sid in range(1, 9):
                rr = await client.read_holding_registers(0, count=1, device_id=sid)
                assert rr.registers == served.bank.registers_at(sid)
            before = len(served.bank.reads)
            with pytest.raises(ModbusIOException):
                await client.read_holding_registers(0, count=1, device_id=42)
            assert len(served.bank.reads) == before  # nobody answered, nothing served
            rr = await client.read_holding_registers(0, count=1, device_id=1)  # bus still usable
            assert not rr.isError()
            client.close()

    asyncio.run(scenario())


def test_rtu_framing_over_tcp(clock):
    async def scenario():
        async with serve_bank(energy_meters(2), clock=clock, tcp_framer="rtu") as served:
            client = tcp_client(served.tcp_port, framer="rtu")
            assert await client.connect()
            rr = await client.read_holding_registers(0, count=1, device_id=2)
            assert rr.registers == served.bank.registers_at(2)
            client.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("data_type", "scale", "word_order", "register"),
    [("uint32", 0.01, "big", 100), ("uint32", 0.001, "little", 7), ("float32", 1.0, "big", 0),
     ("float32", 1.0, "little", 40), ("int32", 0.1, "little", 3)],
)
def test_two_register_encodings_on_the_wire(clock, data_type, scale, word_order, register):
    async def scenario():
        async with serve_bank(clock=clock) as served:
            served.bank.add_meter(5, EnergyMeter("D05", 5, base_kw=30.0, initial=80_000.0), register=register,
                                  data_type=data_type, scale=scale, word_order=word_order)
            client = tcp_client(served.tcp_port)
            assert await client.connect()
            rr = await client.read_holding_registers(register, count=2, device_id=5)
            value = decode_registers(rr.registers, data_type, scale, word_order)
            assert value == served.bank.reads[-1].value
            assert value == pytest.approx(served.bank.value_at(5), abs=max(scale, 0.01))
            assert value > 80_000
            client.close()

    asyncio.run(scenario())


def test_negative_temperature_int16_and_input_registers(clock):
    async def scenario():
        async with serve_bank(clock=clock) as served:
            served.bank.add_meter(9, TemperatureSensor("T09", 1, mean=-10, amplitude=2), data_type="int16",
                                  scale=0.1)
            client = tcp_client(served.tcp_port)
            assert await client.connect()
            rr = await client.read_input_registers(0, count=1, device_id=9)
            value = decode_registers(rr.registers, "int16", 0.1)
            assert value < 0 and value == pytest.approx(served.bank.value_at(9), abs=0.05)
            client.close()

    asyncio.run(scenario())


def test_virtual_clock_drives_the_values(clock):
    async def scenario():
        meters = {1: EnergyMeter("D01", 1, base_kw=0.5, profile="flat"), 2: WaterMeter("W01", 2, profile="flat")}
        async with serve_bank(meters, clock=clock) as served:
            client = tcp_client(served.tcp_port)
            assert await client.connect()
            first = decode_registers((await client.read_holding_registers(0, device_id=1)).registers)
            clock.advance(timedelta(days=1))  # a simulated day, no real time
            second = decode_registers((await client.read_holding_registers(0, device_id=1)).registers)
            assert second - first == pytest.approx(12.0, abs=0.011)  # 0.5 kW × 24 h
            assert served.bank.reads[-1].at == clock()
            client.close()

    asyncio.run(scenario())


def test_illegal_address_write_and_overflow_answer_exceptions(clock):
    async def scenario():
        async with serve_bank(clock=clock) as served:
            bank = served.bank
            bank.add_meter(1, EnergyMeter("D01", 1, base_kw=1.0, initial=700.0))  # 700 kWh > 655.35: uint16 ×0.01
            bank.add_meter(2, EnergyMeter("D02", 2, base_kw=1.0))
            client = tcp_client(served.tcp_port)
            assert await client.connect()
            rr = await client.read_holding_registers(0, count=1, device_id=1)
            assert rr.isError() and rr.exception_code == 4
            assert bank.reads[-1].outcome == "encode_error"
            rr = await client.read_holding_registers(1, count=1, device_id=2)
            assert rr.isError() and rr.exception_code == 2
            rr = await client.read_holding_registers(0, count=2, device_id=2)
            assert rr.isError() and rr.exception_code == 2
            rr = await client.write_register(0, 1, device_id=2)
            assert rr.isError() and rr.exception_code == 1
            client.close()
            assert bank.stats == {"encode_error": 1, "illegal_address": 2}

    asyncio.run(scenario())


def test_add_meter_validation():
    bank = ModbusBank("b")
    bank.add_meter(1, EnergyMeter("D01", 1))
    with pytest.raises(ValueError, match="slave_id=1 already serves 'D01'"):
        bank.add_meter(1, EnergyMeter("D02", 2))
    with pytest.raises(ValueError, match="slave_id=0"):
        bank.add_meter(0, EnergyMeter("D02", 2))
    with pytest.raises(ValueError, match="data_type='uint64'"):
        bank.add_meter(2, EnergyMeter("D02", 2), data_type="uint64")
    with pytest.raises(ValueError, match="runs past 65535"):
        bank.add_meter(2, EnergyMeter("D02", 2), register=65535, data_type="uint32")
    with pytest.raises(KeyError, match="no slave_id=7"):
        bank.point(7)


def test_on_read_hook_and_in_process_requests(clock):
    seen = []

    async def scenario():
        bank = ModbusBank("inproc", clock=clock, on_read=seen.append, log_size=0)
        bank.add_meter(3, EnergyMeter("D03", 3))
        regs = await bank.request(3, 3, 0, 1)
        assert regs == bank.registers_at(3)
        with pytest.raises(NoAnswer) as info:
            await bank.request(4, 3, 0, 1)
        assert info.value.outcome == "unknown_slave"

    asyncio.run(scenario())
    assert [r.slave_id for r in seen] == [3] and len(seen[0].registers) == 1


def test_thousand_slaves_over_125_banks_in_one_loop(clock):
    """125 virtual gateways × 8 meters: every bank listens, every slave answers once."""

    async def scenario():
        banks = []
        for g in range(125):
            bank = ModbusBank(f"gw{g:03d}", clock=clock)
            for sid, meter in energy_meters(8, seed=g).items():
                bank.add_meter(sid, meter)
            banks.append((bank, await bank.start_tcp()))

        async def poll(bank, port):
            client = tcp_client(port, timeout=2)
            assert await client.connect()
            for sid in range(1, 9):
                rr = await client.read_holding_registers(0, device_id=sid)
                assert rr.registers == bank.registers_at(sid)
            client.close()

        try:
            await asyncio.gather(*(poll(b, p) for b, p in banks))
        finally:
            for bank, _ in banks:
                await bank.stop()
        assert sum(len(b.reads) for b, _ in banks) == 1000

    asyncio.run(scenario())
