"""Embedded broker: every QoS 1 message PUBACKed to a publisher reaches the persistent subscriber.

Regression for the ingest bench's loss (5.9 % at 3,000 msg/s): amqtt PUBACKs a PUBLISH once it is in
the publisher session's queue, and its per-connection loop, which moves messages on to the
subscribers, ended on disconnect with a backlog still queued. Pipelining a burst and a DISCONNECT in
one write makes that backlog certain: the reader parses the whole burst (and PUBACKs it) long before
the loop has routed it.
"""

from __future__ import annotations

import asyncio
import socket
import struct

from tds_core.broker.embedded import ThreadedBroker
from tds_core.broker.probe import ProbeClient

BURST = 2000
TOPIC = "tds_new/devices/aa:bb:cc:00:00:{:02x}/telemetry"


def _utf8(s: bytes) -> bytes:
    return struct.pack("!H", len(s)) + s


def _packet(kind: int, body: bytes) -> bytes:
    head, n = bytearray([kind]), len(body)
    while True:
        n, digit = divmod(n, 128)
        head.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(head) + body


def _connect(host: str, port: int, client_id: str) -> socket.socket:
    """A raw MQTT 3.1.1 connection (clean session) that got CONNACK 0."""
    sock = socket.create_connection((host, port), timeout=30)
    sock.sendall(_packet(0x10, _utf8(b"MQTT") + b"\x04\x02\x00\x00" + _utf8(client_id.encode())))
    connack = b""
    while len(connack) < 4:
        chunk = sock.recv(4 - len(connack))
        assert chunk, "broker closed the connection before CONNACK"
        connack += chunk
    assert connack == b"\x20\x02\x00\x00", connack.hex()
    return sock


def _burst_then_disconnect(sock: socket.socket, messages: list[tuple[str, bytes]]) -> set[int]:
    """Every QoS 1 PUBLISH (packet id = index + 1) and a DISCONNECT in ONE write; read until the broker
    closes. Returns the packet ids the broker PUBACKed."""
    with sock:
        burst = b"".join(_packet(0x32, _utf8(topic.encode()) + struct.pack("!H", i + 1) + payload)
                         for i, (topic, payload) in enumerate(messages))
        sock.sendall(burst + b"\xe0\x00")
        data = bytearray()
        while chunk := sock.recv(65536):
            data += chunk
    acked, pos = set(), 0
    while pos + 4 <= len(data):  # the broker sends only PUBACKs (4 bytes each) here
        assert data[pos] == 0x40 and data[pos + 1] == 2, data[pos:pos + 4].hex()
        acked.add(struct.unpack_from("!H", data, pos + 2)[0])
        pos += 4
    return acked


async def _client_loop_done(tb: ThreadedBroker, client_id: str) -> asyncio.Event:
    """The event the broker sets when the per-connection loop of the connected `client_id` has returned
    (all it will ever route is then in the broadcast queue, ahead of anything published later)."""
    broker = tb.broker._broker
    assert broker is not None
    while True:
        entry = broker.sessions.get(client_id)
        done = entry[0].attributes.get("tds.loop_done") if entry else None
        if done is not None:
            return done
        await asyncio.sleep(0.01)


def test_every_pubacked_message_is_delivered_after_the_publisher_disconnects(plain_broker) -> None:  # type: ignore[no-untyped-def]
    host, port = plain_broker.broker.host, plain_broker.broker.port
    sub = ProbeClient(host, port, "load-consumer", clean_session=False, manual_ack=True)
    assert sub.connect().ok
    assert sub.subscribe("tds_new/devices/+/telemetry", 1) == [1]

    messages = [(TOPIC.format(i % 16), b'{"seq":%d}' % i) for i in range(BURST)]
    publisher = _connect(host, port, "burst-publisher")
    loop_done = plain_broker.call(_client_loop_done(plain_broker, "burst-publisher"))
    acked_ids = _burst_then_disconnect(publisher, messages)
    assert acked_ids, "the broker acknowledged nothing: the test proves nothing"
    plain_broker.call(loop_done.wait(), timeout=60)

    # A marker published now is routed after everything the burst's loop routed: when it arrives,
    # whatever of the burst has not arrived never will.
    marker = ProbeClient(host, port, "marker-publisher")
    assert marker.connect().ok
    assert marker.publish(TOPIC.format(0xFF), b"end", qos=1)
    marker.disconnect()

    received: list[bytes] = []
    while True:
        message = sub.get(timeout=30)
        sub.ack(message)
        if message.payload == b"end":
            break
        received.append(message.payload)
    sub.disconnect()

    expected = {messages[i - 1][1] for i in acked_ids}
    missing = expected - set(received)
    assert not missing, (f"{len(missing)} of {len(expected)} PUBACKed messages never delivered, "
                         f"e.g. {sorted(missing)[:5]}")
