"""Fixtures for the firmware tests (helpers live in fw_testkit.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fw_testkit import MOSQUITTO, Mosquitto


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running Mosquitto (plain MQTT) on a free port."""
    if MOSQUITTO is None:
        pytest.skip("needs the mosquitto binary: apt-get install mosquitto")
    broker = Mosquitto(tmp_path).start()
    try:
        yield broker
    finally:
        broker.stop()
