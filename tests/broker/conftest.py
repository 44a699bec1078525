"""Fixtures: an embedded broker running in its own event-loop thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tds_core.broker.embedded import EmbeddedBroker, ThreadedBroker


@pytest.fixture
def plain_broker() -> Iterator[ThreadedBroker]:
    """A plain-mode embedded broker on 127.0.0.1 and a free port."""
    with ThreadedBroker(EmbeddedBroker("127.0.0.1", 0)) as tb:
        yield tb
