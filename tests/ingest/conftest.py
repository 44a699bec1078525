"""Fixtures for ingest tests: a provisioned registry, brokers (embedded amqtt; Mosquitto when installed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ingest_brokers import MOSQUITTO, MosquittoPlain
from ingest_fleet import provision

from tds_core.stack import BrokerProcess


@pytest.fixture()
def registry_dsn(db_dsn: str) -> str:
    """A migrated database with the test fleet provisioned."""
    provision(db_dsn)
    return db_dsn


@pytest.fixture()
def amqtt_broker() -> Iterator[BrokerProcess]:
    """The embedded broker in a child process (plain mode)."""
    broker = BrokerProcess("127.0.0.1", 0)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(params=["amqtt", "mosquitto"])
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each broker in turn: the embedded amqtt broker, then a real Mosquitto (skipped if not installed)."""
    if request.param == "amqtt":
        broker = BrokerProcess("127.0.0.1", 0)
        yield broker.start()
        broker.stop()
    else:
        if MOSQUITTO is None:
            pytest.skip("Mosquitto not installed: apt-get install -y mosquitto")
        broker = MosquittoPlain(tmp_path)
        yield broker.url
        broker.stop()
