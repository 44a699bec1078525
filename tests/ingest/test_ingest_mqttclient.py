"""ConsumerClient (paho subclass): same messages, same PUBACK bytes and same errors as paho, fewer calls."""

from __future__ import annotations

import socket
import struct

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tds_core.ingest.mqttclient import ConsumerClient

TOPIC = b"tds_new/devices/aa:bb:cc:dd:ee:ff/telemetry"


def _client(cls: type[mqtt.Client], seen: list, protocol: int = mqtt.MQTTv311) -> mqtt.Client:
    client = cls(CallbackAPIVersion.VERSION2, client_id="t", protocol=protocol, manual_ack=True)
    client.on_message = lambda c, u, m: seen.append(
        (m.topic, m.payload, type(m.payload), m.mid, m.qos, m.retain, m.dup)
    )
    return client


def _publish_body(qos: int, mid: int = 4242, payload: bytes = b'{"a": 1}') -> bytearray:
    return bytearray(struct.pack("!H", len(TOPIC)) + TOPIC + (struct.pack("!H", mid) if qos else b"") + payload)


def _handle(cls: type[mqtt.Client], command: int, body: bytearray, protocol: int = mqtt.MQTTv311):
    seen: list = []
    client = _client(cls, seen, protocol)
    client._in_packet["command"] = command
    client._in_packet["packet"] = bytearray(body)
    rc = client._handle_publish()
    return rc, seen


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("retain", [0, 1])
@pytest.mark.parametrize("dup", [0, 1])
def test_publish_is_parsed_like_paho(qos: int, retain: int, dup: int) -> None:
    command = 0x30 | dup << 3 | qos << 1 | retain
    body = _publish_body(qos)
    assert _handle(ConsumerClient, command, body) == _handle(mqtt.Client, command, body)


def test_mqtt5_publish_goes_through_paho() -> None:
    body = bytearray(struct.pack("!H", len(TOPIC)) + TOPIC + struct.pack("!H", 7) + b"\x00" + b"payload")
    rc, seen = _handle(ConsumerClient, 0x32, body, protocol=mqtt.MQTTv5)
    assert rc == 0 and seen == [(TOPIC.decode(), b"payload", bytes, 7, 1, False, False)]


def test_malformed_publish_is_refused_like_paho() -> None:
    body = bytearray(struct.pack("!H", 500) + b"short")  # topic length beyond the packet
    for cls in (mqtt.Client, ConsumerClient):
        with pytest.raises(mqtt.MalformedPacket):
            _handle(cls, 0x32, body)


def test_ack_many_sends_the_bytes_of_one_ack_per_message() -> None:
    one_by_one = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="a", manual_ack=True)
    batched = ConsumerClient(CallbackAPIVersion.VERSION2, client_id="b", manual_ack=True)
    mids = [1, 2, 300, 65535]
    for mid in mids:
        one_by_one.ack(mid, 1)
    batched.ack_many(mids)
    assert b"".join(p["packet"] for p in one_by_one._out_packet) == b"".join(
        p["packet"] for p in batched._out_packet
    )
    assert len(batched._out_packet) == 1
    assert batched.ack_many([]) == 0 and len(batched._out_packet) == 1


def test_one_loop_read_handles_every_packet_received_and_leaves_no_bytes_buffered() -> None:
    ours, theirs = socket.socketpair()
    try:
        seen: list = []
        client = _client(ConsumerClient, seen)
        ours.setblocking(False)
        client._sock = ours
        packets = []
        for mid in range(1, 301):
            body = _publish_body(1, mid, b"x" * (mid % 50))
            packets.append(bytes([0x32]) + _remaining_length(len(body)) + body)
        stream = b"".join(packets)
        cut = len(stream) - 7  # the last packet arrives in two parts
        theirs.sendall(stream[:cut])
        assert client.loop_read() == 0
        assert [s[3] for s in seen] == list(range(1, 300))
        assert client._rpos >= len(client._rbuf)  # nothing hidden from select() in our buffer
        theirs.sendall(stream[cut:])
        assert client.loop_read() == 0
        assert [s[3] for s in seen] == list(range(1, 301))
        assert seen[-1][1] == b"x" * (300 % 50)
        theirs.close()
        assert client.loop_read() != 0  # end of stream: connection lost, as with paho
    finally:
        ours.close()
        theirs.close()


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)
