"""paho's client with a cheaper receive loop and batched PUBACKs, for a consumer taking thousands of msg/s.

paho 2.2 reads ONE packet per select(): every message costs a select(), an SSL pending() and the loop's
bookkeeping, and `loop_read(max_packets)` ignores its argument for a subscriber. `ack()` queues each
PUBACK as its own packet, waking the network thread with a socket write per ack, and each 4-byte PUBACK
then goes out as its own TLS record (encrypted here, decrypted by the broker). This subclass reads every
packet already received (socket and TLS buffer) per wake-up, and sends a batch's PUBACKs as one write.
It overrides private methods of paho: pyproject pins paho-mqtt==2.2.0, and tests/ingest exercise it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import paho.mqtt.client as mqtt
from paho.mqtt.client import MQTTErrorCode

__all__ = ["ConsumerClient"]

_PUBACK = 0x40
_PUBACK_PACKET = struct.Struct("!BBH")  # fixed header (PUBACK, remaining length 2) + packet id
# Packets handled per wake-up at most, so queued PUBACKs and keepalives still get their turn under a flood.
_READ_BURST = 256


class ConsumerClient(mqtt.Client):
    """An `mqtt.Client` for a manual-ack subscriber: drains the socket per wake-up; `ack_many()` batches."""

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Handle every complete packet already received (up to a burst), not just one.

        Returning with bytes left unread is safe: they sit in the socket (select() fires again) or in the
        TLS buffer (paho's loop checks `pending()` and does not block then).
        """
        for _ in range(_READ_BURST):
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                break
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_many(self, mids: Iterable[int]) -> MQTTErrorCode:
        """PUBACK these QoS 1 packet ids as ONE queued write (same bytes as `ack(mid, 1)` for each)."""
        pack = _PUBACK_PACKET.pack
        packet = b"".join([pack(_PUBACK, 2, mid) for mid in mids])
        if not packet or not self._manual_ack:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return self._packet_queue(_PUBACK, packet, 0, 1)
