"""Clock-driven helpers: timeouts, backoff, and shutting down tasks whose cancellation was swallowed."""

from __future__ import annotations

import asyncio
import random

import pytest
from fw_testkit import FastClock

from firmware.tasks import first_to_end, raise_if_cancelling
from firmware.timing import Backoff, sleep_or_event, with_timeout


def test_backoff_doubles_to_the_cap_with_seeded_jitter() -> None:
    a = Backoff(1, 60, random.Random(3))
    delays = [a.next_delay() for _ in range(10)]
    bases = [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    assert all(0.5 * b <= d < b for d, b in zip(delays, bases, strict=True))
    b = Backoff(1, 60, random.Random(3))
    assert [b.next_delay() for _ in range(10)] == delays  # reproducible from the seed
    b.reset()
    assert b.next_delay() < 1


def test_with_timeout_uses_the_clock_and_cancels_the_work() -> None:
    async def scenario() -> None:
        clock = FastClock(speed=1000)
        work = asyncio.ensure_future(asyncio.sleep(3600))
        with pytest.raises(TimeoutError, match="timed out after 5 s"):
            await with_timeout(clock, work, 5)
        assert work.cancelled() and clock.sleeps == [5]
        assert await with_timeout(clock, asyncio.sleep(0, result=7), 5) == 7
        event = asyncio.Event()
        asyncio.get_running_loop().call_soon(event.set)
        assert await sleep_or_event(clock, 3600, event) is True
        assert await sleep_or_event(clock, 1, asyncio.Event()) is False

    asyncio.run(scenario())


def test_first_to_end_reraises_and_stops_the_others() -> None:
    async def scenario() -> None:
        other = asyncio.ensure_future(asyncio.sleep(3600))

        async def boom() -> None:
            raise ValueError("x")

        with pytest.raises(ValueError, match="x"):
            await first_to_end(boom(), other)
        assert other.cancelled()

    asyncio.run(scenario())


def test_a_retry_loop_stops_even_when_a_library_swallowed_the_cancellation() -> None:
    async def stubborn_retry_loop() -> None:
        while True:
            try:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:  # what a racing wait_for does: the cancel becomes an error
                    raise ConnectionError("lost") from None
            except ConnectionError:
                raise_if_cancelling()

    async def scenario() -> None:
        task = asyncio.ensure_future(stubborn_retry_loop())
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.wait_for(asyncio.wait({task}), 5)
        assert task.cancelled()

    asyncio.run(scenario())
