"""The per-message ingest step, against a hand-built registry snapshot (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import MappingProxyType

import pytest

from tds_core.ingest.pipeline import Accepted, InboundMessage, process_message
from tds_core.protocol import Reading, encode_legacy, encode_v1
from tds_core.registry.cache import DeviceEntry, GatewayEntry, RegistrySnapshot
from tds_core.storage.deadletter import DeadLetter

TS = datetime(2026, 2, 18, 14, 30, tzinfo=UTC)
NOW = datetime(2026, 2, 18, 14, 31, tzinfo=UTC)


def _gateway(gid: int, mac: str, code: str, status: str = "active") -> GatewayEntry:
    devices = {"D01": DeviceEntry(gid * 10 + 1, "D01", "kWh", "energy"),
               "D02": DeviceEntry(gid * 10 + 2, "D02", "m³", "water")}
    return GatewayEntry(gid, 7, "acme", mac, code, status, "v1", MappingProxyType(devices))


GW = _gateway(1, "aa:bb:cc:dd:ee:01", "GW-1")
REVOKED = _gateway(2, "aa:bb:cc:dd:ee:02", "GW-2", "revoked")
SNAPSHOT = RegistrySnapshot(
    1, 0.0, MappingProxyType({g.mac: g for g in (GW, REVOKED)}), MappingProxyType({g.code: g for g in (GW, REVOKED)})
)


def _msg(topic: str, payload: bytes) -> InboundMessage:
    return InboundMessage(topic, payload, 1, 1, NOW, 0.0)


def test_v1_message_becomes_rows_of_its_tenant_gateway_and_devices() -> None:
    out = process_message(
        _msg(*encode_v1(GW.mac, TS, [Reading("D01", 12.5, "kWh"), Reading("D02", 3.25, "m³")])), SNAPSHOT, now=NOW
    )
    assert isinstance(out, Accepted)
    assert out.rows == [(TS, 11, 1, 7, 12.5), (TS, 12, 1, 7, 3.25)]


def test_legacy_message_resolves_gateway_by_code() -> None:
    out = process_message(_msg(*encode_legacy("GW-1", "D01", TS, Reading("D01", 1.0, "kWh", "energia"))),
                          SNAPSHOT, now=NOW)
    assert isinstance(out, Accepted) and out.rows == [(TS, 11, 1, 7, 1.0)]


@pytest.mark.parametrize(
    ("topic_payload", "reason", "needle"),
    [
        (encode_v1("aa:bb:cc:dd:ee:99", TS, [Reading("D01", 1.0, "kWh")]), "unknown_gateway", "aa:bb:cc:dd:ee:99"),
        (encode_v1(REVOKED.mac, TS, [Reading("D01", 1.0, "kWh")]), "gateway_revoked", "GW-2"),
        (encode_v1(GW.mac, TS, [Reading("D09", 1.0, "kWh")]), "unknown_device", "'D09'"),
        (encode_v1(GW.mac, TS, [Reading("D01", 1.0, "Wh")]), "unit_mismatch", "'Wh'"),
        (encode_legacy("GW-404", "D01", TS, Reading("D01", 1.0, "kWh", "energia")), "unknown_gateway", "GW-404"),
        (("tds_new/devices/aa:bb:cc:dd:ee:01/telemetry", b"{not json"), "malformed_json", ""),
    ],
)
def test_rejections_become_dead_letters_with_reason_and_detail(topic_payload, reason, needle) -> None:
    topic, payload = topic_payload
    out = process_message(_msg(topic, payload), SNAPSHOT, now=NOW)
    assert isinstance(out, DeadLetter)
    assert (out.reason, out.topic, out.payload, out.received_at) == (reason, topic, payload, NOW)
    assert needle in out.detail
