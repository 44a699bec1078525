"""The virtual-time engine alone (no broker): ordering, quiescence, open work, the stall watchdog, drift."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import pytest

from simulators.virtual_time import FleetStalled, GatewayClock, VirtualTime

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _in_gateway(engine: VirtualTime, mac: str, coro):
    return asyncio.get_running_loop().create_task(coro, context=engine.gateway_context(mac))


def test_sleeps_wake_in_time_order_and_time_moves_only_between_steps():
    async def scenario():
        engine = VirtualTime(T0)
        log: list[tuple[str, float]] = []

        async def sleeper(name: str, delays: list[float]) -> None:
            for d in delays:
                await engine.sleep(d)
                log.append((name, engine.seconds()))

        tasks = [_in_gateway(engine, "a", sleeper("a", [300, 300, 300])),
                 _in_gateway(engine, "b", sleeper("b", [100, 500, 1]))]
        await engine.advance(900)
        assert engine.now() == T0 + timedelta(seconds=900)
        # same instant: FIFO by when the sleep was scheduled (b at t=100, a at t=300)
        assert log == [("b", 100), ("a", 300), ("b", 600), ("a", 600), ("b", 601), ("a", 900)]
        await asyncio.gather(*tasks)

    asyncio.run(scenario())


def test_time_waits_for_chained_gateway_work_without_sleeps():
    """A gateway reacting through several loop turns (events, tasks) is finished before time moves."""

    async def scenario():
        engine = VirtualTime(T0)
        seen: list[float] = []
        ev = asyncio.Event()

        async def producer() -> None:
            await engine.sleep(10)
            for _ in range(20):  # many loop turns, no clock
                await asyncio.sleep(0)
            ev.set()

        async def consumer() -> None:
            await ev.wait()
            inner = asyncio.ensure_future(asyncio.sleep(0))
            await inner
            seen.append(engine.seconds())

        tasks = [_in_gateway(engine, "a", producer()), _in_gateway(engine, "a", consumer())]
        await engine.advance(1000)
        assert seen == [10.0]
        await asyncio.gather(*tasks)

    asyncio.run(scenario())


def test_open_work_holds_the_clock_until_it_ends():
    async def scenario():
        engine = VirtualTime(T0)
        done_at: list[float] = []
        release = asyncio.Event()

        async def gateway() -> None:
            with engine.work("aa:bb:cc:dd:ee:01", "publish"):
                await release.wait()  # "real I/O": ends when the test says so
            done_at.append(engine.seconds())

        async def timer() -> None:
            await engine.sleep(5)
            done_at.append(engine.seconds())

        tasks = [_in_gateway(engine, "x", gateway()), _in_gateway(engine, "x", timer())]
        adv = asyncio.ensure_future(engine.advance(60))
        for _ in range(50):
            await asyncio.sleep(0)
        assert engine.seconds() == 0 and not done_at  # blocked on the open work
        release.set()
        await adv
        assert done_at == [0.0, 5.0]
        await asyncio.gather(*tasks)

    asyncio.run(scenario())


def test_watchdog_names_the_stuck_gateway():
    async def scenario():
        engine = VirtualTime(T0, watchdog_s=0.3)

        async def stuck() -> None:
            with engine.work("aa:bb:cc:dd:ee:42", "publish"):
                await asyncio.Event().wait()

        task = _in_gateway(engine, "aa:bb:cc:dd:ee:42", stuck())
        with pytest.raises(FleetStalled) as info:
            await engine.advance(60)
        assert "aa:bb:cc:dd:ee:42 publish" in str(info.value)
        assert info.value.stuck[0][:2] == ("aa:bb:cc:dd:ee:42", "publish")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


def test_foreign_busy_tasks_do_not_hold_virtual_time():
    """Code that shares the loop (a consumer, a subscriber) keeps running; the calendar still advances."""

    async def scenario():
        engine = VirtualTime(T0)
        stop = False

        async def foreign() -> None:
            while not stop:
                await asyncio.sleep(0)

        other = asyncio.ensure_future(foreign())
        ticks: list[float] = []

        async def gw() -> None:
            for _ in range(3):
                await engine.sleep(60)
                ticks.append(engine.seconds())

        task = _in_gateway(engine, "g", gw())
        await engine.advance(600)
        stop = True
        await asyncio.gather(other, task)
        assert ticks == [60, 120, 180]

    asyncio.run(scenario())


def test_gateway_clock_drift_reanchors_without_jumps():
    async def scenario():
        engine = VirtualTime(T0)
        clock = GatewayClock(engine)
        await engine.advance(1000)
        clock.set_drift(1000)  # 1000 ppm fast from t=1000
        assert clock.now() == T0 + timedelta(seconds=1000)
        await engine.advance(2000)
        assert clock.monotonic() == pytest.approx(2001.0)
        assert clock.now() == T0 + timedelta(seconds=2001)

        woke: list[float] = []

        async def sleeper() -> None:
            await clock.sleep(1001)  # gateway seconds: 1000 fleet seconds at +1000 ppm
            woke.append(engine.seconds())

        task = _in_gateway(engine, "g", sleeper())
        await engine.advance(5000)
        await task
        assert woke == [pytest.approx(3000.0)]

    asyncio.run(scenario())
