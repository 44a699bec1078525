"""The fleet engine: many virtual gateways (the real firmware on a virtual HAL) against a real broker.

Two clocks:

* ``clock="real"`` - asyncio on the wall clock; fleet time = ``start`` + seconds since ``Fleet`` was built
  (pass ``start=datetime.now(UTC)`` to publish wall-clock timestamps).
* ``clock="virtual"`` - a simpy calendar (see :mod:`simulators.virtual_time`): simulated days pass in minutes,
  time only advances when every gateway waits on its clock (no connect, publish-awaiting-PUBACK or
  disconnect open), so the broker's pace sets the simulation's pace and nothing is skipped. Readings carry
  simulated timestamps: pick ``start`` so they land in the past (the core refuses > 5 min in the future),
  e.g. ``start = now - duration`` on a 5-minute boundary.

Every gateway boots at ``start`` and polls every ``poll_interval_s`` from there (timestamps on the grid).

Usage::

    fleet = Fleet(specs, broker_url="mqtt://127.0.0.1:1883", clock="virtual", start=t0)
    await fleet.start()
    fleet.network_down([mac], until=t0 + timedelta(minutes=40))
    await fleet.run_until(t0 + timedelta(hours=2))
    assert await fleet.drain(30)
    await fleet.stop()
    fleet.accounting.expected_rows()
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from .accounting import Accounting
from .fleet_spec import GatewaySpec, MeterSpec, TlsMaterial
from .virtual_gateway import VirtualGateway
from .virtual_time import Engine, FleetStalled, RealTime, VirtualTime

__all__ = ["Accounting", "Fleet", "FleetStalled", "GatewaySpec", "MeterSpec", "TlsMaterial"]

log = logging.getLogger(__name__)


class Fleet:
    """Virtual gateways on one engine. Create, ``await start()``, drive with ``run_until``, ``await stop()``.

    Extra keyword options (beyond the contract): ``watchdog_s`` / ``on_stall`` (virtual-time stall guard,
    see ``VirtualTime``), ``flash_write_s`` (gateway seconds a flash write takes; what a power loss can cut),
    ``modbus_timeout_s`` (the firmware's per-attempt timeout), ``config_extra`` (top-level firmware config
    keys for every gateway, e.g. ``{"reconnect": {"initial_s": 1, "max_s": 30}}``).
    """

    def __init__(self, gateways: Sequence[GatewaySpec], *, broker_url: str, clock: str, start: datetime,
                 seed: int = 0, tls: TlsMaterial | None = None, queue_max: int = 10_000,
                 watchdog_s: float = 120.0, on_stall: str = "raise", flash_write_s: float = 0.01,
                 modbus_timeout_s: float = 5.0, config_extra: dict[str, Any] | None = None) -> None:
        if clock not in ("real", "virtual"):
            raise ValueError(f"clock={clock!r}: expected 'real' or 'virtual'")
        if start.tzinfo is None:
            raise ValueError(f"start={start.isoformat()}: expected a tz-aware datetime")
        self.mode = clock
        self.engine: Engine = (VirtualTime(start, watchdog_s=watchdog_s, on_stall=on_stall)
                               if clock == "virtual" else RealTime(start))
        self.accounting = Accounting()
        self.gateways: dict[str, VirtualGateway] = {}
        for spec in gateways:
            if not isinstance(spec, GatewaySpec):
                raise TypeError(f"gateways: expected GatewaySpec items, got {type(spec).__name__}")
            if spec.mac in self.gateways:
                raise ValueError(f"gateways: duplicate mac {spec.mac}")
            self.gateways[spec.mac] = VirtualGateway(
                spec, engine=self.engine, broker_url=broker_url, accounting=self.accounting, seed=seed, tls=tls,
                queue_max=queue_max, flash_write_s=flash_write_s, modbus_timeout_s=modbus_timeout_s,
                config_extra=config_extra,
            )
        self._lock: asyncio.Lock | None = None
        self._started = False
        self._stopped = False
        self.wall_started: float | None = None

    # -- helpers ----------------------------------------------------------------------------------------------
    def gateway(self, mac: str) -> VirtualGateway:
        """The virtual gateway ``mac`` (any MAC spelling)."""
        from tds_core.protocol import normalize_mac

        try:
            return self.gateways[normalize_mac(mac)]
        except (KeyError, ValueError):
            raise KeyError(f"no gateway {mac!r} in this fleet ({len(self.gateways)} gateways)") from None

    def _many(self, macs: Iterable[str] | str) -> list[VirtualGateway]:
        if isinstance(macs, str):
            macs = [macs]
        return [self.gateway(m) for m in macs]

    def _seconds(self, t: datetime, what: str, *, future: bool = True) -> float:
        if not isinstance(t, datetime) or t.tzinfo is None:
            raise ValueError(f"{what}={t!r}: expected a tz-aware datetime")
        s = self.engine.to_seconds(t)
        if future and s <= self.engine.seconds():
            raise ValueError(f"{what}={t.isoformat()}: must be after the fleet's now ({self.now().isoformat()})")
        return s

    def _guard(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    # -- contract ---------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Boot every gateway (firmware + in-process Modbus bank) at the fleet's start instant."""
        if self._started:
            raise RuntimeError("fleet already started")
        self._started = True
        self.wall_started = time.monotonic()
        for gw in self.gateways.values():
            gw.boot()
        log.info("event=fleet_start mode=%s gateways=%d start=%s", self.mode, len(self.gateways),
                 self.engine.start.isoformat())

    async def run_until(self, t: datetime) -> None:
        """Real: sleep until ``t``. Virtual: advance simulated time to ``t`` as fast as broker acks allow."""
        until = self._seconds(t, "t", future=False)
        async with self._guard():
            await self.engine.advance(until)  # type: ignore[attr-defined]

    def now(self) -> datetime:
        """The fleet's clock (simulated in virtual mode; drift-free - each gateway's own clock may drift)."""
        return self.engine.now()

    def queue_depth(self) -> int:
        """Messages waiting on all gateways' flash queues."""
        return sum(gw.queue_depth() for gw in self.gateways.values())

    def queue_depths(self) -> dict[str, int]:
        """MAC -> messages waiting on that gateway's flash queue (only non-empty queues)."""
        return {mac: d for mac, gw in self.gateways.items() if (d := gw.queue_depth())}

    async def drain(self, timeout_s: float, *, horizon_s: float = 3600.0) -> bool:
        """Wait until every gateway's store-and-forward queue is empty (True) or ``timeout_s`` wall seconds.

        Virtual mode advances simulated time as needed (reconnect backoffs are on the fleet clock), at most
        ``horizon_s`` simulated seconds past ``now()`` (so a gateway left powered off or offline cannot push
        timestamps into the wall-clock future); gateways still polling keep adding messages, so "empty" is
        the first quiescent instant with nothing queued.
        """
        deadline = time.monotonic() + timeout_s
        async with self._guard():
            if isinstance(self.engine, VirtualTime):
                def done() -> bool:
                    return self.queue_depth() == 0 or time.monotonic() > deadline

                await self.engine.advance(self.engine.seconds() + horizon_s, stop=done)
                return self.queue_depth() == 0
            while self.queue_depth():
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(0.05)
            return True

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Shut every gateway down cleanly (it says ``offline`` and disconnects); cancel what lingers."""
        if self._stopped:
            return
        self._stopped = True
        gws = list(self.gateways.values())
        for gw in gws:
            gw.halt()
        deadline = time.monotonic() + timeout_s

        def all_down() -> bool:
            return all(not gw.running for gw in gws) or time.monotonic() > deadline

        async with self._guard():
            if isinstance(self.engine, VirtualTime):
                await self.engine.advance(math.inf, stop=all_down)
            else:
                while not all_down():
                    await asyncio.sleep(0.05)
            lingering = [gw for gw in gws if gw.running]
            for gw in lingering:
                gw.cancel()
            tasks = [gw.task for gw in gws if gw.task is not None]
            if tasks:
                await asyncio.wait(tasks, timeout=10.0)
        if lingering:
            log.warning("event=fleet_stop_cancelled gateways=%d", len(lingering))
        log.info("event=fleet_stop accounting=%s", {k: v for k, v in self.accounting.snapshot().items()
                                                    if k != "per_gateway"})

    # -- faults (fleet time; each returns at once, reverting at `until` when given) ------------------------
    def _at(self, until: datetime | None, fn: Any) -> None:
        if until is not None:
            self.engine.call_at(self._seconds(until, "until"), fn)

    def power_loss(self, macs: Iterable[str] | str, until: datetime | None = None) -> None:
        """Power off now (unsynced flash lost, no clean shutdown); power on and boot at ``until``.

        ``until=None``: stays off until :meth:`power_on` (or :meth:`reboot`).
        """
        gws = self._many(macs)
        if until is not None:
            self._seconds(until, "until")
        for gw in gws:
            gw.power_off()
        self._at(until, lambda: [gw.power_on() for gw in gws])

    def power_on(self, macs: Iterable[str] | str) -> None:
        """Restore power now (boots the firmware)."""
        for gw in self._many(macs):
            gw.power_on()

    def reboot(self, macs: Iterable[str] | str) -> None:
        """Clean reboot through the firmware; a powered-off gateway is powered on instead."""
        for gw in self._many(macs):
            if gw.powered:
                gw.reboot()
            else:
                gw.power_on()

    def network_down(self, macs: Iterable[str] | str, until: datetime | None = None) -> None:
        """Broker unreachable for these gateways (connects refused, live connection cut) until ``until``."""
        gws = self._many(macs)
        if until is not None:
            self._seconds(until, "until")
        for gw in gws:
            gw.set_network(False)
        self._at(until, lambda: [gw.set_network(True) for gw in gws])

    def network_up(self, macs: Iterable[str] | str) -> None:
        """Network back now."""
        for gw in self._many(macs):
            gw.set_network(True)

    def modbus_fault(self, mac: str, slave_id: int, kind: str, until: datetime | None = None,
                     **params: Any) -> None:
        """A Modbus fault on one meter from now to ``until``: no_reply|exception|delay|bad_crc|stuck|counter_reset.

        Params: ``code`` (exception), ``seconds`` (delay, gateway time), ``probability`` (intermittent).
        """
        if until is not None:
            self._seconds(until, "until")
        self.gateway(mac).add_modbus_fault(slave_id, kind, self.now(), until, **params)

    def clock_drift(self, macs: Iterable[str] | str, ppm: float) -> None:
        """From now on, these gateways' clocks run ``ppm`` parts per million fast (negative: slow)."""
        for gw in self._many(macs):
            gw.set_drift(ppm)

    async def publish_raw(self, mac: str, topic: str, payload: bytes) -> None:
        """Publish ``payload`` on ``topic`` as gateway ``mac`` (its live connection, else its identity)."""
        await self.gateway(mac).publish_raw(topic, payload)

    # -- measurement ------------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Engine and fleet counters (JSON-able)."""
        e = self.engine
        out: dict[str, Any] = {
            "mode": self.mode,
            "now": self.now().isoformat(),
            "gateways": len(self.gateways),
            "queue_depth": self.queue_depth(),
            "modbus_requests": sum(gw.port.requests for gw in self.gateways.values()),
            "polls": sum(gw.firmware.counters().polls for gw in self.gateways.values() if gw.firmware),
        }
        if isinstance(e, VirtualTime):
            out.update(calendar_steps=e.steps, wakeups=e.wakeups, quiescences=e.quiescences)
        return out
