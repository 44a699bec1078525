"""Publishing and waiting helpers for ingest tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
from ingest_fleet import DEVICES, LEGACY_GATEWAY, TENANTS
from paho.mqtt.enums import CallbackAPIVersion

from tds_core.ingest.config import BrokerAddress
from tds_core.protocol import Reading, encode_legacy, encode_v1

V1_MACS = [mac for macs in TENANTS.values() for mac in macs]
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)


def v1_message(i: int, mac: str | None = None) -> tuple[str, bytes]:
    """The i-th v1 message of a stream: three readings at T0 + i seconds."""
    mac = mac or V1_MACS[i % len(V1_MACS)]
    readings = [Reading(code, float(i) + n / 10, unit) for n, (code, unit, _) in enumerate(DEVICES)]
    return encode_v1(mac, T0 + timedelta(seconds=i), readings)


def legacy_message(i: int) -> tuple[str, bytes]:
    """The i-th legacy message: one reading of device D01 at T0 + i seconds."""
    code, unit, _ = DEVICES[0]
    offset = timedelta(hours=-3)
    ts = (T0 + timedelta(seconds=i)).astimezone(__import__("datetime").timezone(offset))
    return encode_legacy(LEGACY_GATEWAY[1], code, ts, Reading(code, float(i), unit, "energia"))


class Publisher:
    """A QoS 1 publisher that waits for the broker's PUBACK of every message."""

    def __init__(self, broker_url: str, client_id: str = "test-publisher") -> None:
        address = BrokerAddress.parse(broker_url)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.connect(address.host, address.port)
        self.client.loop_start()

    def publish_all(self, messages: list[tuple[str, bytes]], timeout: float = 60.0) -> None:
        infos = [self.client.publish(topic, payload, qos=1) for topic, payload in messages]
        deadline = time.monotonic() + timeout
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            assert info.is_published(), "broker did not acknowledge a publish"

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    """Poll `predicate` until true; fail the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
