"""Names and the broker handle shared by the security tests (imported by conftest and the tests)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tds_core.broker.probe import ClientTLS, ProbeClient
from tds_core.pki import Pki

DEV_A = "aa:bb:cc:dd:ee:0a"
DEV_B = "aa:bb:cc:dd:ee:0b"
DEV_EXPIRED = "aa:bb:cc:dd:ee:0c"
DEV_REVOKED = "aa:bb:cc:dd:ee:0d"
CONSUMER = "tds-consumer"
CONSUMER_2 = "tds-consumer-2"
GW_A = "GW-A"
GW_B = "GW-B"
CONSUMERS = (CONSUMER, CONSUMER_2)
LEGACY = {DEV_A: [GW_A], DEV_B: [GW_B]}


@dataclass
class Identities:
    """Client TLS material by name."""

    pki: Pki
    ca: Path
    tls: dict[str, ClientTLS] = field(default_factory=dict)


@dataclass
class BrokerUnderTest:
    """A running broker and what the tests need from it."""

    kind: str
    host: str
    port: int
    ids: Identities
    reload_crl: Callable[[], None]

    def client(self, name: str, client_id: str | None = None, **kw) -> ProbeClient:  # type: ignore[no-untyped-def]
        """A client presenting ``name``'s certificate; client id defaults to that CN."""
        cid = client_id if client_id is not None else name
        return ProbeClient(self.host, self.port, cid, tls=self.ids.tls[name], **kw)

    def connected(self, name: str, client_id: str | None = None, **kw) -> ProbeClient:  # type: ignore[no-untyped-def]
        """Like client(), connected; fails the test when refused."""
        c = self.client(name, client_id, **kw)
        result = c.connect()
        assert result.ok, f"{name} refused by {self.kind}: {result}"
        return c
