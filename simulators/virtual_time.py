"""Fleet time: one engine per fleet, real (wall clock) or virtual (a simpy event calendar).

Everything a virtual gateway waits on goes through its engine:

* ``sleep(s)`` - fleet seconds. Real: ``asyncio.sleep``. Virtual: a simpy ``Timeout`` whose callback resolves
  an asyncio future; the calendar only moves when :meth:`VirtualTime.advance` steps it.
* ``work(mac, what)`` - a context manager around real I/O (an MQTT connect, a publish waiting for its
  PUBACK, a disconnect). Virtual time never advances while any work is open: back-pressure from the real
  broker paces the simulation and no timeout fires because the simulation outran the network.

Quiescence (virtual): no open work and no ready asyncio callback that belongs to a gateway. Gateway tasks
run in a ``contextvars.Context`` carrying :data:`GATEWAY`, and every callback asyncio schedules on their
behalf (task wake-ups, ``asyncio.wait`` completions, future callbacks) carries that context, so callbacks of
other code sharing the loop (a consumer, a test subscriber) do not hold the simulation back. This reads the
private ``loop._ready`` deque of the default asyncio loop (CPython 3.11); see :func:`_ready_handles`.

A wall-clock watchdog turns a stall (work open with no progress for ``watchdog_s``) into
:class:`FleetStalled`, naming the gateways and operations that are stuck.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import simpy

__all__ = ["GATEWAY", "Engine", "FleetStalled", "GatewayClock", "RealTime", "VirtualTime"]

log = logging.getLogger(__name__)

GATEWAY: contextvars.ContextVar[str | None] = contextvars.ContextVar("tds_fleet_gateway", default=None)
"""Set (to the MAC) in the context every task of a virtual gateway runs in."""


class FleetStalled(RuntimeError):
    """Virtual time cannot advance: real I/O of some gateways made no progress for ``watchdog_s``."""

    def __init__(self, message: str, stuck: list[tuple[str, str, float]]) -> None:
        super().__init__(message)
        self.stuck = stuck  # (mac, operation, seconds open)


def _check_aware(name: str, value: datetime) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"{name}={value!r}: expected a tz-aware datetime")


class Engine:
    """Common part of both engines: the fleet's start, open-work tracking and gateway contexts."""

    virtual = False

    def __init__(self, start: datetime) -> None:
        _check_aware("start", start)
        self.start = start
        self._work: dict[int, tuple[str, str, float]] = {}
        self._tokens = itertools.count()
        self._idle: asyncio.Event | None = None
        self.last_progress = time.monotonic()

    # -- time ---------------------------------------------------------------------------------------------
    def seconds(self) -> float:  # pragma: no cover - overridden
        """Fleet seconds since ``start``."""
        raise NotImplementedError

    def now(self) -> datetime:
        """The fleet's (true, drift-free) clock."""
        return self.start + timedelta(seconds=self.seconds())

    def to_seconds(self, at: datetime) -> float:
        """Fleet seconds of instant ``at``."""
        _check_aware("at", at)
        return (at - self.start).total_seconds()

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - overridden
        """Wait ``seconds`` of fleet time."""
        raise NotImplementedError

    def call_at(self, seconds: float, fn: Callable[[], Any]) -> None:  # pragma: no cover - overridden
        """Call ``fn()`` (synchronously, in the loop) when fleet time reaches ``seconds``."""
        raise NotImplementedError

    def timer(self, delay: float, fn: Callable[[], bool]) -> None:  # pragma: no cover - overridden
        """Call ``fn()`` after ``delay`` fleet seconds; ``fn`` returns True when it woke a waiter."""
        raise NotImplementedError

    # -- open work ------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def work(self, mac: str, what: str) -> Iterator[None]:
        """Mark real I/O in progress for gateway ``mac`` (virtual time waits for it to end)."""
        token = next(self._tokens)
        now = time.monotonic()
        if not self._work:
            self.last_progress = now  # the watchdog measures stalls from when work was first open
        self._work[token] = (mac, what, now)
        try:
            yield
        finally:
            del self._work[token]
            self.last_progress = time.monotonic()
            if not self._work and self._idle is not None:
                self._idle.set()

    @property
    def busy(self) -> int:
        """Operations of real I/O open right now."""
        return len(self._work)

    def open_work(self) -> list[tuple[str, str, float]]:
        """(mac, operation, seconds open), oldest first."""
        now = time.monotonic()
        return sorted(((m, w, now - t0) for m, w, t0 in self._work.values()), key=lambda x: -x[2])

    @staticmethod
    def gateway_context(mac: str) -> contextvars.Context:
        """A fresh context whose tasks count as gateway ``mac``'s."""
        ctx = contextvars.copy_context()
        ctx.run(GATEWAY.set, mac)
        return ctx


class RealTime(Engine):
    """Wall-clock engine: fleet time = ``start`` + monotonic seconds since construction."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self._t0 = time.monotonic()

    def seconds(self) -> float:
        """Monotonic seconds since the engine was built."""
        return time.monotonic() - self._t0

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep``."""
        await asyncio.sleep(max(0.0, seconds))

    def call_at(self, seconds: float, fn: Callable[[], Any]) -> None:
        """``loop.call_later``."""
        asyncio.get_running_loop().call_later(max(0.0, seconds - self.seconds()), fn)

    def timer(self, delay: float, fn: Callable[[], bool]) -> None:
        """``loop.call_later``."""
        asyncio.get_running_loop().call_later(max(0.0, delay), fn)

    async def advance(self, until_s: float) -> None:
        """Sleep until fleet time reaches ``until_s``."""
        await asyncio.sleep(max(0.0, until_s - self.seconds()))


def _ready_handles(loop: asyncio.AbstractEventLoop) -> Any:
    """The loop's queue of callbacks ready to run (CPython ``BaseEventLoop._ready``), or None."""
    return getattr(loop, "_ready", None)


class VirtualTime(Engine):
    """Simulated time on a simpy ``Environment`` (seconds since ``start``), advanced only at quiescence.

    ``watchdog_s``: wall seconds of open work without progress before :class:`FleetStalled`;
    ``on_stall``: ``"raise"`` or ``"advance"`` (log, then let time move on so firmware timeouts fire, which
    models a broker that stopped answering).
    """

    virtual = True

    def __init__(self, start: datetime, *, watchdog_s: float = 120.0, on_stall: str = "raise") -> None:
        super().__init__(start)
        if on_stall not in ("raise", "advance"):
            raise ValueError(f"on_stall={on_stall!r}: expected 'raise' or 'advance'")
        if not watchdog_s > 0:
            raise ValueError(f"watchdog_s={watchdog_s!r}: expected a number > 0")
        self.env = simpy.Environment()
        self.watchdog_s = watchdog_s
        self.on_stall = on_stall
        self._woke = False
        self.steps = 0  # calendar events processed
        self.wakeups = 0  # sleeps that ended (a live waiter was resumed)
        self.quiescences = 0

    def seconds(self) -> float:
        """Simulated seconds since ``start``."""
        return float(self.env.now)

    # -- waiting ------------------------------------------------------------------------------------------
    def _resolve(self, fut: asyncio.Future[None], _event: Any = None) -> None:
        if not fut.done():
            fut.set_result(None)
            self._woke = True
            self.wakeups += 1

    def sleep(self, seconds: float) -> asyncio.Future[None]:  # type: ignore[override]
        """A future resolved when the calendar reaches now + ``seconds`` (a cancelled one is just skipped)."""
        if not math.isfinite(seconds):
            if seconds > 0:
                return asyncio.get_running_loop().create_future()  # never resolves
            seconds = 0.0
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        event = self.env.timeout(max(0.0, seconds))
        event.callbacks.append(lambda ev, fut=fut: self._resolve(fut))  # type: ignore[union-attr]
        return fut

    def timer(self, delay: float, fn: Callable[[], bool]) -> None:
        """Run ``fn()`` in the calendar step ``delay`` seconds from now (a False return is a dead timer)."""

        def fire(_ev: Any) -> None:
            if fn():
                self._woke = True
                self.wakeups += 1

        event = self.env.timeout(max(0.0, delay) if math.isfinite(delay) else 1e18)
        event.callbacks.append(fire)  # type: ignore[union-attr]

    def call_at(self, seconds: float, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` inside the calendar step that reaches ``seconds`` (at least now)."""

        def fire(_ev: Any) -> None:
            self._woke = True
            fn()

        event = self.env.timeout(max(0.0, seconds - self.seconds()))
        event.callbacks.append(fire)  # type: ignore[union-attr]

    # -- advancing ------------------------------------------------------------------------------------------
    def _ours_ready(self, loop: asyncio.AbstractEventLoop) -> bool:
        for handle in _ready_handles(loop):
            ctx = getattr(handle, "_context", None)
            if (ctx is None or ctx.get(GATEWAY) is not None) and not getattr(handle, "_cancelled", False):
                return True
        return False

    async def quiesce(self) -> None:
        """Return when no gateway can make progress without the clock (raises :class:`FleetStalled`)."""
        loop = asyncio.get_running_loop()
        if self._idle is None:
            self._idle = asyncio.Event()
        exact = _ready_handles(loop) is not None
        spins = 0
        while True:
            await asyncio.sleep(0)
            spins += 1
            if self._work:
                await self._wait_idle()
                continue
            if exact and not self._ours_ready(loop):
                break
            if not exact and spins > 50:
                break  # a loop without _ready: 50 turns without open work is taken as quiet
            if spins % 100_000 == 0:
                log.warning("event=fleet_spinning spins=%d at=%s", spins, self.now().isoformat())
        self.quiescences += 1

    async def _wait_idle(self) -> None:
        assert self._idle is not None
        while self._work:
            self._idle.clear()
            remaining = self.watchdog_s - (time.monotonic() - self.last_progress)
            if remaining <= 0:
                self._stalled()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), min(remaining, 1.0))

    def _stalled(self) -> None:
        stuck = self.open_work()
        shown = ", ".join(f"{m} {w} ({age:.0f} s)" for m, w, age in stuck[:10])
        more = f" and {len(stuck) - 10} more" if len(stuck) > 10 else ""
        message = (f"virtual time stalled at {self.now().isoformat()}: {len(stuck)} real I/O operation(s) "
                   f"made no progress for {self.watchdog_s:g} s wall: {shown}{more}")
        if self.on_stall == "raise":
            raise FleetStalled(message, stuck)
        log.error("event=fleet_stalled action=advance %s", message)
        self._work.clear()  # forget them: their completions still run, but no longer hold the clock
        self.last_progress = time.monotonic()

    async def advance(self, until_s: float, stop: Callable[[], bool] | None = None) -> bool:
        """Process the calendar up to and including ``until_s`` (then sit at ``until_s``).

        Before every step the fleet is quiesced. ``stop()`` is checked at each quiescence; True ends early
        (returns True). Returns False when ``until_s`` was reached.
        """
        env = self.env
        need_quiesce = True
        while True:
            if need_quiesce:
                await self.quiesce()
                need_quiesce = False
                if stop is not None and stop():
                    return True
            nxt = env.peek()
            if nxt > until_s:
                if until_s > env.now:
                    env.run(until=until_s)
                return False
            self._woke = False
            while env.peek() == nxt:  # every event of this instant, then let the gateways react
                env.step()
                self.steps += 1
            need_quiesce = self._woke or (stop is not None)
            if not need_quiesce and self.steps % 4096 == 0:
                await asyncio.sleep(0)  # dead timers only: still let the rest of the loop breathe


class GatewayClock:
    """One gateway's clock (the firmware's ``Clock``): fleet time seen through a drift of ``ppm``.

    Gateway seconds run ``1 + ppm·1e-6`` times as fast as fleet seconds; changing the drift re-anchors, so
    the clock never jumps, and re-arms pending sleeps (a sleep ends at a deadline in gateway time, as on a
    real crystal). ``offset_s`` shifts the wall reading (``now``) only.
    """

    def __init__(self, engine: Engine, ppm: float = 0.0, offset_s: float = 0.0) -> None:
        self.engine = engine
        self.offset_s = offset_s
        self._fleet0 = engine.seconds()
        self._gw0 = self._fleet0
        self._rate = 1.0
        self._gen = 0
        self._pending: dict[asyncio.Future[None], float] = {}  # sleeper -> deadline (gateway seconds)
        self.set_drift(ppm)

    @property
    def ppm(self) -> float:
        """Current drift in parts per million."""
        return (self._rate - 1.0) * 1e6

    def set_drift(self, ppm: float) -> None:
        """Run ``ppm`` fast (negative: slow) from now on."""
        if not math.isfinite(ppm) or not -1e5 < ppm < 1e5:
            raise ValueError(f"ppm={ppm!r}: expected a finite drift within ±100000")
        now = self.engine.seconds()
        self._gw0 = self._gw(now)
        self._fleet0 = now
        self._rate = 1.0 + ppm * 1e-6
        self._gen += 1
        for fut, deadline in list(self._pending.items()):
            self._arm(fut, deadline)

    def _gw(self, fleet_s: float) -> float:
        return self._gw0 + (fleet_s - self._fleet0) * self._rate

    def now(self) -> datetime:
        """Gateway wall time (UTC)."""
        return self.engine.start + timedelta(seconds=self._gw(self.engine.seconds()) + self.offset_s)

    def monotonic(self) -> float:
        """Gateway seconds (drifting, never backwards)."""
        return self._gw(self.engine.seconds())

    def _arm(self, fut: asyncio.Future[None], deadline: float) -> None:
        gen = self._gen

        def fire() -> bool:
            if gen != self._gen or fut.done():
                return False  # re-armed after a drift change, or the sleeper was cancelled
            fut.set_result(None)
            return True

        self.engine.timer((deadline - self.monotonic()) / self._rate, fire)

    async def sleep(self, seconds: float) -> None:
        """Sleep until ``seconds`` of gateway time have passed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        deadline = self.monotonic() + max(0.0, seconds)
        self._pending[fut] = deadline
        try:
            self._arm(fut, deadline)
            await fut
        finally:
            del self._pending[fut]
