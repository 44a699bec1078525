"""Registry model: what provisioning describes (Tenant, Gateway, Device) and what the store reports.

Constructors validate and raise ValueError naming the field, the value and what was expected, so code
that builds a fleet programmatically (scenarios, tests) gets the same checks as a fleet file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, get_args

from tds_core.protocol import KNOWN_UNITS, is_device_code, is_gateway_code, normalize_mac

DataType = Literal["uint16", "int16", "uint32", "int32", "float32"]
WordOrder = Literal["big", "little"]
Kind = Literal["energy", "water", "temperature", "other"]
PayloadFormat = Literal["v1", "legacy"]
Status = Literal["active", "revoked"]

DATA_TYPES: tuple[str, ...] = get_args(DataType)
WORD_ORDERS: tuple[str, ...] = get_args(WordOrder)
KINDS: tuple[str, ...] = get_args(Kind)
PAYLOAD_FORMATS: tuple[str, ...] = get_args(PayloadFormat)
STATUSES: tuple[str, ...] = get_args(Status)

MAX_DEVICES_PER_GATEWAY = 8  # the seed firmware aggregates up to 8 Modbus devices per message
REGISTER_WIDTH = {"uint16": 1, "int16": 1, "uint32": 2, "int32": 2, "float32": 2}

# The kind a unit implies when a device does not say (legacy messages carry it as "tipo").
_KIND_BY_UNIT = {"kWh": "energy", "Wh": "energy", "MWh": "energy", "kW": "energy", "W": "energy",
                 "kvarh": "energy", "m³": "water", "L": "water", "°C": "temperature", "°F": "temperature"}


def default_kind(unit: str) -> str:
    """The kind implied by a unit: energy, water, temperature, else other."""
    return _KIND_BY_UNIT.get(unit, "other")


def _choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")


def _int_range(name: str, value: object, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{name}: expected an integer from {lo} to {hi}, got {value!r}")


@dataclass(frozen=True, slots=True)
class Tenant:
    """A customer account (conta)."""

    code: str
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not self.code.strip():
            raise ValueError(f"tenant code: expected a non-empty string, got {self.code!r}")
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"tenant name: expected a non-empty string, got {self.name!r}")


@dataclass(frozen=True, slots=True)
class Device:
    """A Modbus meter behind a gateway: where to read it and what the value means."""

    code: str
    slave_id: int
    register: int
    unit: str
    data_type: DataType = "uint16"
    scale: float = 0.01  # the schema's default: raw counts of 0.01 units
    kind: Kind | None = None  # None: implied by the unit (see default_kind)
    word_order: WordOrder = "big"

    def __post_init__(self) -> None:
        if not is_device_code(self.code):
            raise ValueError(f"device code: expected 1-32 characters of A-Z a-z 0-9 _ . -, got {self.code!r}")
        _int_range("slave_id", self.slave_id, 1, 247)
        _choice("data_type", self.data_type, DATA_TYPES)
        _int_range("register", self.register, 0, 65536 - REGISTER_WIDTH[self.data_type])
        _choice("word_order", self.word_order, WORD_ORDERS)
        if not isinstance(self.scale, (int, float)) or isinstance(self.scale, bool) \
                or not math.isfinite(self.scale) or self.scale == 0:
            raise ValueError(f"scale: expected a finite non-zero number, got {self.scale!r}")
        if self.unit not in KNOWN_UNITS:
            raise ValueError(f"unit: expected one of {', '.join(sorted(KNOWN_UNITS))}, got {self.unit!r}")
        if self.kind is None:
            object.__setattr__(self, "kind", default_kind(self.unit))
        _choice("kind", self.kind, KINDS)
        object.__setattr__(self, "scale", float(self.scale))

    @property
    def registers(self) -> range:
        """The holding registers this device's value occupies."""
        return range(self.register, self.register + REGISTER_WIDTH[self.data_type])


@dataclass(frozen=True, slots=True)
class Gateway:
    """A gateway as provisioned. `revoke=True` revokes it on provisioning; False never reinstates."""

    mac: str
    code: str
    tenant_code: str
    payload_format: PayloadFormat = "v1"
    devices: tuple[Device, ...] = ()
    revoke: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "mac", normalize_mac(self.mac))
        if not is_gateway_code(self.code):
            raise ValueError(f"gateway code: expected 1-64 characters without '/', '+', '#', got {self.code!r}")
        _choice("payload_format", self.payload_format, PAYLOAD_FORMATS)
        object.__setattr__(self, "devices", tuple(self.devices))
        if len(self.devices) > MAX_DEVICES_PER_GATEWAY:
            raise ValueError(f"devices: at most {MAX_DEVICES_PER_GATEWAY} per gateway, got {len(self.devices)}")
        problem = device_conflict(self.devices)
        if problem:
            raise ValueError(f"devices: {problem[2]}")


def device_conflict(devices: tuple[Device, ...] | list[Device]) -> tuple[int, int, str] | None:
    """The first clash among a gateway's devices as (earlier index, later index, message), else None.

    Codes must be unique and no two devices on one slave may read overlapping registers.
    """
    for j, dev in enumerate(devices):
        for i in range(j):
            other = devices[i]
            if other.code == dev.code:
                return i, j, f"duplicate device code {dev.code!r}"
            if other.slave_id == dev.slave_id and set(other.registers) & set(dev.registers):
                return i, j, (f"device {dev.code!r} reads slave {dev.slave_id} register {dev.register} "
                              f"({dev.data_type}), overlapping device {other.code!r}")
    return None


@dataclass(frozen=True, slots=True)
class GatewayRecord:
    """A gateway as stored, with its liveness and devices (for listing and `show`)."""

    id: int
    tenant_code: str
    mac: str
    code: str
    status: Status
    revoked_at: datetime | None
    payload_format: PayloadFormat
    last_seen: datetime | None
    online: bool
    devices: tuple[Device, ...] = field(default=())
