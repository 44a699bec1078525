"""The firmware main loop: poll meters, queue messages on flash, send them over MQTT, obey commands.

Three concurrent jobs per boot, all on the HAL:

* the **poller** reads every meter each ``poll_interval_s`` and puts the messages into the queue
  (v1: one message with all good readings; legacy: one message per good reading);
* the **link** keeps an MQTT session up (LWT ``offline``, retained ``online`` after connect, capped
  jittered backoff forever) and, while connected, runs the **sender** (drains the queue oldest first
  with a bounded PUBACK window, removing a message only after its PUBACK) and the **command listener**;
* a ``reboot`` (command or ``request_reboot``) stops both cleanly, says ``offline``, calls the HAL's
  reboot hook and boots again from flash.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from tds_core.protocol import Reading, command_topic, encode_legacy, encode_v1, status_topic

from .config import ConfigError, GatewayConfig
from .counters import Counters, CountersSnapshot
from .hal import (
    Clock,
    Flash,
    InboundMessage,
    ModbusPort,
    MqttSession,
    MqttSettings,
    MqttTransport,
    RebootHook,
    TransportError,
)
from .poller import MeterPoller
from .store import MessageStore
from .tasks import first_to_end, raise_if_cancelling
from .timing import Backoff, sleep_or_event, with_timeout

__all__ = ["CONFIG_OVERLAY", "Firmware", "Hardware"]

log = logging.getLogger(__name__)
T = TypeVar("T")

CONFIG_OVERLAY = "config/overlay.json"
"""Flash name of the config changes received by command (applied on top of the file at every boot)."""
CRASH_PAUSE_S = 5.0
"""Pause after an unexpected error before rebooting (keeps a persistent fault from spinning the CPU)."""


@dataclass
class Hardware:
    """The HAL bundle one firmware instance runs on."""

    clock: Clock
    flash: Flash
    modbus: ModbusPort
    network: MqttTransport
    reboot: RebootHook
    rng: random.Random = field(default_factory=random.Random)


class _Reboot(Exception):
    """Internal: unwinds the boot's task group when a reboot was requested."""


class Firmware:
    """One gateway. ``await run()`` runs it forever (through reboots); ``counters()`` reads its tallies."""

    def __init__(self, config: GatewayConfig, hw: Hardware) -> None:
        self.file_config = config
        self.config = config
        self.hw = hw
        self._counters = Counters()
        self.store: MessageStore | None = None
        self.connected = asyncio.Event()
        self._reboot_reason: str | None = None
        self._reboot_event = asyncio.Event()
        self._config_changed = asyncio.Event()
        self._overlay: dict = {}

    # ------------------------------------------------------------------------------------- public
    def counters(self) -> CountersSnapshot:
        """A frozen snapshot of the counters (``queue_depth`` = messages waiting on flash)."""
        return self._counters.snapshot(len(self.store) if self.store is not None else 0)

    def request_reboot(self, reason: str) -> None:
        """Ask the main loop to shut down cleanly and reboot through the HAL hook."""
        if self._reboot_reason is None:
            self._reboot_reason = reason
        self._reboot_event.set()

    async def run(self) -> None:
        """Boot, run until a reboot is requested, call the reboot hook, boot again; forever.

        Returns only when the reboot hook raises (e.g. a virtual power-off), re-raising its exception.
        An unexpected error in a boot is logged, counted (``crashes``) and treated like a watchdog reset:
        a short pause on the clock, then the reboot hook.
        """
        while True:
            try:
                reason = await self.run_once()
            except Exception as exc:  # the watchdog: never leave a field gateway dead
                self._counters.crashes += 1
                log.exception("event=crash mac=%s error=%r", self.config.mac, exc)
                reason = f"crash: {type(exc).__name__}"
                await self.hw.clock.sleep(CRASH_PAUSE_S)
            await self.hw.reboot(reason)

    async def run_once(self) -> str:
        """One boot: load flash state, run poller and link until a reboot request; return its reason."""
        self._reboot_reason = None
        self._reboot_event.clear()
        self._counters.boots += 1
        await self.boot()
        log.info(
            "event=boot mac=%s format=%s meters=%d poll_interval_s=%g queue_depth=%d",
            self.config.mac, self.config.payload_format, len(self.config.meters),
            self.config.poll_interval_s, len(self.store or ()),
        )
        try:
            await first_to_end(self._poll_loop(), self._link_loop(), self._wait_reboot())
        except _Reboot:
            pass
        finally:
            self.connected.clear()
            self.hw.modbus.close()
        reason = self._reboot_reason or "requested"
        log.warning("event=shutdown mac=%s reason=%s", self.config.mac, reason)
        return reason

    # --------------------------------------------------------------------------------------- boot
    async def boot(self) -> None:
        """Load the config overlay and the queue from flash (done by ``run_once``; public for tests)."""
        self.config = self.file_config
        self._overlay = {}
        blob = await self.hw.flash.read(CONFIG_OVERLAY)
        if blob is not None:
            try:
                overlay = json.loads(blob)
                self.config = self.file_config.with_overlay(overlay, source=f"flash {CONFIG_OVERLAY}")
                self._overlay = overlay
            except (ValueError, ConfigError) as exc:  # a newer file may have made the overlay invalid
                log.error("event=config_overlay_ignored mac=%s error=%s", self.config.mac, exc)
        self.store = MessageStore(self.hw.flash, self.config.queue.max_messages)
        await self._tally_store(self.store.load())

    async def _tally_store(self, op: Awaitable[T]) -> T:
        """Run a store operation and add the drops/corrupt entries it caused to the counters."""
        assert self.store is not None
        dropped, corrupt = self.store.dropped, self.store.corrupt
        try:
            return await op
        finally:
            self._counters.dropped += self.store.dropped - dropped
            self._counters.corrupt += self.store.corrupt - corrupt

    async def _wait_reboot(self) -> None:
        await self._reboot_event.wait()
        raise _Reboot()  # ends the boot: poller and link are cancelled; the link says "offline" on its way out

    # ------------------------------------------------------------------------------------- polling
    async def _poll_loop(self) -> None:
        """Poll on a drift-free schedule; a config change re-plans the next tick from the last one."""
        clock = self.hw.clock
        tick = clock.monotonic()  # when the last poll was due
        while True:
            await self.poll_once()
            raise_if_cancelling()
            while True:
                interval = self.config.poll_interval_s
                target = tick + interval
                now = clock.monotonic()
                if target < now:  # the poll overran (dead meters, slow bus): skip the missed ticks
                    missed = int((now - target) // interval) + 1
                    target += missed * interval
                    log.warning("event=poll_overrun mac=%s skipped=%d", self.config.mac, missed)
                self._config_changed.clear()
                if not await sleep_or_event(clock, target - now, self._config_changed):
                    tick = target
                    break

    async def poll_once(self) -> int:
        """Read every meter once and queue the resulting message(s). Returns how many were queued."""
        cfg = self.config
        assert self.store is not None
        ts = self.hw.clock.now()
        ts = ts.replace(microsecond=ts.microsecond // 1000 * 1000)  # millisecond resolution on the wire
        poller = MeterPoller(self.hw.modbus, self.hw.clock, cfg.modbus, self._counters, cfg.mac)
        readings: list[Reading] = []
        for meter in cfg.meters:  # one RS-485 bus: one request at a time
            value = await poller.read(meter)
            if value is not None:
                kind = meter.tipo if cfg.payload_format == "legacy" else None
                readings.append(Reading(meter.code, value, meter.unit, kind))
        self._counters.polls += 1
        messages: list[tuple[str, bytes]] = []
        if readings:
            if cfg.payload_format == "v1":
                messages.append(encode_v1(cfg.mac, ts, readings))
            else:
                assert cfg.gateway_code is not None
                messages.extend(encode_legacy(cfg.gateway_code, r.device_code, ts, r) for r in readings)
        for topic, payload in messages:
            await self._tally_store(self.store.put(topic, payload))
            self._counters.enqueued += 1
        log.info(
            "event=poll mac=%s ok=%d failed=%d queued=%d depth=%d",
            cfg.mac, len(readings), len(cfg.meters) - len(readings), len(messages), len(self.store),
        )
        return len(messages)

    # ---------------------------------------------------------------------------------------- link
    def _settings(self) -> MqttSettings:
        b = self.config.broker
        return MqttSettings(
            host=b.host, port=b.port, client_id=self.config.mac, will_topic=status_topic(self.config.mac),
            will_payload=b"offline", tls=b.tls, ca=b.ca, cert=b.cert, key=b.key, keepalive_s=b.keepalive_s,
        )

    async def _link_loop(self) -> None:
        cfg = self.config
        backoff = Backoff(cfg.reconnect.initial_s, cfg.reconnect.max_s, self.hw.rng)
        first = True
        while True:
            if not first:
                self._counters.reconnects += 1
            first = False
            try:
                async with self.hw.network.session(self._settings()) as session:
                    backoff.reset()
                    self._counters.connects += 1
                    try:
                        await self._online(session)
                    finally:
                        if self._reboot_event.is_set():
                            await self._say_offline(session)
            except (TransportError, TimeoutError) as exc:
                raise_if_cancelling()
                if not self.connected.is_set():
                    self._counters.connect_failures += 1
                log.warning("event=link_down mac=%s error=%r", cfg.mac, str(exc))
            finally:
                self.connected.clear()
            delay = backoff.next_delay()
            log.info("event=reconnect_wait mac=%s delay_s=%.2f", cfg.mac, delay)
            await self.hw.clock.sleep(delay)

    async def _online(self, session: MqttSession) -> None:
        mac = self.config.mac
        await with_timeout(self.hw.clock, session.publish(status_topic(mac), b"online", qos=1, retain=True),
                           self.config.queue.ack_timeout_s)
        await session.subscribe(command_topic(mac, "config").rpartition("/")[0] + "/#", qos=1)
        self.connected.set()
        log.info("event=online mac=%s queue_depth=%d", mac, len(self.store or ()))
        # ends with TransportError (link lost) or cancellation (reboot); both unwind the session
        failure: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await first_to_end(self._send_loop(session, failure), self._command_loop(session), failure)

    async def _say_offline(self, session: MqttSession) -> None:
        """A clean disconnect suppresses the LWT, so a shutting-down gateway says "offline" itself.

        Runs in a ``finally`` of a task being cancelled: awaiting here is allowed (one cancellation).
        """
        with contextlib.suppress(TransportError, TimeoutError):
            await with_timeout(self.hw.clock, session.publish(status_topic(self.config.mac), b"offline",
                                                              qos=1, retain=True), 5.0)

    async def _send_loop(self, session: MqttSession, failure: asyncio.Future[None]) -> None:
        """Send queued messages in order with at most ``queue.inflight`` awaiting PUBACK.

        A failed publish sets ``failure`` (which ends the session); pending publishes die with the loop.
        """
        store = self.store
        assert store is not None
        window = asyncio.Semaphore(self.config.queue.inflight)
        pending: set[asyncio.Task[None]] = set()

        def done(task: asyncio.Task[None]) -> None:
            pending.discard(task)
            if not task.cancelled() and task.exception() is not None and not failure.done():
                failure.set_exception(task.exception())  # type: ignore[arg-type]

        cursor = -1
        try:
            while True:
                seq = await store.wait_after(cursor)
                cursor = seq
                await window.acquire()
                msg = await self._tally_store(store.get(seq))
                if msg is None:  # dropped or corrupt meanwhile
                    window.release()
                    continue
                # created in order and started in order: publishes leave in queue order
                task = asyncio.ensure_future(self._publish_one(session, msg.seq, msg.topic, msg.payload, window))
                pending.add(task)
                task.add_done_callback(done)
        finally:
            for task in list(pending):
                task.cancel()

    async def _publish_one(
        self, session: MqttSession, seq: int, topic: str, payload: bytes, window: asyncio.Semaphore
    ) -> None:
        assert self.store is not None
        try:
            self._counters.published += 1
            try:
                await with_timeout(self.hw.clock, session.publish(topic, payload, qos=1),
                                   self.config.queue.ack_timeout_s)
            except TimeoutError as exc:
                raise TransportError(f"no PUBACK for seq {seq} in {self.config.queue.ack_timeout_s:g} s") from exc
            self._counters.acked += 1
            await self.store.ack(seq)
        finally:
            window.release()

    # ------------------------------------------------------------------------------------ commands
    async def _command_loop(self, session: MqttSession) -> None:
        prefix = command_topic(self.config.mac, "config").rpartition("/")[0] + "/"
        async for msg in session.messages():
            if not msg.topic.startswith(prefix):  # brokers may deliver retained/overlapping topics: not ours
                log.debug("event=message_ignored mac=%s topic=%s", self.config.mac, msg.topic)
                continue
            await self.handle_command(msg)
        raise TransportError("message stream ended")

    async def handle_command(self, msg: InboundMessage) -> None:
        """Apply one command message (``.../commands/config`` or ``.../commands/reboot``)."""
        name = msg.topic.rpartition("/")[2]
        self._counters.commands += 1
        mac = self.config.mac
        if name == "config":
            try:
                change = json.loads(msg.payload)
                if not isinstance(change, dict):
                    raise ValueError(f"command config: expected a JSON object, got {type(change).__name__}")
                overlay = {**self._overlay, **change}
                new = self.file_config.with_overlay(overlay)
            except (ValueError, ConfigError) as exc:
                self._counters.commands_rejected += 1
                log.error("event=command_rejected mac=%s command=config error=%s", mac, exc)
                return
            # persist before applying: a reboot right after the command keeps the change
            await self.hw.flash.write(CONFIG_OVERLAY, json.dumps(overlay).encode())
            self._overlay = overlay
            self.config = new
            self._config_changed.set()
            log.warning("event=config_applied mac=%s keys=%s poll_interval_s=%g", mac,
                        ",".join(sorted(change)), new.poll_interval_s)
        elif name == "reboot":
            if msg.retain:  # a retained reboot would reboot us after every connect
                self._counters.commands_rejected += 1
                log.error("event=command_rejected mac=%s command=reboot error=retained", mac)
                return
            log.warning("event=command_reboot mac=%s", mac)
            self.request_reboot("command")
        else:
            self._counters.commands_rejected += 1
            log.error("event=command_rejected mac=%s command=%s error=unsupported", mac, name)
