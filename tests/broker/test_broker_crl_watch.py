"""A revocation reaches a running embedded broker through crl.pem alone (no SIGHUP)."""

from __future__ import annotations

from pathlib import Path

from tds_core.broker.probe import ClientTLS, ProbeClient
from tds_core.pki import Pki
from tds_core.stack import BrokerProcess

MAC = "aa:bb:cc:0f:00:01"


def test_revocation_cuts_the_live_session_and_refuses_reconnects(tmp_path: Path) -> None:
    pki = Pki.init(tmp_path / "pki")
    pki.issue_broker()
    pki.issue_consumer()
    device = pki.issue_device(MAC)
    tls = ClientTLS(pki.paths.ca_cert, device.cert_path, device.key_path)

    broker = BrokerProcess("127.0.0.1", 0, ["--tls-dir", str(tmp_path / "pki")])
    broker.start()
    client = ProbeClient("127.0.0.1", broker.port, MAC, tls=tls)
    try:
        assert client.connect().ok
        pki.revoke(cn=MAC, reason="key_compromise")  # rewrites crl.pem, as `tds registry revoke` does
        assert client.wait_disconnected(timeout=10), "live session of a revoked device was not closed"
        again = ProbeClient("127.0.0.1", broker.port, MAC, tls=tls).connect()
        assert not again.ok, f"revoked device reconnected: {again}"
    finally:
        client.kill()
        broker.stop()
