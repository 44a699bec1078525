"""Modbus register decoding: 16-bit registers -> a scaled float.

Data types: ``uint16``/``int16`` (one register), ``uint32``/``int32``/``float32`` (two registers).
Word order ``big`` means the first register holds the high word (the Modbus convention);
``little`` means the first register holds the low word (many meters, "word swapped").
Bytes inside a register are always big-endian, as Modbus puts them on the wire.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Literal

__all__ = ["DATA_TYPES", "WORD_ORDERS", "DataType", "WordOrder", "decode_registers", "register_count"]

DataType = Literal["uint16", "int16", "uint32", "int32", "float32"]
WordOrder = Literal["big", "little"]

# data type -> (registers, struct code for the big-endian bytes)
_LAYOUT: dict[str, tuple[int, str]] = {
    "uint16": (1, ">H"),
    "int16": (1, ">h"),
    "uint32": (2, ">I"),
    "int32": (2, ">i"),
    "float32": (2, ">f"),
}
DATA_TYPES: tuple[str, ...] = tuple(_LAYOUT)
WORD_ORDERS: tuple[str, ...] = ("big", "little")


def register_count(data_type: str) -> int:
    """How many 16-bit registers ``data_type`` spans. Raises ValueError for an unknown type."""
    try:
        return _LAYOUT[data_type][0]
    except KeyError:
        raise ValueError(f"data_type: expected one of {', '.join(DATA_TYPES)}, got {data_type!r}") from None


def decode_registers(
    registers: Sequence[int], data_type: str, word_order: str = "big", scale: float = 1.0
) -> float:
    """Decode raw registers into ``value * scale``.

    Raises ValueError for a wrong register count, a register outside 0..65535, an unknown type or word
    order, or a non-finite float (NaN/inf cannot be published as JSON and are never a real reading).
    """
    count = register_count(data_type)
    if word_order not in WORD_ORDERS:
        raise ValueError(f"word_order: expected big or little, got {word_order!r}")
    if len(registers) != count:
        raise ValueError(f"{data_type}: expected {count} register(s), got {len(registers)}")
    for r in registers:
        if not 0 <= r <= 0xFFFF:
            raise ValueError(f"register value: expected 0..65535, got {r}")
    words = list(registers) if word_order == "big" else list(reversed(registers))
    raw_bytes = b"".join(w.to_bytes(2, "big") for w in words)
    (raw,) = struct.unpack(_LAYOUT[data_type][1], raw_bytes)
    if data_type == "float32":
        if not math.isfinite(raw):
            raise ValueError(f"float32: non-finite value {raw!r} from registers {list(registers)}")
        raw = float(f"{raw:.7g}")  # float32 carries ~7 significant digits; drop the binary noise
    # 12345 * 0.01 == 123.45000000000002 but 12345 / 100 == 123.45: divide when scale is 1/n
    inverse = 1.0 / scale
    n = round(inverse)
    value = raw / n if n > 1 and math.isclose(inverse, n, rel_tol=1e-12) else raw * scale
    if not math.isfinite(value):
        raise ValueError(f"scaled value is not finite: {raw!r} * {scale!r}")
    return float(value)
