"""Embedded broker: at most `max_inflight` unacknowledged QoS 1 messages per client; the rest wait in order.

Stock amqtt sends every message at once, each with its own packet id: a consumer that stops acknowledging
(its database is down) would get them all, and past 65,535 unacknowledged messages amqtt cannot number the
next one and drops it, after the publisher got its PUBACK.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import time

import pytest

from tds_core.broker.embedded import EmbeddedBroker, ThreadedBroker
from tds_core.broker.probe import Message, ProbeClient

TOPIC = "tds_new/devices/aa:bb:cc:dd:ee:10/telemetry"
WINDOW = 5
PAYLOADS = [f"m{i:02d}".encode() for i in range(20)]


def _client(tb: ThreadedBroker, client_id: str, **kw) -> ProbeClient:  # type: ignore[no-untyped-def]
    c = ProbeClient(tb.broker.host, tb.broker.port, client_id, **kw)
    assert c.connect().ok
    return c


def _window_state(tb: ThreadedBroker, client_id: str) -> tuple[int, int, int]:
    """(messages in flight, waiting for the window, queued for the offline session) of `client_id`."""

    async def read() -> tuple[int, int, int]:
        broker = tb.broker._broker
        assert broker is not None
        session, handler = broker.sessions[client_id]
        waiting = len(handler._waiting) if handler is not None else 0
        return len(session.inflight_out), waiting, session.retained_messages.qsize()

    return tb.call(read())


def _until(tb: ThreadedBroker, client_id: str, expected: tuple[int, int, int]) -> None:
    deadline = time.monotonic() + 10
    while (state := _window_state(tb, client_id)) != expected:
        assert time.monotonic() < deadline, f"window state {state}, expected {expected}"
        time.sleep(0.02)


def _get(sub: ProbeClient, n: int) -> list[Message]:
    return [sub.get(timeout=10) for _ in range(n)]


@pytest.fixture
def small_window_broker():  # type: ignore[no-untyped-def]
    with ThreadedBroker(EmbeddedBroker("127.0.0.1", 0, max_inflight=WINDOW)) as tb:
        yield tb


def test_window_holds_back_until_acks_and_nothing_is_lost_across_a_reconnect(small_window_broker) -> None:  # type: ignore[no-untyped-def]
    tb = small_window_broker
    sub = _client(tb, "consumer-w", clean_session=False, manual_ack=True)
    assert sub.subscribe(TOPIC, 1) == [1]
    pub = _client(tb, "publisher-w")
    for payload in PAYLOADS:
        assert pub.publish(TOPIC, payload, qos=1)
    pub.disconnect()

    first = _get(sub, WINDOW)
    assert [m.payload for m in first] == PAYLOADS[:WINDOW]
    _until(tb, "consumer-w", (WINDOW, len(PAYLOADS) - WINDOW, 0))  # everything routed, 15 held back
    with pytest.raises(queue.Empty):
        sub.messages.get_nowait()

    for m in first[:2]:  # two acknowledgements make room for exactly two more, in order
        sub.ack(m)
    more = _get(sub, 2)
    assert [m.payload for m in more] == PAYLOADS[WINDOW:WINDOW + 2]
    _until(tb, "consumer-w", (WINDOW, len(PAYLOADS) - WINDOW - 2, 0))

    sub.disconnect()  # five unacknowledged in flight, thirteen never sent
    _until(tb, "consumer-w", (WINDOW, 0, len(PAYLOADS) - WINDOW - 2))

    sub = _client(tb, "consumer-w", clean_session=False, manual_ack=True)
    resent = _get(sub, WINDOW)  # the window is full again with the resent ones alone
    assert [m.payload for m in resent] == PAYLOADS[2:WINDOW + 2]
    assert all(m.dup for m in resent)
    _until(tb, "consumer-w", (WINDOW, len(PAYLOADS) - WINDOW - 2, 0))
    with pytest.raises(queue.Empty):
        sub.messages.get_nowait()

    received = list(resent)
    for m in resent:
        sub.ack(m)
    while len(received) < len(PAYLOADS) - 2:
        m = sub.get(timeout=10)
        received.append(m)
        sub.ack(m)
    assert [m.payload for m in received] == PAYLOADS[2:]  # each once, in publish order
    _until(tb, "consumer-w", (0, 0, 0))
    sub.disconnect()


def test_a_clean_session_drops_what_it_never_received(small_window_broker) -> None:  # type: ignore[no-untyped-def]
    tb = small_window_broker
    sub = _client(tb, "consumer-c", clean_session=True, manual_ack=True)
    sub.subscribe(TOPIC, 1)
    pub = _client(tb, "publisher-c")
    for payload in PAYLOADS:
        assert pub.publish(TOPIC, payload, qos=1)
    pub.disconnect()
    assert [m.payload for m in _get(sub, WINDOW)] == PAYLOADS[:WINDOW]
    _until(tb, "consumer-c", (WINDOW, len(PAYLOADS) - WINDOW, 0))
    sub.disconnect()

    sub = _client(tb, "consumer-c", clean_session=True, manual_ack=True)
    sub.subscribe(TOPIC, 1)
    pub = _client(tb, "publisher-c")
    assert pub.publish(TOPIC, b"fresh", qos=1)
    pub.disconnect()
    assert sub.get(timeout=10).payload == b"fresh"  # nothing of the old session's is left to come first
    sub.disconnect()


@pytest.mark.parametrize("bad", [0, 65536])
def test_window_outside_packet_id_range_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match=rf"max_inflight: {bad} is not in 1\.\.65535"):
        EmbeddedBroker(max_inflight=bad)
    run = subprocess.run([sys.executable, "-m", "tds_core.broker.embedded", "--max-inflight", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert f"max_inflight: {bad} is not in 1..65535" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
