"""A minimal MQTT 3.1.1 QoS 1 publisher connection (CONNECT, PUBLISH, PUBACK), for a lean load generator.

paho costs ~250 µs of CPU per QoS 1 message on this machine (packet objects, Properties and ReasonCode
per PUBACK, a callback per event): at 5,000 msg/s the publishers alone would take more than half of a
2-core box away from the system under test. This connection only encodes PUBLISH packets into a buffer,
writes it when the socket allows, and parses PUBACKs; TLS is the standard library's. It is a bench tool,
not a client library: no reconnect, no QoS 2, no subscriptions, no keep-alive (keepalive 0).
"""

from __future__ import annotations

import socket
import ssl
import struct

_PUBACK = 0x40


class MqttProtocolError(RuntimeError):
    """The broker refused the connection or sent something this connection does not understand."""


def _varlen(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: bytes) -> bytes:
    return struct.pack("!H", len(s)) + s


def tls_context(ca: str, cert: str, key: str) -> ssl.SSLContext:
    """Client context: verify the broker against `ca`, present `cert`/`key` (mTLS)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.load_cert_chain(cert, key)
    return ctx


class RawPublisher:
    """One connection: `publish()` queues a QoS 1 PUBLISH, `flush()` writes, `read_acks()` returns acked ids."""

    def __init__(self, host: str, port: int, client_id: str, context: ssl.SSLContext | None = None,
                 timeout: float = 10.0) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=host)
        self.sock = sock
        cid = client_id.encode()
        # protocol "MQTT" level 4, flags: clean session; keepalive 0 (no PINGREQ needed).
        var = _str(b"MQTT") + b"\x04\x02\x00\x00"
        body = var + _str(cid)
        sock.sendall(b"\x10" + _varlen(len(body)) + body)
        connack = b""
        while len(connack) < 4:
            chunk = sock.recv(4 - len(connack))
            if not chunk:
                raise MqttProtocolError(f"{client_id}: connection closed before CONNACK (refused by the broker?)")
            connack += chunk
        if connack[0] != 0x20 or connack[3] != 0:
            raise MqttProtocolError(f"{client_id}: CONNACK {connack.hex()} (return code {connack[3]})")
        sock.setblocking(False)
        self._out = bytearray()
        self._retry = 0  # length of a TLS write that must be retried with the same bytes
        self._in = bytearray()
        self._mid = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def publish(self, topic: bytes, payload: bytes) -> int:
        """Queue a QoS 1 PUBLISH; returns its packet id."""
        self._mid = self._mid % 65535 + 1
        head = _str(topic) + struct.pack("!H", self._mid)
        self._out += b"\x32" + _varlen(len(head) + len(payload)) + head + payload
        return self._mid

    @property
    def want_write(self) -> bool:
        return bool(self._out)

    def flush(self) -> None:
        """Write as much of the queue as the socket takes now."""
        while self._out:
            n = self._retry or min(len(self._out), 65536)
            try:
                sent = self.sock.send(self._out[:n])
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                self._retry = n if isinstance(self.sock, ssl.SSLSocket) else 0
                return
            self._retry = 0
            del self._out[:sent]

    def read_acks(self) -> list[int]:
        """Read what arrived; the packet ids of the PUBACKs in it. ConnectionError when the broker closed."""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                break
            if not chunk:
                raise ConnectionError("broker closed the connection")
            self._in += chunk
            if not isinstance(self.sock, ssl.SSLSocket) or not self.sock.pending():
                break
        acks: list[int] = []
        buf = self._in
        pos = 0
        while len(buf) - pos >= 2:
            kind = buf[pos]
            # Remaining length (1..4 bytes); every packet we expect is tiny.
            length, mult, i = 0, 1, pos + 1
            while True:
                if i >= len(buf):
                    length = -1
                    break
                b = buf[i]
                length += (b & 0x7F) * mult
                mult *= 128
                i += 1
                if not b & 0x80:
                    break
            if length < 0 or len(buf) - i < length:
                break
            if kind & 0xF0 == _PUBACK:
                acks.append((buf[i] << 8) | buf[i + 1])
            pos = i + length
        del buf[:pos]
        return acks

    def close(self) -> None:
        """DISCONNECT and close."""
        try:
            self.sock.setblocking(True)
            if self._out:
                self.sock.sendall(self._out)
            self.sock.sendall(b"\xe0\x00")
        except OSError:
            pass
        finally:
            self.sock.close()
