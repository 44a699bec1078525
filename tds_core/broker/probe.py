"""A small blocking MQTT client (paho-mqtt 2.2) that reports clear connection outcomes.

Used to wait for a broker to be ready and, in tests, to tell *how* a broker refused a client: under
TLS 1.3 a refused certificate shows as ``connect()`` succeeding and then a disconnect with no CONNACK
(the reason is only in paho's log), under TLS 1.2 as an SSL error from ``connect()``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)

__all__ = ["ClientTLS", "ConnectOutcome", "ConnectResult", "ProbeClient", "wait_until_ready"]


@dataclass(frozen=True)
class ClientTLS:
    """Client-side TLS material; ``cert_file``/``key_file`` None means no client certificate."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None

    def context(self) -> ssl.SSLContext:
        """A client context that trusts our CA and presents the client certificate, if any."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        if self.cert_file is not None:
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
        return ctx


class ConnectOutcome(StrEnum):
    """How a connection attempt ended."""

    CONNECTED = "connected"            # CONNACK 0
    REFUSED = "refused"                # CONNACK with a non-zero return code
    DROPPED = "dropped"                # connection closed before any CONNACK (TLS 1.3 refusal, ...)
    TLS_ERROR = "tls_error"            # the handshake failed inside connect() (TLS 1.2 refusal, ...)
    NETWORK_ERROR = "network_error"    # nothing listening, reset, ...
    TIMEOUT = "timeout"                # nothing happened in time


@dataclass(frozen=True)
class ConnectResult:
    """Outcome plus the evidence: CONNACK code, exception text, paho log lines mentioning errors."""

    outcome: ConnectOutcome
    detail: str = ""
    session_present: bool = False

    @property
    def ok(self) -> bool:
        """True for CONNECTED."""
        return self.outcome is ConnectOutcome.CONNECTED


@dataclass(frozen=True)
class Message:
    """A received message."""

    topic: str
    payload: bytes
    qos: int
    mid: int
    dup: bool
    retain: bool


class ProbeClient:
    """A paho client driven from a background thread, with received messages on a queue.

    ``manual_ack=True`` leaves QoS 1 acknowledgements to ``ack(message)``.
    """

    def __init__(self, host: str, port: int, client_id: str, *, tls: ClientTLS | None = None,
                 clean_session: bool = True, manual_ack: bool = False, keepalive: int = 30,
                 will: tuple[str, bytes, int, bool] | None = None) -> None:
        self.host, self.port, self.client_id = host, port, client_id
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=clean_session, manual_ack=manual_ack,
                                  protocol=mqtt.MQTTv311, reconnect_on_failure=False)
        if tls is not None:
            self.client.tls_set_context(tls.context())
        if will is not None:
            self.client.will_set(will[0], will[1], will[2], will[3])
        self.keepalive = keepalive
        self.messages: queue.Queue[Message] = queue.Queue()
        self._connack: queue.Queue[tuple[int, bool]] = queue.Queue()
        self._disconnected = threading.Event()
        self._subacks: dict[int, queue.Queue[list[int]]] = {}
        self._pubacks: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self.log_lines: list[str] = []
        c = self.client
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_publish = self._on_publish
        c.on_log = self._on_log

    # -- paho callbacks (network thread) --
    def _on_connect(self, _c, _u, flags, reason_code, _p) -> None:  # type: ignore[no-untyped-def]
        self._connack.put((reason_code.value, bool(getattr(flags, "session_present", False))))

    def _on_disconnect(self, _c, _u, _f, reason_code, _p) -> None:  # type: ignore[no-untyped-def]
        self.log_lines.append(f"disconnect: {reason_code}")
        self._disconnected.set()

    def _on_message(self, _c, _u, msg) -> None:  # type: ignore[no-untyped-def]
        self.messages.put(Message(msg.topic, bytes(msg.payload), msg.qos, msg.mid, bool(msg.dup),
                                  bool(msg.retain)))

    def _on_subscribe(self, _c, _u, mid, reason_codes, _p) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            q = self._subacks.setdefault(mid, queue.Queue())
        q.put([rc.value for rc in reason_codes])

    def _on_publish(self, _c, _u, mid, _rc, _p) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            ev = self._pubacks.setdefault(mid, threading.Event())
        ev.set()

    def _on_log(self, _c, _u, level, buf) -> None:  # type: ignore[no-untyped-def]
        if level <= mqtt.MQTT_LOG_WARNING or "rror" in buf or "SSL" in buf:
            self.log_lines.append(buf)

    # -- API --
    def connect(self, timeout: float = 10.0) -> ConnectResult:
        """Connect and wait for the CONNACK or the end of the connection; never raises."""
        try:
            self.client.connect(self.host, self.port, self.keepalive)
        except ssl.SSLError as exc:
            return ConnectResult(ConnectOutcome.TLS_ERROR, str(exc))
        except (TimeoutError, ConnectionError, OSError) as exc:
            return ConnectResult(ConnectOutcome.NETWORK_ERROR, str(exc))
        self.client.loop_start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                rc, present = self._connack.get(timeout=0.05)
            except queue.Empty:
                if self._disconnected.is_set():
                    self.client.loop_stop()
                    return ConnectResult(ConnectOutcome.DROPPED, "; ".join(self.log_lines))
                continue
            if rc == 0:
                return ConnectResult(ConnectOutcome.CONNECTED, session_present=present)
            self.client.loop_stop()
            return ConnectResult(ConnectOutcome.REFUSED, f"CONNACK return code {rc}")
        self.client.loop_stop()
        return ConnectResult(ConnectOutcome.TIMEOUT, "; ".join(self.log_lines))

    def subscribe(self, topic_filter: str, qos: int = 1, timeout: float = 10.0) -> list[int]:
        """Subscribe and return the SUBACK return codes (128 = refused)."""
        rc, mid = self.client.subscribe(topic_filter, qos)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"subscribe {topic_filter!r} failed: {mqtt.error_string(rc)}")
        with self._lock:
            q = self._subacks.setdefault(mid, queue.Queue())
        return q.get(timeout=timeout)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                timeout: float = 10.0) -> bool:
        """Publish; for QoS > 0 wait for the broker's acknowledgement. True when acknowledged."""
        info = self.client.publish(topic, payload, qos, retain)
        if qos == 0:
            return info.rc == mqtt.MQTT_ERR_SUCCESS
        with self._lock:
            ev = self._pubacks.setdefault(info.mid, threading.Event())
        return ev.wait(timeout)

    def ack(self, message: Message) -> None:
        """Acknowledge a QoS 1 message (manual_ack mode)."""
        self.client.ack(message.mid, message.qos)

    def get(self, timeout: float = 10.0) -> Message:
        """Next received message; queue.Empty after ``timeout``."""
        return self.messages.get(timeout=timeout)

    def wait_disconnected(self, timeout: float = 10.0) -> bool:
        """True once the connection is gone (broker closed it or we disconnected)."""
        return self._disconnected.wait(timeout)

    @property
    def is_connected(self) -> bool:
        """paho's view of the connection."""
        return self.client.is_connected() and not self._disconnected.is_set()

    def disconnect(self) -> None:
        """Send DISCONNECT and stop the network thread."""
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()

    def kill(self) -> None:
        """Drop the TCP connection without DISCONNECT (the will is published)."""
        sock = self.client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.wait_disconnected(5)
        self.client.loop_stop()


def wait_until_ready(host: str, port: int, *, tls: ClientTLS | None = None, client_id: str = "tds-probe",
                     timeout: float = 10.0, is_alive: object = None) -> ConnectResult:
    """Poll until an MQTT CONNECT succeeds (a readiness signal, no fixed sleep) or ``timeout`` passes.

    ``is_alive``: optional callable; when it returns False the wait stops early (the server died).
    """
    deadline = time.monotonic() + timeout
    last = ConnectResult(ConnectOutcome.TIMEOUT, "no attempt")
    while time.monotonic() < deadline:
        if callable(is_alive) and not is_alive():
            return ConnectResult(ConnectOutcome.NETWORK_ERROR, "server process exited")
        probe = ProbeClient(host, port, client_id, tls=tls)
        last = probe.connect(timeout=max(0.1, deadline - time.monotonic()))
        if last.ok:
            probe.disconnect()
            return last
        if last.outcome in (ConnectOutcome.REFUSED, ConnectOutcome.TLS_ERROR):
            return last  # the server answers: it is up, just not for this client
        time.sleep(0.05)  # poll interval between connection attempts, not a wait for readiness
    return last
