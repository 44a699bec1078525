"""Virtual implementations of the firmware's HAL (``firmware/hal.py``) for gateways running in a fleet.

* :class:`VirtualFlash` - in memory, survives reboots (the object outlives the firmware instance). A write
  takes ``write_s`` of gateway time and is durable when it returns, as ``Flash`` promises; a power loss drops
  writes still in progress and brings back deletes not yet persisted (``FileFlash`` does not fsync an unlink:
  the next write's directory fsync persists it), which replays already-acknowledged messages.
* :class:`InProcessModbusPort` - hands the firmware a client that calls ``ModbusBank.request`` directly (no
  sockets) and answers with real pymodbus response objects; silence and corrupt frames become the
  ``ModbusIOException`` the real client raises after its timeout, measured on the gateway clock; a ``delay``
  fault waits in gateway time (the bank's own delay is real time, so it is kept here instead).
* :class:`SwitchedTransport` - the real ``AiomqttTransport`` behind a network switch and a power switch:
  while down, connects fail at once and the live connection is cut (socket shut down, no MQTT DISCONNECT,
  so the broker sends the LWT). Every connect/publish/subscribe/disconnect is engine *work* (virtual time
  waits for it), and telemetry publishes and PUBACKs are reported to the :class:`~simulators.accounting.Accounting`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu import ExceptionResponse
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse

from firmware.hal import Clock, InboundMessage, MqttSession, MqttSettings, MqttTransport, TransportError

from .faults import Fault
from .modbus_bank import ModbusBank, NoAnswer
from .virtual_time import Engine

__all__ = ["InProcessModbusClient", "InProcessModbusPort", "SwitchedTransport", "VirtualFlash", "is_telemetry"]

log = logging.getLogger(__name__)

QUEUE_PREFIX = "queue/"  # firmware.store.MessageStore's default prefix


# --------------------------------------------------------------------------------------------- flash
class VirtualFlash:
    """In-memory ``Flash`` with write latency, power switch and loss accounting.

    ``on_delete(name, blob)`` is called for every delete of an existing entry (the harness uses it to tell an
    acknowledged message from a dropped one). Counters: ``writes``, ``lost_writes`` / ``lost_queue_writes``
    (in progress at a power loss), ``resurrected`` (unsynced deletes undone by a power loss).
    """

    def __init__(self, clock: Clock | None = None, *, write_s: float = 0.0,
                 on_delete: Callable[[str, bytes], None] | None = None) -> None:
        if write_s < 0:
            raise ValueError(f"write_s={write_s!r}: expected seconds >= 0")
        if write_s > 0 and clock is None:
            raise ValueError("write_s > 0 needs a clock")
        self.clock = clock
        self.write_s = write_s
        self.on_delete = on_delete
        self.files: dict[str, bytes] = {}
        self.powered = True
        self._epoch = 0  # bumped by every power loss
        self._pending: dict[int, str] = {}
        self._tokens = 0
        self._unsynced: dict[str, bytes] = {}  # deleted since the last completed write
        self.writes = 0
        self.lost_writes = 0
        self.lost_queue_writes = 0
        self.resurrected = 0

    def _check_power(self, op: str, name: str) -> None:
        if not self.powered:
            raise OSError(f"flash {op} {name!r}: no power")

    async def read(self, name: str) -> bytes | None:
        """Stored content or None."""
        self._check_power("read", name)
        return self.files.get(name)

    async def write(self, name: str, data: bytes) -> None:
        """Atomic replace, durable when it returns (after ``write_s`` of gateway time)."""
        self._check_power("write", name)
        data = bytes(data)
        if self.write_s > 0:
            assert self.clock is not None
            epoch = self._epoch
            self._tokens += 1
            token = self._tokens
            self._pending[token] = name
            try:
                await self.clock.sleep(self.write_s)
            finally:
                self._pending.pop(token, None)
            if epoch != self._epoch or not self.powered:
                raise OSError(f"flash write {name!r}: power lost during the write")
        self.files[name] = data
        self._unsynced.clear()  # the directory fsync of this write persists earlier unlinks
        self.writes += 1

    async def delete(self, name: str) -> None:
        """Remove ``name`` (not durable until the next write completes)."""
        self._check_power("delete", name)
        blob = self.files.pop(name, None)
        if blob is None:
            return
        self._unsynced[name] = blob
        if self.on_delete is not None:
            self.on_delete(name, blob)

    async def list(self, prefix: str) -> list[str]:
        """Stored names starting with ``prefix``, sorted."""
        self._check_power("list", prefix)
        return sorted(n for n in self.files if n.startswith(prefix))

    def queue_depth(self) -> int:
        """Messages in the firmware's queue, counting queue writes still in progress."""
        stored = sum(1 for n in self.files if n.startswith(QUEUE_PREFIX))
        return stored + sum(1 for n in self._pending.values() if n.startswith(QUEUE_PREFIX))

    def power_off(self) -> tuple[int, int]:
        """Cut power: drop writes in progress, undo unsynced deletes. Returns (lost queue writes, resurrected)."""
        self.powered = False
        self._epoch += 1
        lost = list(self._pending.values())
        self._pending.clear()
        lost_queue = sum(1 for n in lost if n.startswith(QUEUE_PREFIX))
        self.lost_writes += len(lost)
        self.lost_queue_writes += lost_queue
        back = 0
        for name, blob in self._unsynced.items():
            if name not in self.files:
                self.files[name] = blob
                back += 1
        self._unsynced.clear()
        self.resurrected += back
        return lost_queue, back

    def power_on(self) -> None:
        """Restore power."""
        self.powered = True


# -------------------------------------------------------------------------------------------- modbus
class InProcessModbusClient:
    """The part of a pymodbus async client the firmware uses, served by a bank in-process."""

    def __init__(self, port: InProcessModbusPort) -> None:
        self._port = port

    @property
    def connected(self) -> bool:
        """Always true while the port is open."""
        return not self._port.closed

    async def read_holding_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> Any:
        """Function 0x03."""
        return await self._port.read(3, address, count, device_id)

    async def read_input_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> Any:
        """Function 0x04."""
        return await self._port.read(4, address, count, device_id)


class InProcessModbusPort:
    """A ``ModbusPort`` whose client calls ``bank.request`` directly.

    ``timeout_s`` is the client's own response timeout (gateway clock); ``bus_s`` adds a per-request bus time
    (0 by default: in a month-long virtual run every extra calendar event per read costs real seconds).
    ``fleet_now`` is the fleet's true clock, on which delay faults are scheduled (like the bank's faults).
    """

    def __init__(self, bank: ModbusBank, clock: Clock, *, timeout_s: float, fleet_now: Callable[[], datetime],
                 bus_s: float = 0.0, on_failed_attempt: Callable[[int], None] | None = None) -> None:
        self.bank = bank
        self.clock = clock
        self.timeout_s = timeout_s
        self.fleet_now = fleet_now
        self.bus_s = bus_s
        self.on_failed_attempt = on_failed_attempt
        self.delays: dict[int, list[Fault]] = {}
        self.closed = False
        self.requests = 0
        self._client = InProcessModbusClient(self)

    async def client(self) -> InProcessModbusClient:
        """The client (reopens after ``close``)."""
        self.closed = False
        return self._client

    def close(self) -> None:
        """Mark closed (the firmware closes the port at every shutdown)."""
        self.closed = True

    def add_delay(self, slave_id: int, fault: Fault) -> None:
        """Schedule a ``delay`` fault in gateway time for ``slave_id``."""
        if fault.kind != "delay":
            raise ValueError(f"add_delay: expected a delay fault, got {fault.kind!r}")
        self.delays.setdefault(slave_id, []).append(fault)

    def clear_delays(self, slave_id: int | None = None) -> None:
        """Drop delay faults (of one slave or all)."""
        if slave_id is None:
            self.delays.clear()
        else:
            self.delays.pop(slave_id, None)

    def _delay_for(self, slave_id: int) -> float:
        faults = self.delays.get(slave_id)
        if not faults:
            return 0.0
        at = self.fleet_now()
        return max((f.seconds for f in faults if f.active(at)), default=0.0)

    async def _no_answer(self, fc: int, slave_id: int, why: str) -> None:
        await self.clock.sleep(self.timeout_s)
        if self.on_failed_attempt is not None:
            self.on_failed_attempt(slave_id)
        # what pymodbus 3.16's transaction manager raises when nothing valid arrived (retries=0)
        raise ModbusIOException(f"No response received after 0 retries, continue with next request ({why})",
                                function_code=fc, dev_id=slave_id)

    async def read(self, fc: int, address: int, count: int, slave_id: int) -> Any:
        """One request: delay/bus time on the gateway clock, then the bank, then a pymodbus-shaped answer."""
        if self.closed:
            raise ConnectionException("in-process modbus port is closed")
        self.requests += 1
        delay = self._delay_for(slave_id)
        if delay >= self.timeout_s:
            await self._no_answer(fc, slave_id, f"answer delayed {delay:g} s")
        wait = delay + self.bus_s
        if wait > 0:
            await self.clock.sleep(wait)
        try:
            answer = await self.bank.request(slave_id, fc, address, count)
        except NoAnswer as exc:
            await self._no_answer(fc, slave_id, exc.outcome)
            raise AssertionError("unreachable") from None
        if not isinstance(answer, list):  # an ExcCodes member: an exception response
            if self.on_failed_attempt is not None:
                self.on_failed_attempt(slave_id)
            return ExceptionResponse(fc, int(answer), device_id=slave_id)
        cls = ReadHoldingRegistersResponse if fc == 3 else ReadInputRegistersResponse
        return cls(registers=answer, dev_id=slave_id)


# ---------------------------------------------------------------------------------------------- mqtt
def is_telemetry(topic: str) -> bool:
    """True for v1 (``tds_new/devices/{mac}/telemetry``) and legacy (``telemetry/{gw}/{dev}/data``) topics."""
    return topic.endswith("/telemetry") or (topic.startswith("telemetry/") and topic.endswith("/data"))


class PublishObserver:
    """What :class:`SwitchedTransport` reports to (implemented by ``Accounting``)."""

    def on_publish(self, mac: str, topic: str, payload: bytes) -> Any:  # pragma: no cover - interface
        """A telemetry publish starts; the return value is handed back to ``on_ack``."""

    def on_ack(self, mac: str, token: Any, payload: bytes) -> None:  # pragma: no cover - interface
        """Its PUBACK arrived."""


class _CountedSession:
    """The firmware's view of a live connection: publishes counted, I/O marked as engine work."""

    def __init__(self, inner: MqttSession, transport: SwitchedTransport) -> None:
        self.inner = inner
        self._t = transport
        self.dead = False
        self._dropped: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def kill(self) -> None:
        """Cut: further operations raise ``TransportError``; the message stream ends."""
        self.dead = True
        if not self._dropped.done():
            self._dropped.set_result(None)

    def _check(self, op: str) -> None:
        if self.dead:
            raise TransportError(f"{op}: connection cut (simulated {self._t.why_down()})")

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish; return after the PUBACK."""
        self._check(f"publish {topic}")
        t = self._t
        token = None
        counted = t.observer is not None and is_telemetry(topic)
        if counted:
            token = t.observer.on_publish(t.mac, topic, payload)  # type: ignore[union-attr]
        with t.engine.work(t.mac, "publish"):
            await self.inner.publish(topic, payload, qos=qos, retain=retain)
        if counted:
            t.observer.on_ack(t.mac, token, payload)  # type: ignore[union-attr]

    async def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe; return after the SUBACK."""
        self._check(f"subscribe {topic}")
        with self._t.engine.work(self._t.mac, "subscribe"):
            await self.inner.subscribe(topic, qos=qos)

    async def messages(self) -> AsyncIterator[InboundMessage]:
        """Inbound messages; raises ``TransportError`` when the link is lost or cut."""
        it = self.inner.messages().__aiter__()
        while True:
            self._check("messages")
            nxt = asyncio.ensure_future(it.__anext__())
            try:
                await asyncio.wait((nxt, self._dropped), return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                nxt.cancel()
                raise
            if not nxt.done():
                nxt.cancel()
                await asyncio.wait((nxt,))  # let it unwind; our own cancellation still propagates
                self._check("messages")
            try:
                yield nxt.result()
            except StopAsyncIteration:
                raise TransportError("message stream ended") from None

    async def raw_publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish on this connection without telling the observer (malformed-message injection)."""
        self._check(f"publish {topic}")
        with self._t.engine.work(self._t.mac, "publish_raw"):
            await self.inner.publish(topic, payload, qos=qos, retain=False)


def _socket_of(session: MqttSession) -> socket.socket | None:
    """The TCP socket under a firmware ``_AiomqttSession`` (private attributes of firmware.hal and aiomqtt)."""
    client = getattr(session, "_client", None)  # aiomqtt.Client
    paho = getattr(client, "_client", None)  # paho.mqtt.client.Client
    get = getattr(paho, "socket", None)
    sock = get() if callable(get) else None
    return sock if sock is not None and hasattr(sock, "shutdown") else None


def _retrieve_disconnect_error(session: MqttSession) -> None:
    """Mark aiomqtt's "unexpected disconnection" as seen: after a deliberate cut nobody awaits it, and
    asyncio would log "Future exception was never retrieved" (private attributes, as ``_socket_of``)."""
    fut = getattr(getattr(session, "_client", None), "_disconnected", None)
    if isinstance(fut, asyncio.Future):
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())


class SwitchedTransport:
    """``MqttTransport`` around a real one with a network switch (``up``) and a power switch (``powered``)."""

    def __init__(self, inner: MqttTransport, engine: Engine, mac: str,
                 observer: PublishObserver | None = None) -> None:
        self.inner = inner
        self.engine = engine
        self.mac = mac
        self.observer = observer
        self.up = True
        self.powered = True
        self.live: _CountedSession | None = None
        self.last_settings: MqttSettings | None = None
        self.connects = 0
        self.refused = 0
        self.cuts = 0

    def why_down(self) -> str:
        """'power loss' or 'network down'."""
        return "power loss" if not self.powered else "network down"

    @asynccontextmanager
    async def session(self, settings: MqttSettings) -> AsyncIterator[MqttSession]:
        """Connect through the switch (refused at once while down), yield a counted session, disconnect."""
        if not (self.up and self.powered):
            self.refused += 1
            raise TransportError(f"connect {settings.host}:{settings.port}: {self.why_down()} (simulated)")
        self.last_settings = settings
        cm = self.inner.session(settings)
        with self.engine.work(self.mac, "connect"):
            inner = await cm.__aenter__()
        self.connects += 1
        sess = _CountedSession(inner, self)
        self.live = sess
        if not (self.up and self.powered):  # went down while we were connecting
            self._cut(sess)
        try:
            yield sess
        except BaseException:
            self._forget(sess)
            with self.engine.work(self.mac, "disconnect"):
                if not await cm.__aexit__(*sys.exc_info()):
                    raise
        else:
            self._forget(sess)
            with self.engine.work(self.mac, "disconnect"):
                await cm.__aexit__(None, None, None)

    def _forget(self, sess: _CountedSession) -> None:
        sess.kill()
        if self.live is sess:
            self.live = None

    def _cut(self, sess: _CountedSession) -> None:
        sess.kill()
        _retrieve_disconnect_error(sess.inner)
        sock = _socket_of(sess.inner)
        if sock is not None:
            # no DISCONNECT packet: to the broker this is a dead link (it publishes the LWT)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        else:
            log.warning("event=cut_without_socket mac=%s (the broker sees a clean close, no LWT)", self.mac)
        self.cuts += 1

    def set_up(self, up: bool) -> None:
        """Network switch. Going down cuts the live connection."""
        self.up = up
        if not up and self.live is not None:
            self._cut(self.live)

    def set_powered(self, powered: bool) -> None:
        """Power switch. Power off cuts the live connection."""
        self.powered = powered
        if not powered and self.live is not None:
            self._cut(self.live)
