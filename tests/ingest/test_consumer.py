"""The consumer end to end: real broker (embedded amqtt and Mosquitto), real PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import psycopg
from ingest_fleet import DEVICES, LEGACY_GATEWAY
from ingest_helpers import V1_MACS, Publisher, legacy_message, v1_message, wait_until

from tds_core.ingest.config import IngestConfig
from tds_core.ingest.consumer import Consumer
from tds_core.protocol import status_topic


def _count(dsn: str, sql: str, params: tuple = ()) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchone()[0]  # type: ignore[index]


@contextmanager
def running_consumer(dsn: str, broker_url: str, **overrides) -> Iterator[Consumer]:
    overrides.setdefault("client_id", "tds-ingest-test")
    config = IngestConfig(database_url=dsn, broker_url=broker_url, liveness_interval=0.2, **overrides)
    consumer = Consumer(config)
    consumer.start()
    assert consumer.subscribed.wait(10), "consumer did not subscribe"
    try:
        yield consumer
    finally:
        consumer.stop()


def test_both_formats_are_stored_once_and_bad_messages_dead_lettered(registry_dsn: str, broker_url: str) -> None:
    publisher = Publisher(broker_url)
    try:
        with running_consumer(registry_dsn, broker_url):
            messages = [v1_message(i) for i in range(60)] + [legacy_message(i) for i in range(20)]
            bad = [
                ("tds_new/devices/aa:bb:cc:00:00:01/telemetry", b"\xff\xfe not utf-8"),
                ("tds_new/devices/aa:bb:cc:00:00:01/telemetry", b'{"gateway_mac": "aa:bb:cc:00:00:01"}'),
                (v1_message(1000, mac="aa:bb:cc:99:99:99")),
            ]
            publisher.publish_all(messages + bad + messages[:10])  # the last ten are redeliveries
            expected = 60 * len(DEVICES) + 20
            wait_until(lambda: _count(registry_dsn, "SELECT count(*) FROM readings") >= expected
                       and _count(registry_dsn, "SELECT count(*) FROM dead_letters") >= 3, what="all rows")
        assert _count(registry_dsn, "SELECT count(*) FROM readings") == expected
        distinct = "SELECT count(*) FROM (SELECT DISTINCT device_id, time FROM readings) d"
        assert _count(registry_dsn, distinct) == expected
        with psycopg.connect(registry_dsn) as conn:
            reasons = dict(conn.execute("SELECT reason, count(*) FROM dead_letters GROUP BY reason").fetchall())
            payload = conn.execute("SELECT payload FROM dead_letters WHERE reason = 'not_utf8'").fetchone()[0]
            online = dict(conn.execute("SELECT mac, online FROM gateways").fetchall())
            tenants = dict(conn.execute(
                "SELECT g.mac, count(DISTINCT r.tenant_id) FROM readings r JOIN gateways g ON g.id = r.gateway_id "
                "WHERE r.tenant_id = g.tenant_id GROUP BY g.mac").fetchall())
        assert reasons == {"not_utf8": 1, "missing_field": 1, "unknown_gateway": 1}
        assert bytes(payload) == b"\xff\xfe not utf-8"  # raw bytes kept as received
        assert all(online[mac] for mac in [*V1_MACS, LEGACY_GATEWAY[0]])
        assert set(tenants) == {*V1_MACS, LEGACY_GATEWAY[0]}  # every row carries its gateway's tenant
    finally:
        publisher.close()


def test_status_messages_and_silence_drive_online(registry_dsn: str, amqtt_broker) -> None:
    url = amqtt_broker.url
    publisher = Publisher(url)
    online = "SELECT online FROM gateways WHERE mac = %s"
    try:
        # Silence window far longer than the test: only status messages can change `online` here.
        with running_consumer(registry_dsn, url):
            publisher.publish_all([v1_message(0, mac=V1_MACS[0]), v1_message(1, mac=V1_MACS[1])])
            wait_until(lambda: _count(registry_dsn, "SELECT count(*) FROM gateways WHERE online") == 2,
                       what="two gateways online")
            publisher.publish(status_topic(V1_MACS[0]), b"offline")  # what its LWT says
            wait_until(lambda: _count(registry_dsn, online, (V1_MACS[0],)) is False, what="LWT offline")
            publisher.publish(status_topic(V1_MACS[0]), b"online")  # it came back
            wait_until(lambda: _count(registry_dsn, online, (V1_MACS[0],)) is True, what="online again")
            # A live announcement from a gateway that has sent no reading yet counts as a sign of life.
            publisher.publish(status_topic(V1_MACS[2]), b"online")
            wait_until(lambda: _count(registry_dsn, "SELECT last_seen IS NOT NULL AND online FROM gateways "
                                      "WHERE mac = %s", (V1_MACS[2],)) is True, what="live online sets last_seen")
            publisher.publish(status_topic(V1_MACS[0]), b"rebooting")  # not a status: dead-lettered
            wait_until(lambda: _count(registry_dsn, "SELECT count(*) FROM dead_letters") == 1, what="dead letter")
            assert _count(registry_dsn, "SELECT reason FROM dead_letters") == "wrong_type"
        # The others go silent: the liveness sweep takes them offline after `offline_after`.
        with running_consumer(registry_dsn, url, offline_after=timedelta(seconds=1)):
            wait_until(lambda: _count(registry_dsn, "SELECT count(*) FROM gateways WHERE online") == 0,
                       what="silent gateways offline")
        # A retained "online" replayed to a new subscriber says nothing about now: flag only, no last_seen.
        legacy_mac = LEGACY_GATEWAY[0]
        publisher.publish(status_topic(legacy_mac), b"online", retain=True)
        with running_consumer(registry_dsn, url, client_id="tds-ingest-late"):
            wait_until(lambda: _count(registry_dsn, "SELECT online FROM gateways WHERE mac = %s", (legacy_mac,))
                       is True, what="retained online applied")
            assert _count(registry_dsn, "SELECT last_seen FROM gateways WHERE mac = %s", (legacy_mac,)) is None
    finally:
        publisher.close()


def _spawn_consumer(dsn: str, broker_url: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tds_core.cli", "ingest", "--database-url", dsn, "--broker-url", broker_url,
         "--client-id", "tds-ingest-crash", "--batch-size", "50"],
        stderr=subprocess.DEVNULL,
    )


def test_sigkill_mid_stream_loses_and_duplicates_nothing(registry_dsn: str, broker_url: str) -> None:
    """Every reading the broker acknowledged to the publisher is stored exactly once across a SIGKILL."""
    total = 1500
    messages = [legacy_message(i) if i % 5 == 0 else v1_message(i) for i in range(total)]
    expected = sum(1 if i % 5 == 0 else len(DEVICES) for i in range(total))
    consumer = _spawn_consumer(registry_dsn, broker_url)
    publisher = Publisher(broker_url)
    try:
        # Let the first consumer register its persistent session before anything is published.
        wait_until(lambda: _publish_probe_seen(registry_dsn, publisher), timeout=30, what="consumer ready")
        publisher.publish_all(messages[: total // 2])
        wait_until(lambda: _count(registry_dsn, "SELECT count(*) FROM readings") > 200, what="first rows")
        os.kill(consumer.pid, signal.SIGKILL)  # mid-stream: some rows committed but not acked, some not read
        consumer.wait()
        publisher.publish_all(messages[total // 2 :])  # the broker keeps these for the dead session
        consumer = _spawn_consumer(registry_dsn, broker_url)
        wait_until(lambda: _count(registry_dsn, "SELECT count(*) FROM readings") >= expected + len(DEVICES), timeout=90,
                   what=f"{expected} readings after restart")
    finally:
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(30)
        publisher.close()
    assert _count(registry_dsn, "SELECT count(*) FROM readings") == expected + len(DEVICES)  # + the probe
    distinct = "SELECT count(*) FROM (SELECT DISTINCT device_id, time FROM readings) d"
    assert _count(registry_dsn, distinct) == expected + len(DEVICES)
    assert _count(registry_dsn, "SELECT count(*) FROM dead_letters") == 0


def _publish_probe_seen(dsn: str, publisher: Publisher) -> bool:
    """Publish a probe reading (once stored, the consumer's session is known to the broker)."""
    if _count(dsn, "SELECT count(*) FROM readings") > 0:
        return True
    topic, payload = v1_message(-1, mac=V1_MACS[0])  # before the stream: no clash
    publisher.publish(topic, payload)
    return False


def test_database_outage_stops_acks_and_loses_nothing(registry_dsn: str, amqtt_broker, pg_admin_dsn: str) -> None:
    url = amqtt_broker.url
    dbname = psycopg.conninfo.conninfo_to_dict(registry_dsn)["dbname"]
    publisher = Publisher(url)
    try:
        with running_consumer(registry_dsn, url, db_retry_max=0.5) as consumer:
            publisher.publish_all([v1_message(i) for i in range(20)])
            wait_until(lambda: _count(registry_dsn, "SELECT count(*) FROM readings") == 20 * len(DEVICES),
                       what="rows before the outage")
            with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
                admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))
                publisher.publish_all([v1_message(i) for i in range(20, 120)])
                wait_until(lambda: consumer.queue_depth >= 100, what="messages held, unacknowledged")
                admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
            wait_until(lambda: _count(registry_dsn, "SELECT count(*) FROM readings") == 120 * len(DEVICES),
                       what="rows after the outage")
            wait_until(lambda: consumer.queue_depth == 0, what="queue drained")
    finally:
        publisher.close()


def test_housekeeping_never_stalls_ingest(registry_dsn: str, amqtt_broker, monkeypatch) -> None:
    """A rollup refresh that takes long (here: blocked until released) must not hold back commits and acks."""
    import tds_core.storage.maintenance as maintenance

    started, release = threading.Event(), threading.Event()
    threads: list[str] = []
    real_maintain = maintenance.maintain

    def slow_maintain(conn: psycopg.Connection):
        threads.append(threading.current_thread().name)
        started.set()
        release.wait(60)
        return real_maintain(conn)

    monkeypatch.setattr(maintenance, "maintain", slow_maintain)
    url = amqtt_broker.url
    publisher = Publisher(url)
    try:
        with running_consumer(registry_dsn, url, maintenance_interval=0.05):
            assert started.wait(10), "maintenance never ran"
            publisher.publish_all([v1_message(i) for i in range(30)])
            wait_until(lambda: _count(registry_dsn, "SELECT count(*) FROM readings") == 30 * len(DEVICES),
                       timeout=30, what="rows committed while maintenance is in progress")
            release.set()
            wait_until(lambda: len(threads) >= 2, timeout=30, what="the next maintenance round")
    finally:
        release.set()
        publisher.close()
    assert set(threads) == {"tds-ingest-housekeeping"}
    with psycopg.connect(registry_dsn) as conn:  # the released refreshes did their job
        hourly = conn.execute("SELECT coalesce(sum(reading_count), 0) FROM readings_hourly").fetchone()[0]
    assert hourly == 30 * len(DEVICES)


def test_rollups_are_folded_between_maintenance_rounds(registry_dsn: str, amqtt_broker) -> None:
    """Plain PostgreSQL: the consumer folds the rollup log every rollup_interval, not only at maintenance."""
    url = amqtt_broker.url
    publisher = Publisher(url)
    hourly = "SELECT coalesce(sum(reading_count), 0) FROM readings_hourly"
    try:
        with running_consumer(registry_dsn, url, maintenance_interval=3600, rollup_interval=0.1):
            publisher.publish_all([v1_message(i) for i in range(20)])
            wait_until(lambda: _count(registry_dsn, hourly) == 20 * len(DEVICES), timeout=30,
                       what="hourly rollups folded without a maintenance round")
            monthly = _count(registry_dsn, "SELECT coalesce(sum(reading_count), 0) FROM readings_monthly")
            assert monthly == 20 * len(DEVICES)
    finally:
        publisher.close()


def test_a_message_that_fails_to_decode_on_arrival_is_decoded_again_by_the_writer(
    registry_dsn: str, amqtt_broker, monkeypatch
) -> None:
    """Decoding on arrival runs in paho's network thread: an unexpected error there must neither stop the
    thread nor lose the message; the writer decodes it again (and would dead-letter or report it)."""
    import tds_core.ingest.consumer as consumer_module

    real, failed = consumer_module.process_message, []

    def flaky(message, snapshot, **kwargs):
        if threading.current_thread().name.startswith("paho") and not failed:
            failed.append(message.topic)
            raise RuntimeError("simulated decoder bug")
        return real(message, snapshot, **kwargs)

    monkeypatch.setattr(consumer_module, "process_message", flaky)
    url = amqtt_broker.url
    publisher = Publisher(url)
    try:
        with running_consumer(registry_dsn, url):
            publisher.publish_all([v1_message(i) for i in range(10)])
            wait_until(lambda: _count(registry_dsn, "SELECT count(*) FROM readings") == 10 * len(DEVICES),
                       timeout=30, what="every message stored")
    finally:
        publisher.close()
    assert len(failed) == 1
    assert _count(registry_dsn, "SELECT count(*) FROM dead_letters") == 0
