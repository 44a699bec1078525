"""Plain-mode embedded broker: persistent sessions queue and redeliver QoS 1 messages."""

from __future__ import annotations

import queue
import subprocess
import sys

import pytest

from tds_core.broker.probe import ProbeClient


def _client(bt, client_id: str, **kw) -> ProbeClient:  # type: ignore[no-untyped-def]
    c = ProbeClient(bt.broker.host, bt.broker.port, client_id, **kw)
    result = c.connect()
    assert result.ok, result
    return c


def _drain(sub: ProbeClient, n: int) -> list:  # type: ignore[type-arg]
    return [sub.get(timeout=10) for _ in range(n)]


def _publish(bt, topic: str, payloads: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    pub = _client(bt, "publisher")
    for p in payloads:
        assert pub.publish(topic, p, qos=1)
    pub.disconnect()


def test_port_zero_reports_real_port(plain_broker) -> None:  # type: ignore[no-untyped-def]
    assert plain_broker.broker.port > 0


def test_offline_persistent_subscriber_gets_queued_messages(plain_broker) -> None:  # type: ignore[no-untyped-def]
    sub = _client(plain_broker, "consumer-a", clean_session=False)
    assert sub.subscribe("tds_new/devices/+/telemetry", 1) == [1]
    sub.disconnect()

    payloads = [f"m{i}".encode() for i in range(5)]
    _publish(plain_broker, "tds_new/devices/aa:bb:cc:dd:ee:01/telemetry", payloads)

    sub = ProbeClient(plain_broker.broker.host, plain_broker.broker.port, "consumer-a", clean_session=False)
    result = sub.connect()
    assert result.ok and result.session_present
    got = _drain(sub, 5)
    assert [m.payload for m in got] == payloads
    assert all(m.qos == 1 and not m.retain for m in got)
    sub.disconnect()


def test_unacked_messages_redelivered_acked_ones_not(plain_broker) -> None:  # type: ignore[no-untyped-def]
    topic = "tds_new/devices/aa:bb:cc:dd:ee:02/telemetry"
    sub = _client(plain_broker, "consumer-b", clean_session=False, manual_ack=True)
    sub.subscribe(topic, 1)
    payloads = [b"one", b"two", b"three"]
    _publish(plain_broker, topic, payloads)
    first = _drain(sub, 3)
    assert [m.payload for m in first] == payloads
    sub.disconnect()  # nothing acknowledged

    sub = _client(plain_broker, "consumer-b", clean_session=False, manual_ack=True)
    again = _drain(sub, 3)
    assert sorted(m.payload for m in again) == sorted(payloads)
    assert all(m.dup for m in again)
    for m in again:
        sub.ack(m)
    # a marker published after the acks reaches us only after the PUBACKs were read by the broker
    _publish(plain_broker, topic, [b"marker"])
    marker = sub.get(timeout=10)
    assert marker.payload == b"marker"
    sub.ack(marker)
    _publish(plain_broker, topic, [b"marker2"])
    assert sub.get(timeout=10).payload == b"marker2"
    sub.disconnect()  # marker2 left unacknowledged on purpose

    sub = _client(plain_broker, "consumer-b", clean_session=False, manual_ack=True)
    _publish(plain_broker, topic, [b"after"])
    seen = [sub.get(timeout=10).payload, sub.get(timeout=10).payload]
    assert seen == [b"marker2", b"after"]  # only the unacknowledged one came back, before new ones
    with pytest.raises(queue.Empty):
        sub.messages.get_nowait()
    sub.disconnect()


def test_clean_session_drops_queue(plain_broker) -> None:  # type: ignore[no-untyped-def]
    topic = "t/clean"
    sub = _client(plain_broker, "consumer-c", clean_session=False)
    sub.subscribe(topic, 1)
    sub.disconnect()
    _publish(plain_broker, topic, [b"lost"])
    sub = _client(plain_broker, "consumer-c", clean_session=True)
    sub.subscribe(topic, 1)
    _publish(plain_broker, topic, [b"new"])
    assert sub.get(timeout=10).payload == b"new"
    sub.disconnect()


def test_module_entry_point_prints_ready_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "tds_core.broker.embedded", "--host", "127.0.0.1",
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert line.startswith("READY 127.0.0.1:"), (line, proc.stderr.read() if proc.poll() else "")  # type: ignore[union-attr]
        port = int(line.rsplit(":", 1)[1])
        c = ProbeClient("127.0.0.1", port, "probe")
        assert c.connect().ok
        c.disconnect()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    assert "RuntimeWarning" not in proc.stderr.read()  # type: ignore[union-attr]


def test_plain_mode_with_acl_applies_rules_to_client_id() -> None:
    from tds_core.broker.acl import Acl
    from tds_core.broker.embedded import EmbeddedBroker, ThreadedBroker

    with ThreadedBroker(EmbeddedBroker(acl=Acl.build(["tds-consumer"]))) as tb:
        consumer = _client(tb, "tds-consumer")
        consumer.subscribe("tds_new/devices/+/telemetry")
        dev = _client(tb, "aa:bb:cc:dd:ee:01")
        assert dev.subscribe("#") == [128]
        dev.publish("tds_new/devices/aa:bb:cc:dd:ee:02/telemetry", b"forged")
        dev.publish("tds_new/devices/aa:bb:cc:dd:ee:01/telemetry", b"ok")
        assert consumer.get().payload == b"ok"
        tb.broker.update_acl(Acl.build(["tds-consumer", "aa:bb:cc:dd:ee:01"]))
        assert dev.subscribe("tds_new/devices/+/telemetry") == [1]
        dev.disconnect()
        consumer.disconnect()
