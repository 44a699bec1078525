"""Fixtures for broker security tests: one PKI per session, and the same rules on two brokers.

``broker`` is parametrized: a real Mosquitto 2 with the generated config (skipped when the binary is
missing) and the embedded amqtt broker in mTLS mode.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from security_matrix import (
    CONSUMERS,
    DEV_A,
    DEV_B,
    DEV_EXPIRED,
    DEV_REVOKED,
    LEGACY,
    BrokerUnderTest,
    Identities,
)

from tds_core.broker.acl import Acl
from tds_core.broker.embedded import EmbeddedBroker, ThreadedBroker
from tds_core.broker.mosquitto import MosquittoProcess, mosquitto_available, write_config
from tds_core.broker.probe import ClientTLS
from tds_core.broker.tls import BrokerTLS
from tds_core.pki import Pki


@pytest.fixture(scope="session")
def identities(tmp_path_factory: pytest.TempPathFactory) -> Identities:
    """CA, broker cert, two consumers, devices (valid, expired, revoked), a rogue CA's device, no cert."""
    root = tmp_path_factory.mktemp("pki")
    pki = Pki.init(root / "ca")
    pki.issue_broker()
    ids = Identities(pki, pki.paths.ca_cert)

    def add(name: str, issued) -> None:  # type: ignore[no-untyped-def]
        ids.tls[name] = ClientTLS(pki.paths.ca_cert, issued.cert_path, issued.key_path)

    for cn in CONSUMERS:
        add(cn, pki.issue_consumer(cn))
    for mac in (DEV_A, DEV_B, DEV_REVOKED):
        add(mac, pki.issue_device(mac))
    add(DEV_EXPIRED, pki.issue_device(DEV_EXPIRED, not_before=datetime.now(UTC) - timedelta(days=30), days=1))
    pki.revoke(cn=DEV_REVOKED, reason="key_compromise")
    # same CN as device A, signed by a CA the brokers do not trust
    rogue = Pki.init(root / "rogue")
    r = rogue.issue_device(DEV_A)
    ids.tls["rogue"] = ClientTLS(pki.paths.ca_cert, r.cert_path, r.key_path)
    ids.tls["nocert"] = ClientTLS(pki.paths.ca_cert)
    return ids


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(params=["mosquitto", "embedded"])
def broker(request: pytest.FixtureRequest, identities: Identities, tmp_path: Path) -> Iterator[BrokerUnderTest]:
    """A running broker with the TDS rules; both kinds run the same tests."""
    pki_dir = identities.pki.paths.root
    if request.param == "embedded":
        eb = EmbeddedBroker("127.0.0.1", 0, tls=BrokerTLS.from_dir(pki_dir), acl=Acl.build(CONSUMERS, LEGACY))
        with ThreadedBroker(eb) as tb:
            yield BrokerUnderTest("embedded", "127.0.0.1", eb.port, identities,
                                  lambda: tb.call(eb.reload_crl()))
        return
    if not mosquitto_available():
        pytest.skip("Mosquitto not installed: apt-get install mosquitto")
    port = _free_port()
    conf = write_config(tmp_path / "mosquitto", pki_dir=pki_dir, consumer_cns=CONSUMERS,
                        legacy_gateways=LEGACY, port=port, user="root")
    proc = MosquittoProcess(conf, "127.0.0.1", port)
    proc.start()
    log_path = conf.parent / "mosquitto.log"

    def reload_mosquitto() -> None:
        before = log_path.read_text().count("Reloading config")
        proc.reload()
        deadline = time.monotonic() + 10
        while log_path.read_text().count("Reloading config") <= before:  # readiness: the log line
            assert time.monotonic() < deadline, "mosquitto did not log the reload"
            time.sleep(0.02)

    try:
        yield BrokerUnderTest("mosquitto", "127.0.0.1", port, identities, reload_mosquitto)
    finally:
        proc.stop()
