"""Server-side TLS for the embedded broker: client certificate required, CRL checked, CRL reloadable."""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

log = logging.getLogger(__name__)

__all__ = ["BrokerTLS", "RevocationList"]


@dataclass(frozen=True)
class BrokerTLS:
    """Paths of the broker's TLS material (PEM). ``crl_file`` None disables revocation checks."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    crl_file: Path | None = None

    def __post_init__(self) -> None:
        for name in ("ca_file", "cert_file", "key_file", "crl_file"):
            value = getattr(self, name)
            if value is None:
                continue
            path = Path(value)
            object.__setattr__(self, name, path)
            if not path.is_file():
                raise FileNotFoundError(f"BrokerTLS.{name}: {path} does not exist or is not a file")

    @classmethod
    def from_dir(cls, directory: str | Path, name: str = "broker") -> BrokerTLS:
        """Use a PKI directory made by ``tds pki``: ca.crt, crl.pem, certs/{name}.crt, private/{name}.key.

        A flat directory (ca.crt, {name}.crt, {name}.key, crl.pem) works too.
        """
        d = Path(directory)
        cert = d / "certs" / f"{name}.crt"
        key = d / "private" / f"{name}.key"
        if not cert.exists():
            cert, key = d / f"{name}.crt", d / f"{name}.key"
        crl = d / "crl.pem"
        return cls(d / "ca.crt", cert, key, crl if crl.exists() else None)

    def server_context(self) -> ssl.SSLContext:
        """A TLS server context that requires a client certificate from our CA and checks the CRL."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED  # amqtt's own setup would make this CERT_OPTIONAL
        ctx.load_verify_locations(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        if self.crl_file is not None:
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
            ctx.load_verify_locations(cafile=str(self.crl_file))
        return ctx

    def reload_crl(self, ctx: ssl.SSLContext) -> None:
        """Add the current CRL file to a live context; new handshakes use it at once.

        OpenSSL keeps every CRL loaded and prefers the one with the latest lastUpdate, so the PKI
        makes each CRL's lastUpdate strictly later than the previous one (see tds_core.pki).
        """
        if self.crl_file is None:
            return
        ctx.load_verify_locations(cafile=str(self.crl_file))


class RevocationList:
    """Revoked serial numbers from a CRL file, verified against the CA; reloadable in place.

    The broker checks a client's serial against this at CONNECT in addition to OpenSSL's handshake
    check, so a reload takes effect exactly once the file changed, and open sessions can be cut.
    """

    def __init__(self, ca_file: Path, crl_file: Path | None) -> None:
        self._ca = x509.load_pem_x509_certificate(Path(ca_file).read_bytes())
        self._crl_file = crl_file
        self._lock = threading.Lock()
        self._revoked: frozenset[int] = frozenset()
        self.next_update: datetime | None = None
        self.reload()

    def reload(self) -> None:
        """Read the CRL file again; raises ValueError if it is not signed by the CA."""
        if self._crl_file is None:
            return
        crl = x509.load_pem_x509_crl(Path(self._crl_file).read_bytes())
        if not crl.is_signature_valid(self._ca.public_key()):  # type: ignore[arg-type]
            raise ValueError(f"{self._crl_file}: CRL signature does not verify against {self._ca.subject}")
        with self._lock:
            self._revoked = frozenset(r.serial_number for r in crl)
            self.next_update = crl.next_update_utc
        log.info("CRL loaded: %d revoked, next update %s", len(self._revoked), self.next_update)

    def is_revoked(self, serial: int) -> bool:
        """True when ``serial`` is on the loaded CRL."""
        return serial in self._revoked

    def is_stale(self, now: datetime | None = None) -> bool:
        """True when the CRL is past its nextUpdate (then clients would be refused by OpenSSL)."""
        now = now or datetime.now(UTC)
        return self.next_update is not None and now >= self.next_update
