"""Waiting on the firmware's Clock: timeouts, interruptible sleeps and the reconnect backoff.

Everything here takes a ``Clock`` so a virtual clock can drive it; nothing uses loop time directly.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable
from typing import TypeVar

from .hal import Clock

__all__ = ["Backoff", "sleep_or_event", "with_timeout"]

T = TypeVar("T")


async def with_timeout(clock: Clock, awaitable: Awaitable[T], seconds: float) -> T:
    """Await ``awaitable`` for at most ``seconds`` of ``clock`` time; raise ``TimeoutError`` after that.

    The loser is cancelled. Cancelling the caller cancels both. A coroutine that finishes without ever
    suspending (an in-process Modbus port in a virtual gateway) is run eagerly: no timer, no tasks; that
    was most of a virtual fleet's CPU time.
    """
    if asyncio.iscoroutine(awaitable):
        try:
            first = awaitable.send(None)
        except StopIteration as done:
            return done.value
        awaitable = _Resumed(awaitable, first)
    work = asyncio.ensure_future(_await(awaitable))
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait((work, timer), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        work.cancel()
        timer.cancel()
        raise
    if work.done():
        timer.cancel()
        return work.result()
    work.cancel()
    await asyncio.wait((work,))  # let it unwind; a cancellation of the caller still propagates
    if not work.cancelled():
        work.exception()  # retrieved: replaced by the timeout
    raise TimeoutError(f"timed out after {seconds:g} s")


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


class _Resumed:
    """A coroutine already stepped once, awaitable again from where it suspended (as a Task would drive it)."""

    def __init__(self, coro, yielded) -> None:  # type: ignore[no-untyped-def]
        self._coro, self._yielded = coro, yielded

    def __await__(self):  # type: ignore[no-untyped-def]
        coro, yielded = self._coro, self._yielded
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # e.g. CancelledError thrown in by the task
                try:
                    yielded = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration as done:
                    return done.value


async def sleep_or_event(clock: Clock, seconds: float, event: asyncio.Event) -> bool:
    """Sleep ``seconds`` on ``clock`` unless ``event`` is set first. True if the event ended the sleep."""
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait((waiter, timer), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        timer.cancel()
    return event.is_set()


class Backoff:
    """Capped exponential backoff with jitter: ``initial, 2*initial, ...`` up to ``cap``, each delay
    multiplied by a factor in [0.5, 1.0) from ``rng`` (seeded in a virtual gateway: reproducible runs,
    and a fleet that lost its broker does not reconnect in lock-step)."""

    def __init__(self, initial: float, cap: float, rng: random.Random) -> None:
        self.initial, self.cap, self.rng = initial, cap, rng
        self.attempt = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; advances the sequence."""
        base = min(self.cap, self.initial * (2 ** min(self.attempt, 60)))
        self.attempt += 1
        return base * (0.5 + 0.5 * self.rng.random())

    def reset(self) -> None:
        """Back to ``initial`` (after a successful connection)."""
        self.attempt = 0
