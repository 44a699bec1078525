"""Fixtures for the fleet engine tests: the embedded amqtt broker (plain mode) and a paho subscriber."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fleet_testkit import Subscriber

from tds_core.stack import BrokerProcess


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    """The embedded broker in a child process on a free port (waits for its READY line)."""
    proc = BrokerProcess("127.0.0.1", 0)
    try:
        proc.start()
    except RuntimeError as exc:  # pragma: no cover - environment problem
        pytest.skip(f"embedded broker (amqtt) did not start: {exc}; pip install amqtt==0.12.1")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def subscriber(broker: BrokerProcess) -> Iterator[Subscriber]:
    """A subscriber to all telemetry and status topics."""
    sub = Subscriber(broker.port or 0)
    try:
        yield sub
    finally:
        sub.close()
