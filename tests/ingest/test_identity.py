"""Identity at ingest: revoked gateways are cut off even on a live MQTT session; topic and payload must agree."""

from __future__ import annotations

import time

import psycopg
from ingest_fleet import DEVICES
from ingest_helpers import T0, V1_MACS, Publisher, v1_message, wait_until

from tds_core.ingest.config import IngestConfig
from tds_core.ingest.consumer import Consumer
from tds_core.protocol import Reading, encode_v1
from tds_core.registry.store import reinstate_gateway, revoke_gateway


def _dead(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT reason, count(*) FROM dead_letters GROUP BY reason").fetchall())


def _stored(dsn: str, mac: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT count(*) FROM readings r JOIN gateways g ON g.id = r.gateway_id WHERE g.mac = %s", (mac,)
        ).fetchone()[0]  # type: ignore[index]


def test_revoked_gateway_is_cut_off_on_its_live_session(registry_dsn: str, amqtt_broker) -> None:
    victim = V1_MACS[0]
    consumer = Consumer(IngestConfig(database_url=registry_dsn, broker_url=amqtt_broker.url))
    publisher = Publisher(amqtt_broker.url, client_id=victim)  # one session, kept open throughout
    try:
        consumer.start()
        assert consumer.subscribed.wait(10)
        publisher.publish_all([v1_message(0, mac=victim)])
        wait_until(lambda: _stored(registry_dsn, victim) == len(DEVICES), what="stored before revocation")

        version = consumer._cache.version
        with psycopg.connect(registry_dsn) as conn:
            assert revoke_gateway(conn, victim)
            conn.commit()
        revoked_at = time.monotonic()
        assert consumer._cache.wait_for_version(version + 1, timeout=5), "cache did not reload on NOTIFY"
        print(f"revocation reached the ingest cache in {1000 * (time.monotonic() - revoked_at):.1f} ms")

        publisher.publish_all([v1_message(1, mac=victim), v1_message(2, mac=victim), v1_message(3, mac=V1_MACS[1])])
        wait_until(lambda: _dead(registry_dsn).get("gateway_revoked") == 2, what="revoked messages dead-lettered")
        wait_until(lambda: _stored(registry_dsn, V1_MACS[1]) == len(DEVICES), what="others unaffected")
        assert _stored(registry_dsn, victim) == len(DEVICES)  # nothing after the revocation

        with psycopg.connect(registry_dsn) as conn:
            assert reinstate_gateway(conn, victim)
            conn.commit()
        assert consumer._cache.wait_for_version(version + 2, timeout=5)
        publisher.publish_all([v1_message(4, mac=victim)])
        wait_until(lambda: _stored(registry_dsn, victim) == 2 * len(DEVICES), what="stored after reinstatement")
    finally:
        consumer.stop()
        publisher.close()


def test_topic_and_payload_mac_must_agree(registry_dsn: str, amqtt_broker) -> None:
    consumer = Consumer(IngestConfig(database_url=registry_dsn, broker_url=amqtt_broker.url))
    publisher = Publisher(amqtt_broker.url)
    try:
        consumer.start()
        assert consumer.subscribed.wait(10)
        # A payload claiming another gateway, on this gateway's topic: mac_mismatch, never attributed.
        _, payload = encode_v1(V1_MACS[1], T0, [Reading("D01", 1.0, "kWh")])
        publisher.publish_all([(f"tds_new/devices/{V1_MACS[0]}/telemetry", payload)])
        wait_until(lambda: _dead(registry_dsn).get("mac_mismatch") == 1, what="mac_mismatch dead letter")
        assert _stored(registry_dsn, V1_MACS[0]) == 0 and _stored(registry_dsn, V1_MACS[1]) == 0
    finally:
        consumer.stop()
        publisher.close()
