"""The hardware abstraction layer: the only door from the firmware to time, storage, the RS-485 bus,
the network and the power switch.

The firmware code above this layer is identical on a real Raspberry Pi gateway, inside a virtual gateway
(thousands per event loop, possibly in simulated time) and on a HIL rig. Each interface is a small
``typing.Protocol``; this module also holds the real implementations:

====================  =================================  ==========================================
interface             real implementation                what a virtual one must do
====================  =================================  ==========================================
``Clock``             ``SystemClock``                    ``sleep`` resolves when virtual time passes
``Flash``             ``FileFlash`` (fsync + rename)     keep synced writes across a simulated reboot
``ModbusPort``        ``SerialModbusPort``,              hand out a connected pymodbus async client
                      ``TcpModbusPort``                  (TCP or RTU over a pty to the simulators)
``MqttTransport``     ``AiomqttTransport`` (TLS)         refuse ``session()`` while the network is down
``RebootHook``        ``soft_reboot``                    e.g. power-cycle: drop volatile state
====================  =================================  ==========================================

Rules the firmware relies on (a virtual implementation must keep them):

* every wait goes through ``Clock.sleep``; the firmware never calls ``asyncio.sleep``/``time.time``;
* ``Flash.write`` is atomic (old or new content, never a torn file) and durable once it returns;
* ``MqttSession.publish`` puts the message on the wire (or the client's ordered outgoing queue) before
  its first real suspension, so publishes started as tasks in order are sent in order; it returns after
  the PUBACK (QoS 1) and raises ``TransportError`` when the connection is gone;
* ``MqttSession.messages()`` raises ``TransportError`` when the connection is lost: that is how the
  firmware notices a dead link.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "AiomqttTransport",
    "Clock",
    "FileFlash",
    "Flash",
    "InboundMessage",
    "ModbusClient",
    "ModbusPort",
    "MqttSession",
    "MqttSettings",
    "MqttTransport",
    "RebootHook",
    "SerialModbusPort",
    "SystemClock",
    "TcpModbusPort",
    "TransportError",
    "soft_reboot",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- clock
@runtime_checkable
class Clock(Protocol):
    """Wall time, monotonic time and sleeping: the firmware's only source of time."""

    def now(self) -> datetime:
        """Wall-clock time, tz-aware (UTC). Used for message timestamps."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back. Used for scheduling."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the caller for ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clock: system time and ``asyncio.sleep``."""

    def now(self) -> datetime:
        """Current UTC time."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep`` (negative values sleep zero)."""
        await asyncio.sleep(max(0.0, seconds))


# --------------------------------------------------------------------------------------------- flash
@runtime_checkable
class Flash(Protocol):
    """Persistent key/value storage. Names are ``/``-separated relative paths (``queue/000000000042``).

    ``write`` is atomic and durable when it returns; anything not yet returned may be lost on power loss.
    """

    async def read(self, name: str) -> bytes | None:
        """The content stored under ``name``, or None."""
        ...

    async def write(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name``, replacing it atomically and durably."""
        ...

    async def delete(self, name: str) -> None:
        """Remove ``name``; no error when it does not exist."""
        ...

    async def list(self, prefix: str) -> list[str]:
        """All stored names that start with ``prefix``, sorted."""
        ...


class FileFlash:
    """Flash on a real file system under ``root``: write to a temp file, fsync, rename, fsync the directory.

    The blocking file calls run in a worker thread so the event loop never waits on the SD card.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, name: str) -> Path:
        if not name or name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"flash name {name!r}: expected a relative path without '..'")
        return self.root / name

    async def read(self, name: str) -> bytes | None:
        """Read a file; None when absent."""
        return await asyncio.to_thread(self._read, self._path(name))

    async def write(self, name: str, data: bytes) -> None:
        """Atomic, durable replace."""
        await asyncio.to_thread(self._write, self._path(name), data)

    async def delete(self, name: str) -> None:
        """Unlink; missing is fine."""
        await asyncio.to_thread(self._delete, self._path(name))

    async def list(self, prefix: str) -> list[str]:
        """Names under the directory part of ``prefix`` that start with ``prefix`` (temp files excluded)."""
        return await asyncio.to_thread(self._list, prefix)

    @staticmethod
    def _read(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        FileFlash._fsync_dir(path.parent)

    @staticmethod
    def _delete(path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            return
        # Not fsynced: a delete lost on power loss only replays a message (QoS 1 allows duplicates).

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _list(self, prefix: str) -> list[str]:
        head, _, _ = prefix.rpartition("/")
        base = self.root / head if head else self.root
        try:
            entries = os.listdir(base)
        except FileNotFoundError:
            return []
        out = []
        for entry in entries:
            if entry.endswith(".tmp"):
                continue
            name = f"{head}/{entry}" if head else entry
            if name.startswith(prefix) and (base / entry).is_file():
                out.append(name)
        out.sort()
        return out


# -------------------------------------------------------------------------------------------- modbus
class ModbusClient(Protocol):
    """The part of a pymodbus 3.16 async client the firmware uses (``AsyncModbusSerialClient`` etc.)."""

    def read_holding_registers(
        self, address: int, *, count: int = 1, device_id: int = 1
    ) -> Awaitable[Any]:  # -> ModbusPDU with .isError(), .registers
        """Function 0x03."""
        ...

    def read_input_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> Awaitable[Any]:
        """Function 0x04."""
        ...


@runtime_checkable
class ModbusPort(Protocol):
    """The RS-485 bus (or a stand-in): hands out a connected pymodbus async client."""

    async def client(self) -> ModbusClient:
        """A connected client; (re)connects when needed. Raises ``OSError`` when the port cannot be opened."""
        ...

    def close(self) -> None:
        """Release the port (idempotent)."""
        ...


class _PymodbusPort:
    """Shared connect/close logic around one pymodbus async client, created lazily inside the loop."""

    def __init__(self) -> None:
        self._client: Any = None

    def _make(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    async def client(self) -> ModbusClient:
        """Connect on first use and after the link dropped."""
        if self._client is None:
            self._client = self._make()  # pymodbus async clients must be built inside a running loop
        if not self._client.connected:
            ok = await self._client.connect()
            if not ok:
                raise OSError(f"modbus port {self.describe()}: cannot connect")
        return self._client

    def close(self) -> None:
        """Close the client."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def describe(self) -> str:  # pragma: no cover - overridden
        return "?"


class SerialModbusPort(_PymodbusPort):
    """Modbus RTU on a serial device (a USB RS-485 adapter on the Pi, or one end of a pty pair)."""

    def __init__(
        self,
        device: str,
        *,
        baudrate: int = 9600,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: int = 1,
        timeout_s: float = 5.0,
    ) -> None:
        super().__init__()
        self.device = device
        self._kw = {"baudrate": baudrate, "bytesize": bytesize, "parity": parity, "stopbits": stopbits}
        self._timeout = timeout_s

    def _make(self) -> Any:
        from pymodbus.client import AsyncModbusSerialClient
        from pymodbus.framer import FramerType

        # retries=0: the firmware owns the retry policy (3 attempts, 1/2/4 s, on its Clock)
        return AsyncModbusSerialClient(
            self.device, framer=FramerType.RTU, timeout=self._timeout, retries=0, **self._kw
        )

    def describe(self) -> str:
        return self.device


class TcpModbusPort(_PymodbusPort):
    """Modbus over TCP: ``framer="rtu"`` for RTU frames over a TCP socket, ``"socket"`` for Modbus/TCP."""

    def __init__(self, host: str, port: int, *, framer: str = "rtu", timeout_s: float = 5.0) -> None:
        super().__init__()
        self.host, self.port, self.framer = host, port, framer
        self._timeout = timeout_s

    def _make(self) -> Any:
        from pymodbus.client import AsyncModbusTcpClient
        from pymodbus.framer import FramerType

        framer = FramerType.RTU if self.framer == "rtu" else FramerType.SOCKET
        return AsyncModbusTcpClient(
            self.host, port=self.port, framer=framer, timeout=self._timeout, retries=0,
            reconnect_delay=0.1, reconnect_delay_max=2.0,
        )

    def describe(self) -> str:
        return f"tcp://{self.host}:{self.port} ({self.framer})"


# ---------------------------------------------------------------------------------------------- mqtt
class TransportError(Exception):
    """The network refused a connection, lost it, or an operation on it timed out."""


@dataclass(frozen=True)
class MqttSettings:
    """Everything needed to open one MQTT connection. ``client_id`` is the gateway MAC."""

    host: str
    port: int
    client_id: str
    will_topic: str
    will_payload: bytes = b"offline"
    tls: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    keepalive_s: int = 60
    connect_timeout_s: float = 15.0


@dataclass(frozen=True)
class InboundMessage:
    """A message received on a subscription."""

    topic: str
    payload: bytes
    retain: bool = False


class MqttSession(Protocol):
    """One live MQTT connection."""

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Send; return after the PUBACK (QoS 1). Raises ``TransportError``."""
        ...

    async def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe; return after the SUBACK. Raises ``TransportError``."""
        ...

    def messages(self) -> AsyncIterator[InboundMessage]:
        """Incoming messages; raises ``TransportError`` when the connection is lost."""
        ...


@runtime_checkable
class MqttTransport(Protocol):
    """The network: opens sessions. The LWT (``will_topic``, retained, QoS 1) is set on every connect."""

    def session(self, settings: MqttSettings) -> AbstractAsyncContextManager[MqttSession]:
        """``async with transport.session(s) as sess``: connect (raises ``TransportError``), then close."""
        ...


class _AiomqttSession:
    def __init__(self, client: Any) -> None:
        self._client = client

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        import aiomqtt

        try:
            # math.inf: the firmware bounds the wait on its own Clock; a lost link ends it sooner
            await self._client.publish(topic, payload, qos=qos, retain=retain, timeout=math.inf)
        except aiomqtt.MqttError as exc:
            raise TransportError(f"publish {topic}: {exc}") from exc

    async def subscribe(self, topic: str, qos: int = 1) -> None:
        import aiomqtt

        try:
            await self._client.subscribe(topic, qos=qos)
        except aiomqtt.MqttError as exc:
            raise TransportError(f"subscribe {topic}: {exc}") from exc

    async def messages(self) -> AsyncIterator[InboundMessage]:
        import aiomqtt

        try:
            async for msg in self._client.messages:
                payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
                yield InboundMessage(str(msg.topic), payload, bool(msg.retain))
        except aiomqtt.MqttError as exc:
            raise TransportError(f"connection lost: {exc}") from exc


class AiomqttTransport:
    """MQTT 3.1.1 over TCP or TLS (CA, client certificate and key: mTLS) with aiomqtt/paho.

    A new paho client per connection, clean session: unacknowledged messages live in the firmware's
    store-and-forward queue, not in paho, so nothing is sent twice by two layers.
    """

    def __init__(self, *, max_inflight: int = 20) -> None:
        self.max_inflight = max_inflight

    @asynccontextmanager
    async def session(self, settings: MqttSettings) -> AsyncIterator[MqttSession]:
        """Connect (raises ``TransportError``), yield the session, disconnect cleanly."""
        import aiomqtt

        tls_params = None
        if settings.tls:
            tls_params = aiomqtt.TLSParameters(
                ca_certs=settings.ca, certfile=settings.cert, keyfile=settings.key,
                cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        client = aiomqtt.Client(
            settings.host,
            settings.port,
            identifier=settings.client_id,
            clean_session=True,
            keepalive=settings.keepalive_s,
            timeout=settings.connect_timeout_s,
            will=aiomqtt.Will(settings.will_topic, settings.will_payload, qos=1, retain=True),
            tls_params=tls_params,
            max_inflight_messages=self.max_inflight,
        )
        _fail_connect_on_early_disconnect(client)
        try:
            await client.__aenter__()
        except (aiomqtt.MqttError, OSError, ssl.SSLError) as exc:
            raise TransportError(f"connect {settings.host}:{settings.port}: {exc}") from exc
        try:
            yield _AiomqttSession(client)
        finally:
            try:
                await client.__aexit__(None, None, None)
            except (aiomqtt.MqttError, OSError) as exc:
                log.debug("event=mqtt_close_error error=%r", exc)


def _fail_connect_on_early_disconnect(client: Any) -> None:
    """Make a connection closed before CONNACK fail the connect at once.

    aiomqtt 2.5.1 ignores a disconnect that comes before the CONNACK and waits its whole timeout: a broker
    that accepts TCP then drops the socket (TLS 1.3 refusing a certificate, a proxy with no upstream)
    would stall every reconnect for ``connect_timeout_s``. Uses aiomqtt internals (``_client``,
    ``_connected``, ``_loop``): aiomqtt is pinned, revisit on upgrade.
    """
    import aiomqtt

    paho = client._client
    original = paho.on_disconnect

    def on_disconnect(c: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        def fail() -> None:
            if not client._connected.done():
                client._connected.set_exception(aiomqtt.MqttCodeError(reason, "disconnected before CONNACK"))

        client._loop.call_soon_threadsafe(fail)
        original(c, userdata, flags, reason, properties)

    paho.on_disconnect = on_disconnect


# -------------------------------------------------------------------------------------------- reboot
RebootHook = Callable[[str], Awaitable[None]]
"""Called with the reason after the firmware shut its main loop down cleanly. Returning restarts the
main loop (a soft reboot: config and queue are reloaded from flash); raising ends ``Firmware.run``."""


async def soft_reboot(reason: str) -> None:
    """The real gateway's hook: restart the firmware main loop in-process (systemd covers hard faults)."""
    log.warning("event=reboot reason=%s", reason)
