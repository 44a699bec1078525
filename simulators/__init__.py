"""Modbus slave simulators: meter models, register encodings, fault injection, pymodbus banks, pty bridge.

Harness only: ``tds_core`` and ``firmware`` never import this package.
"""

from .clock import Clock, ManualClock, ScaledClock, system_clock
from .faults import FAULT_KINDS, Fault
from .meters import (
    DEFAULT_ORIGIN,
    PROFILES,
    EnergyMeter,
    LoadProfile,
    Meter,
    TemperatureSensor,
    WaterMeter,
    meter_from_spec,
)
from .modbus_bank import ModbusBank, NoAnswer, Point, ServedRead, bank_from_meters
from .pty_bridge import PtyPair
from .registers import EncodingError, decode_registers, encode_value, register_count

__all__ = [
    "DEFAULT_ORIGIN",
    "FAULT_KINDS",
    "PROFILES",
    "Clock",
    "EncodingError",
    "EnergyMeter",
    "Fault",
    "LoadProfile",
    "ManualClock",
    "Meter",
    "ModbusBank",
    "NoAnswer",
    "Point",
    "PtyPair",
    "ScaledClock",
    "ServedRead",
    "TemperatureSensor",
    "WaterMeter",
    "bank_from_meters",
    "decode_registers",
    "encode_value",
    "meter_from_spec",
    "register_count",
    "system_clock",
]
