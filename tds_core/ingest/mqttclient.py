"""paho's client with a cheaper receive loop and batched PUBACKs, for a consumer taking thousands of msg/s.

paho 2.2 reads ONE packet per select(): every message costs a select(), an SSL pending() and the loop's
bookkeeping, and `loop_read(max_packets)` ignores its argument for a subscriber. `ack()` queues each
PUBACK as its own packet, waking the network thread with a socket write per ack, and each 4-byte PUBACK
then goes out as its own TLS record (encrypted here, decrypted by the broker). paho also reads each packet
with three socket reads (type, length, body); on a TLS socket each is an SSL read that drops and retakes
the GIL, a thread switch against the busy writer thread. This subclass reads the socket in large chunks
into its own buffer, handles every packet already received per wake-up, and sends a batch's PUBACKs as
one write.
It overrides private methods of paho: pyproject pins paho-mqtt==2.2.0, and tests/ingest exercise it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import paho.mqtt.client as mqtt
from paho.mqtt.client import MQTTErrorCode, MQTTMessage

__all__ = ["ConsumerClient"]

_PUBACK = 0x40
_PUBACK_PACKET = struct.Struct("!BBH")
_U16 = struct.Struct("!H")  # fixed header (PUBACK, remaining length 2) + packet id
# Packets handled per wake-up (then the buffer is emptied), so PUBACKs and keepalives get their turn.
_READ_BURST = 256
_RECV_CHUNK = 65536  # a TLS read returns at most one record (16 KiB) whatever is asked


_new_message = object.__new__


class ConsumerClient(mqtt.Client):
    """An `mqtt.Client` for a manual-ack subscriber: drains the socket per wake-up; `ack_many()` batches."""

    _rbuf: bytes = b""  # bytes read from the socket, not yet handed to paho's packet reader
    _rpos: int = 0
    _rsock: object = None  # the socket _rbuf came from (a reconnect brings a new one)

    def _sock_recv(self, bufsize: int) -> bytes:
        """paho's reads served from a buffer refilled by one large read (same errors and EOF as paho's)."""
        if self._rsock is not self._sock:
            self._rbuf, self._rpos, self._rsock = b"", 0, self._sock
        buf, pos = self._rbuf, self._rpos
        if pos >= len(buf):
            buf = super()._sock_recv(_RECV_CHUNK)  # raises BlockingIOError when nothing is there
            if not buf:
                return buf  # end of stream
            self._rbuf, pos = buf, 0
        end = pos + bufsize
        self._rpos = end
        return buf[pos:end]

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Handle every complete packet already received (a burst, then what is left in the buffer).

        Bytes left unread when returning are in the socket (select() fires again) or in the TLS buffer
        (paho's loop checks `pending()` and does not block then), never in ours: select() cannot see it.
        """
        handled = 0
        while True:
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN and self._rpos >= len(self._rbuf):
                break  # the socket would block and our buffer is empty
            handled += 1
            if handled >= _READ_BURST and self._rpos >= len(self._rbuf):
                break
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_publish(self) -> MQTTErrorCode:
        """An MQTT 3.1.1 QoS 0/1 PUBLISH parsed in place; anything else (MQTT 5, QoS 2, a malformed packet)
        goes to paho's own handler. The message given to on_message has no `info` (paho builds one, with
        a lock, for tracking outgoing messages; nothing reads it on a received one)."""
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        packet = self._in_packet["packet"]
        if qos > 1 or self._protocol == mqtt.MQTTv5 or len(packet) < 4:
            return super()._handle_publish()
        (topic_len,) = _U16.unpack_from(packet)
        start = 2 + topic_len
        end = start + 2 if qos else start
        if topic_len == 0 or end > len(packet):
            return super()._handle_publish()  # paho reports the malformed packet
        message = _new_message(MQTTMessage)
        message.timestamp = mqtt.time_func()
        message.state = mqtt.mqtt_ms_invalid
        message.dup = bool(header & 0x08)
        message.mid = _U16.unpack_from(packet, start)[0] if qos else 0
        message._topic = bytes(packet[2:start])
        message.payload = bytes(packet[end:])
        message.qos = qos
        message.retain = bool(header & 0x01)
        message.info = None  # type: ignore[assignment]
        message.properties = None
        self._handle_on_message(message)
        if qos and not self._manual_ack:
            return self._send_puback(message.mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        """paho's dispatch without its per-message topic matching when no per-topic callback exists."""
        if self._on_message_filtered._root._children:  # message_callback_add() was used: paho's way
            super()._handle_on_message(message)
            return
        on_message = self._on_message
        if on_message is None:
            return
        with self._in_callback_mutex:
            try:
                on_message(self, self._userdata, message)
            except Exception as err:
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                if not self.suppress_exceptions:
                    raise

    def ack_many(self, mids: Iterable[int]) -> MQTTErrorCode:
        """PUBACK these QoS 1 packet ids as ONE queued write (same bytes as `ack(mid, 1)` for each)."""
        pack = _PUBACK_PACKET.pack
        packet = b"".join([pack(_PUBACK, 2, mid) for mid in mids])
        if not packet or not self._manual_ack:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return self._packet_queue(_PUBACK, packet, 0, 1)
