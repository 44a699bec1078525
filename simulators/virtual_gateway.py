"""One virtual gateway: the real firmware (``firmware.Firmware``) on the virtual HAL, with its Modbus bank.

Power loss: the network is cut (no DISCONNECT: the broker sends the LWT), flash writes in progress are lost
and unsynced deletes come back, the firmware task is cancelled (its RAM - counters, in-flight state - is
gone); power on boots a *new* ``Firmware`` instance from the same flash. Reboot: the firmware's own clean
path (``request_reboot``). Clock drift: the gateway clock runs ``ppm`` fast or slow.

``publish_raw`` publishes on the firmware's own live MQTT connection (same client id, same session) when
there is one; otherwise it opens a separate short connection with the same identity (client id and, with
TLS, the gateway's certificate), which the broker would treat as a takeover if the firmware connected at
that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import zlib
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from firmware.config import GatewayConfig, parse_config
from firmware.gateway import Firmware, Hardware
from firmware.hal import AiomqttTransport, MqttSettings, MqttTransport, TransportError
from tds_core.protocol import status_topic

from .accounting import Accounting
from .faults import FAULT_KINDS, Fault
from .fleet_spec import GatewaySpec, MeterSpec, TlsMaterial
from .meters import Meter, meter_from_spec
from .modbus_bank import ModbusBank
from .virtual_hal import InProcessModbusPort, SwitchedTransport, VirtualFlash
from .virtual_time import Engine, GatewayClock

__all__ = ["GatewayHalted", "VirtualGateway", "build_config"]

log = logging.getLogger(__name__)


class GatewayHalted(Exception):
    """Raised by the reboot hook to end ``Firmware.run`` when the fleet stops."""


def _seed(*parts: object) -> int:
    return zlib.crc32("/".join(str(p) for p in parts).encode())


def build_config(spec: GatewaySpec, broker_url: str, *, tls: TlsMaterial | None = None, queue_max: int = 10_000,
                 modbus_timeout_s: float = 5.0, extra: dict[str, Any] | None = None) -> GatewayConfig:
    """The firmware config of a virtual gateway (validated by the firmware's own parser)."""
    parts = urlsplit(broker_url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or not parts.port:
        raise ValueError(f"broker_url={broker_url!r}: expected mqtt://host:port or mqtts://host:port")
    scheme = "mqtts" if tls is not None else "mqtt"
    broker: dict[str, Any] = {"url": f"{scheme}://{parts.hostname}:{parts.port}"}
    if tls is not None:
        broker["ca"], broker["cert"], broker["key"] = tls.files_for(spec.mac)
    doc: dict[str, Any] = {
        "mac": spec.mac,
        "gateway_code": spec.code,
        "payload_format": spec.payload_format,
        "poll_interval_s": spec.poll_interval_s,
        "broker": broker,
        "modbus": {"port": "inproc", "timeout_s": modbus_timeout_s},
        "queue": {"max_messages": queue_max},
        "storage_dir": "flash",
        "meters": [
            {"code": m.code, "slave_id": m.slave_id, "register": m.register, "data_type": m.data_type,
             "word_order": m.word_order, "scale": m.scale, "unit": m.unit, "kind": m.kind}
            for m in spec.meters
        ],
    }
    if extra:
        doc.update(extra)
    return parse_config(doc, source=f"virtual gateway {spec.mac}", check_files=False)


def build_meter(spec: MeterSpec, *, mac: str, fleet_seed: int, start: datetime) -> Meter:
    """The simulator model of one meter (counters start at ``start`` unless params give an ``origin``)."""
    params = {k: v for k, v in spec.params.items() if k not in ("model", "overflow", "seed")}
    model = spec.model
    if model in ("energy", "water"):
        params.setdefault("origin", start)
    seed = int(spec.params.get("seed", _seed(fleet_seed, mac, spec.code)))
    return meter_from_spec(model, spec.code, seed, **params)


class VirtualGateway:
    """Firmware + bank + virtual HAL for one :class:`GatewaySpec`, on a fleet ``engine``."""

    def __init__(self, spec: GatewaySpec, *, engine: Engine, broker_url: str, accounting: Accounting,
                 seed: int = 0, tls: TlsMaterial | None = None, queue_max: int = 10_000,
                 flash_write_s: float = 0.0, modbus_timeout_s: float = 5.0,
                 transport: MqttTransport | None = None, config_extra: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.mac = spec.mac
        self.engine = engine
        self.accounting = accounting
        self.tls = tls
        self.config = build_config(spec, broker_url, tls=tls, queue_max=queue_max,
                                   modbus_timeout_s=modbus_timeout_s, extra=config_extra)
        self.clock = GatewayClock(engine)
        mac = self.mac
        self.bank = ModbusBank(f"gw-{mac}", clock=engine.now, seed=_seed(seed, mac, "bank"), log_size=0,
                               on_read=lambda read: accounting.on_served(mac, read))
        for m in spec.meters:
            self.bank.add_meter(m.slave_id, build_meter(m, mac=mac, fleet_seed=seed, start=engine.start),
                                register=m.register, data_type=m.data_type, scale=m.scale,
                                word_order=m.word_order, overflow=str(m.params.get("overflow", "error")))
        self.flash = VirtualFlash(self.clock, write_s=flash_write_s,
                                  on_delete=lambda name, blob: accounting.on_flash_delete(mac, name, blob))
        self.port = InProcessModbusPort(self.bank, self.clock, timeout_s=self.config.modbus.timeout_s,
                                        fleet_now=engine.now,
                                        on_failed_attempt=lambda sid: accounting.on_failed_attempt(mac, sid))
        inner = transport or AiomqttTransport(max_inflight=self.config.queue.inflight)
        self.transport = SwitchedTransport(inner, engine, mac, observer=accounting)
        self.rng = random.Random(_seed(seed, mac, "rng"))
        self.firmware: Firmware | None = None
        self.task: asyncio.Task[None] | None = None
        self.powered = False
        self.boots = 0
        self.power_losses = 0
        self._halting = False
        self._failures_base: dict[str, int] = {}
        accounting.register_failure_source(mac, self.meter_failures)

    # -- lifecycle --------------------------------------------------------------------------------------------
    def boot(self) -> None:
        """Power on: a fresh firmware instance (empty RAM) on this gateway's flash and bus."""
        if self.task is not None and not self.task.done():
            raise RuntimeError(f"gateway {self.mac}: already running")
        self._halting = False
        self.powered = True
        self.flash.power_on()
        self.transport.set_powered(True)
        hw = Hardware(clock=self.clock, flash=self.flash, modbus=self.port, network=self.transport,
                      reboot=self._reboot_hook, rng=self.rng)
        self.firmware = Firmware(self.config, hw)
        self.boots += 1
        loop = asyncio.get_running_loop()
        self.task = loop.create_task(self._run(self.firmware), name=f"gateway {self.mac}",
                                     context=self.engine.gateway_context(self.mac))

    async def _run(self, fw: Firmware) -> None:
        with contextlib.suppress(GatewayHalted):
            await fw.run()

    async def _reboot_hook(self, reason: str) -> None:
        if self._halting:
            raise GatewayHalted(reason)
        log.info("event=virtual_reboot mac=%s reason=%s", self.mac, reason)

    def meter_failures(self) -> dict[str, int]:
        """Meter code -> readings that failed every attempt, over all power cycles."""
        out = dict(self._failures_base)
        if self.firmware is not None:
            for code, n in self.firmware.counters().meter_failures.items():
                out[code] = out.get(code, 0) + n
        return out

    def power_off(self) -> None:
        """Power loss, now: cut the link, lose unsynced flash, kill the firmware (no clean shutdown)."""
        if not self.powered:
            return
        self.powered = False
        self.power_losses += 1
        self.transport.set_powered(False)
        lost, back = self.flash.power_off()
        self.accounting.on_power_loss(self.mac, lost, back)
        self._failures_base = self.meter_failures()
        self.firmware = None
        if self.task is not None and not self.task.done():
            task = self.task
            task.cancel()
            # its unwinding (aiomqtt noticing the cut socket) is real I/O: virtual time waits for it
            asyncio.get_running_loop().create_task(self._reap(task))
        log.warning("event=power_loss mac=%s lost_queue_writes=%d resurrected=%d", self.mac, lost, back)

    async def _reap(self, task: asyncio.Task[None]) -> None:
        with self.engine.work(self.mac, "power-off unwind"), contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(task), 30.0)
        if not task.done():
            log.error("event=power_off_unwind_stuck mac=%s", self.mac)

    def power_on(self) -> None:
        """Restore power and boot (no-op when already on)."""
        if self.powered:
            return
        if self.task is not None and not self.task.done():  # still unwinding: boot right after
            self.powered = True
            self.task.add_done_callback(lambda _t: self._boot_if_powered())
            return
        self.boot()

    def _boot_if_powered(self) -> None:
        if self.powered and not self.running:
            self.boot()

    def reboot(self) -> None:
        """Clean reboot through the firmware (says offline, reloads from flash)."""
        if self.firmware is not None and self.powered:
            self.firmware.request_reboot("fleet")

    def set_network(self, up: bool) -> None:
        """Network switch (down: connects refused, live connection cut)."""
        self.transport.set_up(up)

    def set_drift(self, ppm: float) -> None:
        """Clock drift from now on."""
        self.clock.set_drift(ppm)

    def halt(self) -> None:
        """Ask the firmware to shut down cleanly and not come back (``stop``)."""
        self._halting = True
        if self.firmware is not None and self.task is not None and not self.task.done():
            self.firmware.request_reboot("fleet stop")

    def cancel(self) -> None:
        """Hard stop of whatever still runs."""
        if self.task is not None and not self.task.done():
            self.task.cancel()

    @property
    def running(self) -> bool:
        """The firmware task is alive."""
        return self.task is not None and not self.task.done()

    def queue_depth(self) -> int:
        """Messages on this gateway's flash queue."""
        return self.flash.queue_depth()

    # -- faults ---------------------------------------------------------------------------------------------
    def add_modbus_fault(self, slave_id: int, kind: str, start: datetime, until: datetime | None,
                         **params: Any) -> Fault:
        """Schedule a Modbus fault on ``slave_id`` from ``start`` (fleet time) to ``until``."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"modbus fault kind={kind!r}: expected one of {', '.join(FAULT_KINDS)}")
        if slave_id not in self.bank.slave_ids:
            raise ValueError(f"gateway {self.mac}: no meter on slave_id={slave_id}; have {self.bank.slave_ids}")
        allowed = {"code", "seconds", "probability"}
        bad = sorted(set(params) - allowed)
        if bad:
            raise ValueError(f"modbus fault {kind}: unknown parameter(s) {bad}; expected some of {sorted(allowed)}")
        fault = Fault(kind, start, None if kind == "counter_reset" else until, **params)
        if kind == "delay":
            self.port.add_delay(slave_id, fault)
            return fault
        return self.bank.add_fault(slave_id, fault)

    # -- injection --------------------------------------------------------------------------------------------
    def _settings(self) -> MqttSettings:
        b = self.config.broker
        return MqttSettings(host=b.host, port=b.port, client_id=self.mac, will_topic=status_topic(self.mac),
                            tls=b.tls, ca=b.ca, cert=b.cert, key=b.key, keepalive_s=b.keepalive_s)

    async def publish_raw(self, topic: str, payload: bytes) -> str:
        """Publish bytes as this gateway; returns ``"live"`` (firmware's connection) or ``"separate"``."""
        if not self.transport.up:
            raise TransportError(f"gateway {self.mac}: network is down; cannot publish as it")
        live = self.transport.live
        if live is not None and not live.dead:
            await live.raw_publish(topic, payload)
            self.accounting.on_raw_publish(self.mac)
            return "live"
        settings = self.transport.last_settings or self._settings()
        with self.engine.work(self.mac, "publish_raw connect"):
            async with self.transport.inner.session(settings) as sess:
                await sess.publish(topic, payload, qos=1)
        self.accounting.on_raw_publish(self.mac)
        return "separate"
