"""The `fleet:` section of a scenario: a registry fleet file plus what only the simulation needs.

The section is the format of `tds registry load` (tenants, gateways, gateway_groups, gateway_templates;
see tds_core/registry/fleet.py) with a few extra keys, so the registry the core sees is provisioned from
exactly the fleet the harness simulates:

* on a device: `model: {kind: energy|water|temperature, ...params}` (simulators.meters.meter_from_spec;
  default: the kind implied by the device's unit, with the model's default parameters);
* on a gateway, a gateway group or a template: `poll_interval: 5m` (default 5m) and `group: NAME`
  (a label that timeline events and expectations use to pick gateways; default: none).

The extra keys are validated here (file:line errors) and removed before the rest goes to
`tds_core.registry.fleet.parse_fleet`, which validates everything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from tds_core.registry.fleet import FleetSpec, parse_fleet
from tds_core.registry.model import Device, Gateway, default_kind
from tds_core.yamlconf import ConfigError, YList, YMap, check_keys, items, require, require_str

from .durations import EXPECTED as DURATION_EXPECTED
from .durations import parse_duration

MODEL_KINDS = ("energy", "water", "temperature")
DEFAULT_POLL = timedelta(minutes=5)
_GATEWAY_EXTRAS = ("poll_interval", "group")


@dataclass(frozen=True)
class MeterModel:
    """Which simulated meter serves a device: a model kind and its parameters."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SimGateway:
    """A gateway of the scenario: its registry record plus simulation settings."""

    tenant: str
    gateway: Gateway
    models: tuple[MeterModel, ...]  # one per device, same order
    poll_interval: timedelta = DEFAULT_POLL
    group: str | None = None

    @property
    def mac(self) -> str:
        return self.gateway.mac

    @property
    def code(self) -> str:
        return self.gateway.code


@dataclass(frozen=True)
class ScenarioFleet:
    """The validated fleet: the registry spec (for provisioning) and the simulated gateways (same order)."""

    registry: FleetSpec
    gateways: tuple[SimGateway, ...]

    @property
    def groups(self) -> dict[str, list[str]]:
        """Group name -> MACs."""
        out: dict[str, list[str]] = {}
        for g in self.gateways:
            if g.group:
                out.setdefault(g.group, []).append(g.mac)
        return out

    def by_code(self) -> dict[str, SimGateway]:
        return {g.code: g for g in self.gateways}

    def by_mac(self) -> dict[str, SimGateway]:
        return {g.mac: g for g in self.gateways}


@dataclass
class _Extras:
    poll: timedelta | None = None
    group: str | None = None
    models: list[tuple[str, MeterModel | None]] | None = None  # (device code, model) per device node


def parse_scenario_fleet(node: YMap, seed: int = 0) -> ScenarioFleet:
    """Validate a scenario's `fleet:` mapping (extra keys first, then the registry part)."""
    memo: dict[int, _Extras] = {}
    templates = node.get("gateway_templates")
    if isinstance(templates, YMap):
        for name in templates:
            if isinstance(templates[name], YMap):
                _strip(templates[name], memo, seed)
    tenants = node.get("tenants")
    if isinstance(tenants, YList):
        for tenant in tenants:
            if not isinstance(tenant, YMap):
                continue
            for key in ("gateways", "gateway_groups"):
                lst = tenant.get(key)
                if isinstance(lst, YList):
                    for g in lst:
                        if isinstance(g, YMap):
                            _strip(g, memo, seed)
    spec = parse_fleet(node)
    # Walk the tenants as parse_fleet does (per tenant: explicit gateways, then groups) to pair extras.
    extras: list[tuple[_Extras, _Extras | None]] = []
    for tenant in items(tenants):
        for g in items(tenant.get("gateways") or YList()):
            extras.append((memo[id(g)], None))
        for grp in items(tenant.get("gateway_groups") or YList()):
            template = memo.get(id(templates[grp["template"]])) if "template" in grp else None
            extras.extend([(memo[id(grp)], template)] * grp["count"])
    if len(extras) != len(spec.gateways):  # a change in parse_fleet's order would break the pairing
        raise AssertionError(f"fleet walk found {len(extras)} gateways, parse_fleet {len(spec.gateways)}")
    gateways = []
    for gw, (own, template) in zip(spec.gateways, extras, strict=True):
        poll = own.poll or (template.poll if template else None) or DEFAULT_POLL
        group = own.group or (template.group if template else None)
        model_source = own.models if own.models is not None else (template.models if template else None)
        gateways.append(SimGateway(gw.tenant_code, gw, _models(gw.devices, model_source or []), poll, group))
    return ScenarioFleet(spec, tuple(gateways))


def _models(devices: tuple[Device, ...],
            declared: list[tuple[str, MeterModel | None]]) -> tuple[MeterModel, ...]:
    by_code = dict(declared)
    out = []
    for d in devices:
        model = by_code.get(d.code)
        if model is None:
            kind = d.kind or default_kind(d.unit)
            model = MeterModel(kind if kind in MODEL_KINDS else "energy")
        out.append(model)
    return tuple(out)


def _strip(shape: YMap, memo: dict[int, _Extras], seed: int) -> None:
    """Validate and remove the scenario-only keys of a gateway / group / template node (once per node)."""
    if id(shape) in memo:
        return
    extras = _Extras()
    if "poll_interval" in shape:
        extras.poll = require(shape, "poll_interval", parse_duration, expected=DURATION_EXPECTED)
        if extras.poll < timedelta(seconds=1):
            raise shape.error("poll_interval", f"expected at least 1s, got {shape['poll_interval']!r}")
    if "group" in shape:
        extras.group = require_str(shape, "group")
    for key in _GATEWAY_EXTRAS:
        shape.pop(key, None)
    devices = shape.get("devices")
    if isinstance(devices, YList):
        extras.models = []
        for d in devices:
            if isinstance(d, YMap):
                code = d.get("code")
                model = _model(d, seed) if "model" in d else None
                d.pop("model", None)
                extras.models.append((str(code), model))
    memo[id(shape)] = extras


def _model(device: YMap, seed: int) -> MeterModel:
    node = device["model"]
    if isinstance(node, str):
        node_map = YMap({"kind": node})
        node_map.file, node_map.line, node_map.path, node_map._lines = (
            device.file, device.line_of("model"), device.child_path("model"), {})
        node = node_map
    if not isinstance(node, YMap):
        raise device.error("model", f"expected a mapping like {{kind: energy, base_kw: 2}}, got {node!r}")
    check_keys(node, set(node) | {"kind"}, required={"kind"})
    kind = node["kind"]
    if kind not in MODEL_KINDS:
        raise node.error("kind", f"expected one of {', '.join(MODEL_KINDS)}, got {kind!r}")
    params = {k: v for k, v in node.items() if k != "kind"}
    from simulators.meters import meter_from_spec  # the harness's models: check the parameters now

    try:
        meter_from_spec(kind, str(device.get("code", "D")), seed, **params)
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc), file=node.file, line=node.line, field=node.path) from None
    return MeterModel(kind, dict(params))
