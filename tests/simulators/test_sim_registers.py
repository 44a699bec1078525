"""Register encodings: round trips for every type and word order, and clear errors out of range."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulators.registers import DATA_TYPES, EncodingError, decode_registers, encode_value, register_count

SAMPLES = {
    "uint16": [0.0, 1.0, 123.45, 655.35],
    "int16": [-327.68, -12.34, 0.0, 327.67],
    "uint32": [0.0, 123456.78, 42949672.95],
    "int32": [-21474836.48, -1.5, 21474836.47],
    "float32": [-1e6, -0.5, 0.0, 23.75, 1e6],
}


@pytest.mark.parametrize("word_order", ["big", "little"])
@pytest.mark.parametrize("data_type", DATA_TYPES)
def test_round_trip_every_type_and_word_order(data_type, word_order):
    for value in SAMPLES[data_type]:
        regs = encode_value(value, data_type, 0.01 if data_type != "float32" else 1.0, word_order)
        assert len(regs) == register_count(data_type)
        assert all(0 <= r <= 0xFFFF for r in regs)
        back = decode_registers(regs, data_type, 0.01 if data_type != "float32" else 1.0, word_order)
        assert back == pytest.approx(value, abs=1e-9 if data_type != "float32" else 1e-3)


def test_seed_encoding_is_exact_like_firmware_division():
    # Layer 1 of the seed: uint16 holding register, valor = raw / 100.0
    regs = encode_value(123.45, "uint16", 0.01)
    assert regs == [12345]
    assert decode_registers(regs, "uint16", 0.01) == 12345 / 100.0 == 123.45


def test_word_orders_swap_the_two_registers():
    assert encode_value(0x12345678, "uint32", 1, "big") == [0x1234, 0x5678]
    assert encode_value(0x12345678, "uint32", 1, "little") == [0x5678, 0x1234]
    big = encode_value(1.5, "float32", 1, "big")
    assert big == [int.from_bytes(struct.pack(">f", 1.5)[:2], "big"), 0]
    assert encode_value(1.5, "float32", 1, "little") == big[::-1]
    assert encode_value(-2, "int32", 1, "big") == [0xFFFF, 0xFFFE]


@pytest.mark.parametrize(
    ("value", "data_type", "scale"),
    [(655.36, "uint16", 0.01), (-0.01, "uint16", 0.01), (327.68, "int16", 0.01), (-1, "uint32", 1),
     (2**31, "int32", 1), (1e39, "float32", 1.0), (math.nan, "float32", 1.0), (math.inf, "uint32", 1)],
)
def test_out_of_range_raises_a_clear_error(value, data_type, scale):
    with pytest.raises(EncodingError) as info:
        encode_value(value, data_type, scale)
    assert data_type in str(info.value) or "finite" in str(info.value)
    assert f"value={value!r}" in str(info.value)


def test_wrap_rolls_over_like_a_counter_register():
    assert encode_value(655.36, "uint16", 0.01, overflow="wrap") == [0]
    assert encode_value(700.00, "uint16", 0.01, overflow="wrap") == [70000 - 65536]
    assert encode_value(-1, "int16", 1, overflow="wrap") == [0xFFFF]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"data_type": "uint8"}, "data_type"), ({"word_order": "middle"}, "word_order"), ({"scale": 0}, "scale"),
     ({"scale": -0.1}, "scale"), ({"overflow": "clip"}, "overflow")],
)
def test_bad_parameters_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        encode_value(1.0, **kwargs)


def test_decode_checks_register_count_and_range():
    with pytest.raises(ValueError, match="exactly 2"):
        decode_registers([1], "uint32")
    with pytest.raises(ValueError, match="16-bit"):
        decode_registers([70000], "uint16")


@given(raw=st.integers(min_value=-(2**31), max_value=2**31 - 1), order=st.sampled_from(["big", "little"]))
def test_int32_round_trip_property(raw, order):
    value = raw / 100
    assert decode_registers(encode_value(value, "int32", 0.01, order), "int32", 0.01, order) == value


@given(value=st.floats(width=32, allow_nan=False, allow_infinity=False), order=st.sampled_from(["big", "little"]))
def test_float32_round_trip_property(value, order):
    # decoding keeps 7 significant digits (what a float32 carries), like the firmware
    assert decode_registers(encode_value(value, "float32", 1.0, order), "float32", 1.0, order) == float(f"{value:.7g}")


@pytest.mark.parametrize("word_order", ["big", "little"])
@pytest.mark.parametrize("data_type", DATA_TYPES)
def test_bank_accounting_decodes_like_the_firmware(data_type, word_order):
    """The harness compares what the bank served with what was stored: both sides must decode alike."""
    firmware_registers = pytest.importorskip("firmware.registers")
    scales = [1.0, 0.1, 0.01, 0.001, 0.25] if data_type != "float32" else [1.0, 0.01, 0.5]
    for scale in scales:
        for value in SAMPLES[data_type] + [1.23456789, 80123.456]:
            try:
                regs = encode_value(value, data_type, scale, word_order)
            except EncodingError:
                continue
            ours = decode_registers(regs, data_type, scale, word_order)
            theirs = firmware_registers.decode_registers(regs, data_type, word_order, scale)
            assert ours == theirs, (regs, data_type, scale, word_order)
