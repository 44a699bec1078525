"""Scenario fleet -> the fleet engine's specs (simulators.fleet.GatewaySpec / MeterSpec).

Fields are passed by name and only where the engine's dataclasses declare them, so a field the engine
adds with a default, or does not have (word_order), costs nothing here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .fleetdef import ScenarioFleet


def _build(cls: type, **values: Any) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def gateway_specs(fleet: ScenarioFleet) -> list[Any]:
    """One GatewaySpec per simulated gateway, in fleet order."""
    try:
        from simulators.fleet import GatewaySpec, MeterSpec
    except ImportError:  # the specs live in their own module; the engine may re-export them or not
        from simulators.fleet_spec import GatewaySpec, MeterSpec

    out = []
    for g in fleet.gateways:
        meters = tuple(
            _build(MeterSpec, code=d.code, slave_id=d.slave_id, register=d.register, data_type=d.data_type,
                   scale=d.scale, unit=d.unit, kind=model.kind, word_order=d.word_order, params=dict(model.params),
                   model=model.kind)
            for d, model in zip(g.gateway.devices, g.models, strict=True))
        out.append(_build(GatewaySpec, mac=g.mac, code=g.code, tenant=g.tenant,
                          payload_format=g.gateway.payload_format, meters=meters,
                          poll_interval_s=g.poll_interval.total_seconds(), group=g.group))
    return out
