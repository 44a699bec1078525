"""The per-message step of the ingest path: decode, identity checks, registry resolution.

Pure and synchronous: given a message and a registry snapshot it returns rows to store or the dead letter
to file. No I/O, no locks: it runs for every message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tds_core.protocol import DEFAULT_LIMITS, Limits, Reason, Rejection, decode
from tds_core.registry.cache import GatewayEntry, RegistrySnapshot
from tds_core.storage.deadletter import DeadLetter

Row = tuple[datetime, int, int, int, float]  # (time, device_id, gateway_id, tenant_id, value)


@dataclass(slots=True)
class InboundMessage:
    """One MQTT message as the consumer received it."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    received_at: datetime  # wall clock, UTC: stamped on dead letters
    received_mono: float  # monotonic: for receive->commit latency
    retain: bool = False  # replayed by the broker from its retained store, not sent just now
    # process_message's result when the receiving thread already ran it (the consumer decodes on arrival)
    outcome: Accepted | DeadLetter | None = None


@dataclass(slots=True)
class Accepted:
    """A message that passed every check: its rows and the gateway they belong to."""

    gateway: GatewayEntry
    rows: list[Row]


def process_message(
    message: InboundMessage,
    snapshot: RegistrySnapshot,
    *,
    limits: Limits = DEFAULT_LIMITS,
    now: datetime | None = None,
) -> Accepted | DeadLetter:
    """Turn one telemetry message into rows, or into a dead letter with a stable reason."""
    try:
        telemetry = decode(message.topic, message.payload, now=now, limits=limits)
        gateway = _resolve_gateway(telemetry.gateway_mac, telemetry.gateway_code, snapshot)
        rows: list[Row] = []
        devices = gateway.devices
        for reading in telemetry.readings:
            device = devices.get(reading.device_code)
            if device is None:
                raise Rejection(
                    Reason.UNKNOWN_DEVICE,
                    f"leituras: device {reading.device_code!r} is not registered on gateway {gateway.code} "
                    f"({gateway.mac}); expected one of {sorted(devices) or 'no devices'}",
                )
            if reading.unit != device.unit:
                raise Rejection(
                    Reason.UNIT_MISMATCH,
                    f"leituras[{reading.device_code}].unidade: got {reading.unit!r}, "
                    f"but device {device.code} is registered in {device.unit!r}",
                )
            rows.append((telemetry.timestamp, device.id, gateway.id, gateway.tenant_id, reading.value))
        return Accepted(gateway, rows)
    except Rejection as rejection:
        return dead_letter(message, rejection.reason, rejection.detail)


def _resolve_gateway(mac: str | None, code: str | None, snapshot: RegistrySnapshot) -> GatewayEntry:
    """Find the gateway a decoded message claims to come from, and refuse revoked ones."""
    if mac is not None:
        gateway = snapshot.by_mac.get(mac)
        if gateway is None:
            raise Rejection(Reason.UNKNOWN_GATEWAY, f"gateway_mac: {mac!r} is not in the registry")
    else:
        gateway = snapshot.by_code.get(code or "")
        if gateway is None:
            raise Rejection(Reason.UNKNOWN_GATEWAY, f"gateway_code: {code!r} is not in the registry")
    if gateway.revoked:
        raise Rejection(
            Reason.GATEWAY_REVOKED,
            f"gateway {gateway.code} ({gateway.mac}) is revoked; its messages are not stored",
        )
    return gateway


def dead_letter(message: InboundMessage, reason: str, detail: str, client_id: str | None = None) -> DeadLetter:
    """A dead letter for `message` (topic and raw bytes kept as received)."""
    return DeadLetter(
        topic=message.topic,
        payload=message.payload,
        reason=str(reason),
        detail=detail,
        client_id=client_id,
        received_at=message.received_at,
    )
