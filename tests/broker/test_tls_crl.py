"""The embedded broker's SSL context on its own: client certificate required, CRL reloaded live."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from tds_core.broker.tls import BrokerTLS, RevocationList
from tds_core.pki import Pki, publish_crl


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> str | None:
    """Run a TLS handshake in memory; None on success, else the server's error text."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    done = {"c": False, "s": False}
    for _ in range(20):
        for name, side, out, peer_in in (("c", client, c_out, s_in), ("s", server, s_out, c_in)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as exc:
                    if name == "s":
                        return getattr(exc, "verify_message", None) or exc.reason or str(exc)
                    return f"client: {exc.reason or exc}"
            data = out.read()
            if data:
                peer_in.write(data)
        if all(done.values()):
            # TLS 1.3: the server checks the client certificate after the client thinks it is done
            try:
                server.read(1)
            except ssl.SSLWantReadError:
                return None
            except ssl.SSLError as exc:
                return getattr(exc, "verify_message", None) or exc.reason or str(exc)
    return "handshake did not finish"


@pytest.fixture
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    pki = Pki.init(tmp_path / "pki")
    pki.issue_broker()
    dev = pki.issue_device("aa:bb:cc:dd:ee:01")
    tls = BrokerTLS.from_dir(pki.paths.root)
    client = ssl.create_default_context(cafile=str(pki.paths.ca_cert))
    client.load_cert_chain(str(dev.cert_path), str(dev.key_path))
    return pki, dev, tls, client


def test_client_certificate_required(setup) -> None:  # type: ignore[no-untyped-def]
    pki, _dev, tls, _client = setup
    bare = ssl.create_default_context(cafile=str(pki.paths.ca_cert))
    assert handshake(tls.server_context(), bare) is not None


def test_crl_reload_into_live_context_takes_effect(setup) -> None:  # type: ignore[no-untyped-def]
    pki, dev, tls, client = setup
    ctx = tls.server_context()
    assert handshake(ctx, client) is None
    pki.revoke(serials=[dev.certificate.serial_number])
    assert handshake(ctx, client) is None  # not reloaded yet
    tls.reload_crl(ctx)
    assert handshake(ctx, client) == "certificate revoked"


def test_newest_crl_wins_even_when_published_in_the_same_second(setup) -> None:  # type: ignore[no-untyped-def]
    pki, dev, tls, client = setup
    ctx = tls.server_context()
    publish_crl(pki)  # several CRLs in a row: each later lastUpdate
    tls.reload_crl(ctx)
    pki.revoke(serials=[dev.certificate.serial_number])
    tls.reload_crl(ctx)
    assert handshake(ctx, client) == "certificate revoked"


def test_revocation_list_rejects_foreign_crl(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pki, dev, _tls, _client = setup
    other = Pki.init(tmp_path / "other")
    with pytest.raises(ValueError, match="signature"):
        RevocationList(pki.paths.ca_cert, other.paths.crl)
    rl = RevocationList(pki.paths.ca_cert, pki.paths.crl)
    assert not rl.is_revoked(dev.certificate.serial_number)
    pki.revoke(serials=[dev.certificate.serial_number])
    rl.reload()
    assert rl.is_revoked(dev.certificate.serial_number)


def test_lapsed_crl_refuses_everyone(setup) -> None:  # type: ignore[no-untyped-def]
    """Why the CRL must be refreshed before nextUpdate: a lapsed CRL refuses even valid clients."""
    from datetime import UTC, datetime, timedelta

    pki, _dev, tls, client = setup
    index = pki.load_index()
    index.crl_last_update = None  # allow back-dating this one CRL
    index.save(pki.paths.index)
    publish_crl(pki, days=1, now=datetime.now(UTC) - timedelta(days=3))
    ctx = tls.server_context()
    assert handshake(ctx, client) == "CRL has expired"
    assert RevocationList(pki.paths.ca_cert, pki.paths.crl).is_stale()
