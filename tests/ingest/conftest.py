"""Fixtures for ingest tests: a provisioned registry, brokers (embedded amqtt; Mosquitto when installed)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ingest_fleet import provision

from tds_core.stack import BrokerProcess

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MosquittoPlain:
    """A private Mosquitto instance on a free port (plain listener: these tests are about ingest)."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            # Acking after commit needs a wide in-flight window and no queue cap (FIELD-NOTES).
            "max_inflight_messages 2000\nmax_queued_messages 0\n"
        )
        self._proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    err = self._proc.stderr.read() if self._proc.stderr else ""
                    raise RuntimeError(f"mosquitto did not start: {err}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(10)


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
