"""Running sibling coroutines without nested ``asyncio.TaskGroup``.

Python 3.11's TaskGroup can swallow a cancellation of the parent task when a child fails at the same
moment (CPython gh-116720, fixed in 3.12.3+/3.13): a gateway being shut down would then keep running.
Thousands of virtual gateways are cancelled and rebooted all the time, so the firmware uses this small,
explicit helper instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

__all__ = ["first_to_end", "raise_if_cancelling"]


def raise_if_cancelling() -> None:
    """Raise CancelledError if the current task has a pending cancellation request.

    Call it where a retry loop catches an error: in 3.11 ``asyncio.wait_for`` (used inside aiomqtt and
    pymodbus) can turn a cancellation that races with a completing operation into that operation's result
    or error, and a loop that simply retries would then never stop.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


async def first_to_end(*aws: Awaitable[object]) -> None:
    """Run ``aws`` concurrently until the first one ends; then cancel and await the others.

    Re-raises the first one's exception (if it raised). A cancellation of the caller cancels all of them
    and propagates. Exceptions of the cancelled others are retrieved and dropped.
    """
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        first = next(t for t in tasks if t in done)
        first.result()
    finally:
        pending = set(tasks)
        while pending:
            for t in pending:
                t.cancel()
            # re-cancel now and then: a task whose cancellation was swallowed by a library still ends
            _, pending = await asyncio.wait(pending, timeout=1.0)
        for t in tasks:
            if not t.cancelled():
                t.exception()  # mark retrieved
