"""MQTT 5 sessions and shared subscriptions (Mosquitto: amqtt 0.12 speaks MQTT 3.1.1 only)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from ingest_brokers import MOSQUITTO, MosquittoPlain
from ingest_fleet import DEVICES
from ingest_helpers import Publisher, v1_message, wait_until
from prometheus_client import REGISTRY

from tds_core.ingest.config import IngestConfig
from tds_core.ingest.consumer import CommitInfo, Consumer

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="Mosquitto not installed: apt-get install -y mosquitto")


def _readings(dsn: str) -> tuple[int, int]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT count(*), count(DISTINCT (device_id, time)) FROM readings"
        ).fetchone()  # type: ignore[return-value]


@pytest.mark.parametrize("mqtt_version", [4, 5])
def test_shared_subscription_splits_the_load_without_loss(registry_dsn: str, tmp_path: Path, mqtt_version: int):
    broker = MosquittoPlain(tmp_path)
    seen: dict[str, int] = {"a": 0, "b": 0}

    def counter(name: str):
        def hook(info: CommitInfo) -> None:
            seen[name] += len(info.messages)
        return hook

    consumers = [
        Consumer(IngestConfig(database_url=registry_dsn, broker_url=broker.url, client_id=f"tds-ingest-{name}",
                              mqtt_version=mqtt_version, shared_group="tds", batch_max_messages=20),
                 on_commit=counter(name))
        for name in seen
    ]
    publisher = Publisher(broker.url)
    try:
        for consumer in consumers:
            consumer.start()
            assert consumer.subscribed.wait(10)
        publisher.publish_all([v1_message(i) for i in range(400)])
        expected = 400 * len(DEVICES)
        wait_until(lambda: _readings(registry_dsn)[0] >= expected, what="all readings")
        assert _readings(registry_dsn) == (expected, expected)
        assert seen["a"] > 0 and seen["b"] > 0, f"one consumer got everything: {seen}"
        assert seen["a"] + seen["b"] == 400  # each message went to exactly one of them
    finally:
        for consumer in consumers:
            consumer.stop()
        publisher.close()
        broker.stop()


def test_metrics_count_stored_and_rejected(registry_dsn: str, tmp_path: Path) -> None:
    broker = MosquittoPlain(tmp_path)

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before_stored = value("tds_ingest_readings_stored_total")
    before_rejected = value("tds_ingest_messages_rejected_total", reason="malformed_json")
    consumer = Consumer(IngestConfig(database_url=registry_dsn, broker_url=broker.url, mqtt_version=5))
    publisher = Publisher(broker.url)
    try:
        consumer.start()
        assert consumer.subscribed.wait(10)
        publisher.publish_all([v1_message(i) for i in range(10)]
                              + [("tds_new/devices/aa:bb:cc:00:00:01/telemetry", b"{oops")])
        wait_until(lambda: value("tds_ingest_messages_rejected_total", reason="malformed_json") > before_rejected,
                   what="rejection counted")
        wait_until(lambda: value("tds_ingest_readings_stored_total") - before_stored == 10 * len(DEVICES),
                   what="readings counted")
        assert value("tds_ingest_commit_seconds_count") > 0
    finally:
        consumer.stop()
        publisher.close()
        broker.stop()
