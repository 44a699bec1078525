"""Modbus register encodings: engineering value <-> 16-bit registers.

A point is described by ``data_type`` (uint16, int16, uint32, int32, float32), ``scale`` (raw * scale = value,
e.g. 0.01 for the seed's "uint16 / 100") and ``word_order`` for two-register types ('big': high word first,
'little': low word first). Bytes inside a register are always big-endian, as Modbus mandates.

The firmware decodes with the same rules but may not import ``simulators``; it keeps its own copy.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Literal

DataType = Literal["uint16", "int16", "uint32", "int32", "float32"]
WordOrder = Literal["big", "little"]
Overflow = Literal["error", "wrap"]

DATA_TYPES: tuple[str, ...] = ("uint16", "int16", "uint32", "int32", "float32")
WORD_ORDERS: tuple[str, ...] = ("big", "little")

# struct code, register count, integer range (None for float)
_LAYOUT: dict[str, tuple[str, int, tuple[int, int] | None]] = {
    "uint16": ("H", 1, (0, 0xFFFF)),
    "int16": ("h", 1, (-0x8000, 0x7FFF)),
    "uint32": ("I", 2, (0, 0xFFFF_FFFF)),
    "int32": ("i", 2, (-0x8000_0000, 0x7FFF_FFFF)),
    "float32": ("f", 2, None),
}
_FLOAT32_MAX = 3.4028234663852886e38


class EncodingError(ValueError):
    """A value cannot be represented in the requested register encoding."""


def register_count(data_type: str) -> int:
    """Number of 16-bit registers a value of ``data_type`` occupies (1 or 2)."""
    return _layout(data_type)[1]


def _layout(data_type: str) -> tuple[str, int, tuple[int, int] | None]:
    try:
        return _LAYOUT[data_type]
    except (KeyError, TypeError):
        raise ValueError(f"data_type={data_type!r} is not supported; expected one of {DATA_TYPES}") from None


def _check_common(scale: float, word_order: str) -> None:
    if word_order not in WORD_ORDERS:
        raise ValueError(f"word_order={word_order!r} is not supported; expected 'big' or 'little'")
    if not isinstance(scale, int | float) or isinstance(scale, bool) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale={scale!r} is invalid; expected a finite number > 0 (raw * scale = value)")


def _divisor(scale: float) -> int | None:
    """Return n when scale == 1/n for an integer n (0.01 -> 100), so raw / n is exact like the firmware's."""
    inverse = 1.0 / scale
    n = round(inverse)
    if n >= 1 and abs(inverse - n) <= 1e-9 * n:
        return n
    return None


def raw_from_value(value: float, scale: float) -> float:
    """Raw (unscaled) number for ``value``: value / scale, computed as value * n when scale is 1/n."""
    n = _divisor(scale)
    return value * n if n is not None else value / scale


def value_from_raw(raw: float, scale: float) -> float:
    """Engineering value for a raw number: raw * scale, computed as raw / n when scale is 1/n (exact grid)."""
    n = _divisor(scale)
    return raw / n if n is not None else raw * scale


def _split_words(data: bytes, word_order: str) -> list[int]:
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    return words[::-1] if word_order == "little" else words


def encode_value(
    value: float,
    data_type: str = "uint16",
    scale: float = 0.01,
    word_order: str = "big",
    *,
    overflow: str = "error",
) -> list[int]:
    """Encode an engineering ``value`` into registers.

    Integer types store ``round(value / scale)``; float32 stores ``value / scale`` as an IEEE-754 single.
    ``overflow='error'`` raises :class:`EncodingError` when the raw number does not fit the type;
    ``overflow='wrap'`` keeps the low bits, like a real counter register rolling over (integers only).
    """
    code, count, bounds = _layout(data_type)
    _check_common(scale, word_order)
    if overflow not in ("error", "wrap"):
        raise ValueError(f"overflow={overflow!r} is not supported; expected 'error' or 'wrap'")
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise EncodingError(f"value={value!r} cannot be encoded as {data_type}: expected a finite number")
    raw = raw_from_value(float(value), scale)
    if bounds is None:
        if abs(raw) > _FLOAT32_MAX:
            raise EncodingError(
                f"value={value!r} with scale={scale} gives raw {raw!r}, outside float32 range ±{_FLOAT32_MAX:.6g}"
            )
        data = struct.pack(">f", raw)
    else:
        raw_int = round(raw)
        low, high = bounds
        if not low <= raw_int <= high:
            if overflow == "error":
                raise EncodingError(
                    f"value={value!r} with scale={scale} gives raw {raw_int}, outside {data_type} range "
                    f"[{low}, {high}] (representable values {value_from_raw(low, scale)}.."
                    f"{value_from_raw(high, scale)})"
                )
            span = high - low + 1
            raw_int = (raw_int - low) % span + low
        data = struct.pack(f">{code}", raw_int)
    words = _split_words(data, word_order)
    assert len(words) == count
    return words


def decode_registers(
    registers: Sequence[int],
    data_type: str = "uint16",
    scale: float = 0.01,
    word_order: str = "big",
) -> float:
    """Decode registers (as read from the device) into the engineering value: raw * scale.

    Matches ``firmware.registers.decode_registers`` (note its argument order: registers, data_type, word_order,
    scale) so what the bank records as served is what the firmware publishes; a test checks they agree.
    """
    code, count, bounds = _layout(data_type)
    _check_common(scale, word_order)
    if len(registers) != count:
        raise ValueError(f"registers={list(registers)!r}: {data_type} needs exactly {count} register(s)")
    for reg in registers:
        if not isinstance(reg, int) or not 0 <= reg <= 0xFFFF:
            raise ValueError(f"register value {reg!r} is not a 16-bit unsigned integer (0..65535)")
    words = list(registers)[::-1] if word_order == "little" else list(registers)
    data = b"".join(w.to_bytes(2, "big") for w in words)
    (raw,) = struct.unpack(f">{code}", data)
    if bounds is None:
        if not math.isfinite(raw):
            raise ValueError(f"float32: non-finite value {raw!r} from registers {list(registers)}")
        # a float32 carries ~7 significant digits; drop the binary noise exactly as firmware/registers.py does
        raw = float(f"{raw:.7g}")
    return value_from_raw(raw, scale)
