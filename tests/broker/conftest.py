"""Fixtures: an embedded broker running in its own event-loop thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from tds_core.broker.embedded import EmbeddedBroker


class BrokerThread:
    """Runs an EmbeddedBroker on an event loop in a background thread (paho clients stay blocking)."""

    def __init__(self, broker: EmbeddedBroker) -> None:
        self.broker = broker
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="embedded-broker", daemon=True)

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        """Run a coroutine on the broker's loop and return its result."""
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def __enter__(self) -> BrokerThread:
        self.thread.start()
        self.call(self.broker.start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.call(self.broker.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture
def plain_broker() -> Iterator[BrokerThread]:
    """A plain-mode embedded broker on 127.0.0.1 and a free port."""
    with BrokerThread(EmbeddedBroker("127.0.0.1", 0)) as bt:
        yield bt
