"""Fixtures for the simulator tests (sync tests driving coroutines with asyncio.run)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from simulators.clock import ManualClock
from simulators.meters import DEFAULT_ORIGIN


@pytest.fixture
def clock() -> ManualClock:
    """A virtual clock one day after the meters' default origin."""
    return ManualClock(DEFAULT_ORIGIN + timedelta(days=1))
