"""Fixtures for the firmware tests (helpers live in fw_testkit.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fw_testkit import MOSQUITTO, AmqttBroker, Mosquitto


@pytest.fixture(params=["mosquitto", "amqtt"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A running plain-MQTT broker on a free port: Mosquitto (skipped when absent) and amqtt in-process."""
    if request.param == "mosquitto":
        if MOSQUITTO is None:
            pytest.skip("needs the mosquitto binary: apt-get install mosquitto")
        server: Any = Mosquitto(tmp_path).start()
    else:
        server = AmqttBroker().start()
    try:
        yield server
    finally:
        server.stop()


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
