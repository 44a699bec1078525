"""Fleet files: the tenants, gateways and devices to provision, in YAML (`tds registry load fleet.yaml`).

Format (see examples/fleet.yaml)::

    gateway_templates:                  # optional: named gateway shapes for gateway_groups
      meter8:
        payload_format: v1
        devices:
          - {code: D01, slave_id: 1, register: 0, data_type: uint16, scale: 0.01, unit: kWh}
    tenants:
      - code: acme                      # unique in the file
        name: ACME Energia
        gateways:                       # explicit gateways
          - mac: "aa:bb:cc:00:00:01"    # quote MACs; ':' or '-' separators, stored lower-case with ':'
            code: GW-0001
            payload_format: v1          # v1 (default) or legacy
            revoked: false              # optional; true revokes on load, false never reinstates
            devices:
              - {code: D01, slave_id: 1, register: 0, data_type: uint16, scale: 0.01, unit: kWh, kind: energy}
        gateway_groups:                 # compact form for big fleets: `count` gateways from one shape
          - template: meter8            # optional; `payload_format` / `devices` here override the template
            count: 200
            mac_start: "aa:bb:cc:01:00:00"   # gateway i gets mac_start + i (as a 48-bit number)
            code: "GW-{n:04d}"          # Python format with n = first + i
            first: 1                    # optional, default 1

Device keys: code (1-32 of A-Z a-z 0-9 _ . -), slave_id (1-247), register (0-65535), unit (a known unit),
data_type (uint16 default, int16, uint32, int32, float32), scale (default 0.01), word_order (big default,
little), kind (energy, water, temperature, other; default implied by the unit). At most 8 devices per
gateway, unique codes, no overlapping registers on one slave. MACs and gateway codes are unique across the
file (a duplicate error names both lines).

:func:`parse_fleet` accepts any YAML mapping node, so other files (scenarios) can embed a fleet section.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from tds_core.protocol import KNOWN_UNITS, is_device_code, is_gateway_code, normalize_mac
from tds_core.registry.model import (
    DATA_TYPES,
    KINDS,
    MAX_DEVICES_PER_GATEWAY,
    PAYLOAD_FORMATS,
    REGISTER_WIDTH,
    WORD_ORDERS,
    Device,
    Gateway,
    Tenant,
    device_conflict,
)
from tds_core.yamlconf import (
    ConfigError,
    YList,
    YMap,
    check_keys,
    items,
    load_yaml,
    one_of,
    optional,
    require,
    require_bool,
    require_float,
    require_int,
    require_list,
    require_map,
    require_str,
)

MAX_GROUP_COUNT = 100_000
_MAC_LIMIT = 1 << 48

_DEVICE_KEYS = {"code", "slave_id", "register", "data_type", "scale", "unit", "kind", "word_order"}
_SHAPE_KEYS = {"payload_format", "devices"}
_GATEWAY_KEYS = {"mac", "code", "revoked"} | _SHAPE_KEYS
_GROUP_KEYS = {"template", "count", "mac_start", "code", "first", "revoked"} | _SHAPE_KEYS
_TENANT_KEYS = {"code", "name", "gateways", "gateway_groups"}
_TOP_KEYS = {"tenants", "gateway_templates"}


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """A validated fleet: tenants and their gateways (each with its devices), in file order."""

    tenants: tuple[Tenant, ...]
    gateways: tuple[Gateway, ...]
    source: str = "<fleet>"

    @property
    def device_count(self) -> int:
        return sum(len(g.devices) for g in self.gateways)


def load_fleet(path: str | Path) -> FleetSpec:
    """Load and validate a fleet file. Raises ConfigError (`file:line: field: problem`)."""
    doc = load_yaml(path)
    return parse_fleet(doc)


def parse_fleet(node: YMap) -> FleetSpec:
    """Validate a fleet mapping (a whole fleet file, or a `fleet:` section of another file)."""
    check_keys(node, _TOP_KEYS, required={"tenants"})
    templates: dict[str, tuple[str, tuple[Device, ...]]] = {}
    tmap = optional(node, "gateway_templates", require_map, default=None)
    for name in tmap or {}:
        shape = require_map(tmap, name)
        check_keys(shape, _SHAPE_KEYS)
        templates[name] = (one_of(shape, "payload_format", PAYLOAD_FORMATS, default="v1"), _devices(shape))

    seen_tenants: dict[str, int] = {}
    macs: dict[str, tuple[int, str]] = {}
    codes: dict[str, tuple[int, str]] = {}
    tenants: list[Tenant] = []
    gateways: list[Gateway] = []

    def claim(table: dict[str, tuple[int, str]], what: str, value: str, where: YMap | YList, member: object,
              label: str = "") -> None:
        line, field = where.line_of(member), where.child_path(member) + label
        if value in table:
            first_line, first_field = table[value]
            raise ConfigError(f"duplicate {what} {value} (also at line {first_line}, {first_field})",
                              file=where.file, line=line, field=field)
        table[value] = (line, field)

    tenant_list = require_list(node, "tenants")
    for t in items(tenant_list):
        check_keys(t, _TENANT_KEYS, required={"code", "name"})
        code = require_str(t, "code")
        if code in seen_tenants:
            raise t.error("code", f"duplicate tenant code {code!r} (also at line {seen_tenants[code]})")
        seen_tenants[code] = t.line_of("code")
        tenants.append(Tenant(code, require_str(t, "name")))

        for g in items(optional(t, "gateways", require_list, default=YList())):
            check_keys(g, _GATEWAY_KEYS, required={"mac", "code"})
            mac = require(g, "mac", normalize_mac, expected="a MAC like aa:bb:cc:dd:ee:ff")
            gw_code = require(g, "code", _gateway_code, expected="a gateway code (1-64 characters, no / + #)")
            claim(macs, "MAC", mac, g, "mac")
            claim(codes, "gateway code", gw_code, g, "code")
            gateways.append(Gateway(mac, gw_code, code, one_of(g, "payload_format", PAYLOAD_FORMATS, default="v1"),
                                    _devices(g), require_bool(g, "revoked", default=False)))

        for grp in items(optional(t, "gateway_groups", require_list, default=YList())):
            check_keys(grp, _GROUP_KEYS, required={"count", "mac_start", "code"})
            fmt, devices = "v1", ()
            if "template" in grp:
                name = one_of(grp, "template", list(templates))
                fmt, devices = templates[name]
            fmt = one_of(grp, "payload_format", PAYLOAD_FORMATS, default=fmt)
            devices = _devices(grp) if "devices" in grp else devices
            count = require_int(grp, "count", min=1, max=MAX_GROUP_COUNT)
            first = require_int(grp, "first", min=0, max=10**9, default=1)
            start = int(require(grp, "mac_start", normalize_mac, expected="a MAC like aa:bb:cc:dd:ee:ff")
                        .replace(":", ""), 16)
            if start + count > _MAC_LIMIT:
                raise grp.error("count", f"mac_start + {count} runs past ff:ff:ff:ff:ff:ff")
            pattern = require_str(grp, "code")
            revoked = require_bool(grp, "revoked", default=False)
            for i in range(count):
                raw = f"{start + i:012x}"
                mac = ":".join(raw[k:k + 2] for k in range(0, 12, 2))
                gw_code = _format_code(grp, pattern, first + i)
                label = f" (gateway {i} of the group: {gw_code})"
                claim(macs, "MAC", mac, grp, "mac_start", label)
                claim(codes, "gateway code", gw_code, grp, "code", label)
                gateways.append(Gateway(mac, gw_code, code, fmt, devices, revoked))
    return FleetSpec(tuple(tenants), tuple(gateways), node.file)


def _gateway_code(value: object) -> str:
    if not is_gateway_code(value):
        raise ValueError(value)
    return value  # type: ignore[return-value]


def _format_code(grp: YMap, pattern: str, n: int) -> str:
    try:
        code = pattern.format(n=n)
    except (KeyError, IndexError, ValueError, AttributeError):
        raise grp.error("code", f"expected a format using only {{n}}, like 'GW-{{n:04d}}', got {pattern!r}") from None
    if not is_gateway_code(code):
        raise grp.error("code", f"pattern {pattern!r} gives {code!r} for n={n}: not a valid gateway code")
    return code


def _devices(shape: YMap) -> tuple[Device, ...]:
    lst = optional(shape, "devices", require_list, default=YList())
    if len(lst) > MAX_DEVICES_PER_GATEWAY:
        raise shape.error("devices", f"at most {MAX_DEVICES_PER_GATEWAY} devices per gateway, got {len(lst)}")
    devices = tuple(_device(d) for d in items(lst))
    clash = device_conflict(devices)
    if clash:
        i, j, message = clash
        raise lst.error(j, f"{message} (line {lst.line_of(i)})")
    return devices


def _device(d: YMap) -> Device:
    check_keys(d, _DEVICE_KEYS, required={"code", "slave_id", "register", "unit"})
    code = require(d, "code", _device_code, expected="1-32 characters of A-Z a-z 0-9 _ . -")
    data_type = one_of(d, "data_type", DATA_TYPES, default="uint16")
    scale = require_float(d, "scale", default=0.01)
    if scale == 0 or not math.isfinite(scale):
        raise d.error("scale", f"expected a finite non-zero number, got {scale}")
    return Device(
        code=code,
        slave_id=require_int(d, "slave_id", min=1, max=247),
        register=require_int(d, "register", min=0, max=65536 - REGISTER_WIDTH[data_type]),
        unit=one_of(d, "unit", KNOWN_UNITS),
        data_type=data_type,
        scale=scale,
        kind=optional(d, "kind", one_of, choices=KINDS),
        word_order=one_of(d, "word_order", WORD_ORDERS, default="big"),
    )


def _device_code(value: object) -> str:
    if not is_device_code(value):
        raise ValueError(value)
    return value  # type: ignore[return-value]
