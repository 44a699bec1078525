"""Register decoding, including agreement with the simulators' encoder (the other side of the wire)."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.registers import decode_registers, register_count


@pytest.mark.parametrize(
    ("regs", "data_type", "order", "scale", "expected"),
    [
        ([12345], "uint16", "big", 0.01, 123.45),  # the seed's example: 12345 -> 123.45 kWh
        ([0xFFFF], "uint16", "big", 1, 65535.0),
        ([0xFFFF], "int16", "big", 1, -1.0),
        ([0x8000], "int16", "big", 0.1, -3276.8),
        ([0x0001, 0x0000], "uint32", "big", 1, 65536.0),
        ([0x0000, 0x0001], "uint32", "little", 1, 65536.0),
        ([0xFFFF, 0xFFFE], "int32", "big", 1, -2.0),
        ([0xFFFE, 0xFFFF], "int32", "little", 1, -2.0),
        ([0x41B4, 0x0000], "float32", "big", 1, 22.5),
        ([0x0000, 0x41B4], "float32", "little", 1, 22.5),
        ([0x42F6, 0xE666], "float32", "big", 1, 123.45),  # float32 noise trimmed to 7 digits
        ([250], "uint16", "big", 10, 2500.0),
    ],
)
def test_decode_known_values(regs: list[int], data_type: str, order: str, scale: float, expected: float) -> None:
    assert decode_registers(regs, data_type, order, scale) == expected


@pytest.mark.parametrize(
    ("regs", "data_type", "message"),
    [
        ([1], "uint32", "uint32: expected 2 register(s), got 1"),
        ([1, 2], "uint16", "uint16: expected 1 register(s), got 2"),
        ([70000], "uint16", "register value: expected 0..65535, got 70000"),
        ([0x7FC0, 0], "float32", "float32: non-finite value"),
        ([0x7F80, 0], "float32", "float32: non-finite value"),
        ([1], "uint64", "data_type: expected one of"),
    ],
)
def test_decode_rejects(regs: list[int], data_type: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        decode_registers(regs, data_type)


def test_word_order_is_checked() -> None:
    with pytest.raises(ValueError, match="word_order: expected big or little, got 'middle'"):
        decode_registers([1], "uint16", "middle")


def test_register_count() -> None:
    assert [register_count(t) for t in ("uint16", "int16", "uint32", "int32", "float32")] == [1, 1, 2, 2, 2]


@given(
    data_type=st.sampled_from(["uint16", "int16", "uint32", "int32"]),
    order=st.sampled_from(["big", "little"]),
    scale=st.sampled_from([1, 0.1, 0.01, 0.001, 10]),
    raw=st.integers(min_value=-(2**31), max_value=2**32 - 1),
)
def test_integer_types_agree_with_the_simulator_encoder(data_type: str, order: str, scale: float, raw: int) -> None:
    simreg = pytest.importorskip("simulators.registers")
    lo, hi = {"uint16": (0, 0xFFFF), "int16": (-0x8000, 0x7FFF), "uint32": (0, 2**32 - 1),
              "int32": (-(2**31), 2**31 - 1)}[data_type]
    raw = lo + (raw - lo) % (hi - lo + 1)
    value = raw / round(1 / scale) if scale < 1 else raw * scale
    regs = simreg.encode_value(value, data_type, scale, order)
    assert decode_registers(regs, data_type, order, scale) == simreg.decode_registers(regs, data_type, scale, order)
    assert decode_registers(regs, data_type, order, scale) == value


@given(value=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), order=st.sampled_from(["big", "little"]))
def test_float32_round_trips_to_seven_digits(value: float, order: str) -> None:
    (bits,) = struct.unpack(">I", struct.pack(">f", value))
    regs = [bits >> 16, bits & 0xFFFF] if order == "big" else [bits & 0xFFFF, bits >> 16]
    got = decode_registers(regs, "float32", order)
    assert math.isclose(got, value, rel_tol=1e-6, abs_tol=1e-30)
