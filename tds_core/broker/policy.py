"""Who a client is, for the embedded broker: by client id (plain mode) or by certificate CN (mTLS)."""

from __future__ import annotations

import logging

from amqtt.mqtt.connack import IDENTIFIER_REJECTED, NOT_AUTHORIZED
from amqtt.session import Session

from tds_core.broker._amqtt_broker import AccessPolicy, ConnectRefused
from tds_core.broker.acl import Acl
from tds_core.broker.tls import RevocationList

log = logging.getLogger(__name__)

__all__ = ["CertificatePolicy", "PlainPolicy"]


class PlainPolicy(AccessPolicy):
    """Plain (no TLS) mode: username = client id, so sessions are not anonymous and persist.

    With an Acl the same topic rules apply to that username (a development aid: anyone can claim any
    client id without TLS). Without one every topic is allowed.
    """

    def __init__(self, acl: Acl | None = None) -> None:
        self.acl = acl

    def identify(self, session: Session) -> None:
        """username := client id."""
        session.username = session.client_id

    def can_publish(self, username: str | None, topic: str) -> bool:
        """Acl rule, or allowed without an Acl."""
        return self.acl is None or self.acl.can_publish(username, topic)

    def can_subscribe(self, username: str | None, topic_filter: str) -> bool:
        """Acl rule, or allowed without an Acl."""
        return self.acl is None or self.acl.can_subscribe(username, topic_filter)

    def can_receive(self, username: str | None, topic: str) -> bool:
        """Acl rule, or allowed without an Acl."""
        return self.acl is None or self.acl.can_receive(username, topic)


def peer_identity(session: Session) -> tuple[str, int]:
    """(CN, serial) of the verified client certificate on the session's TLS connection."""
    ssl_object = session.ssl_object
    cert = ssl_object.getpeercert() if ssl_object is not None else None
    if not cert:
        raise ConnectRefused("no client certificate")
    cns = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    if len(cns) != 1 or not cns[0]:
        raise ConnectRefused(f"client certificate must have exactly one CN, has {cns!r}")
    try:
        serial = int(cert["serialNumber"], 16)
    except (KeyError, ValueError) as exc:
        raise ConnectRefused("client certificate has no readable serial number") from exc
    return cns[0], serial


class CertificatePolicy(PlainPolicy):
    """mTLS mode: username = certificate CN; the client id must equal the CN; revoked serials refused.

    Tying the client id to the CN is what stops one gateway from taking over or disconnecting another
    gateway's session: it can only ever name its own session.
    """

    def __init__(self, acl: Acl, revocations: RevocationList | None = None) -> None:
        super().__init__(acl)
        self.revocations = revocations

    def identify(self, session: Session) -> None:
        """Check certificate, revocation and client id; set username = CN."""
        cn, serial = peer_identity(session)
        if self.revocations is not None and self.revocations.is_revoked(serial):
            raise ConnectRefused(f"certificate {serial:x} (CN {cn!r}) is revoked", NOT_AUTHORIZED)
        if session.client_id != cn:
            raise ConnectRefused(f"client id {session.client_id!r} differs from certificate CN {cn!r}",
                                 IDENTIFIER_REJECTED)
        session.username = cn
