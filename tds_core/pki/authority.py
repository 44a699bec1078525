"""The TDS certificate authority: create a CA, issue broker/consumer/device certificates, renew from a
CSR (the device key never leaves the device), revoke.

Keys are EC P-256 (fast on the broker, supported by Mosquitto/OpenSSL and by mbedTLS on the gateways).
Device certificates are valid 10 years by default (seed, ADR-002); the CN of a device is its MAC,
lower-case with colons, which is also its MQTT username and the ``%u`` of the broker ACL.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tds_core.pki.store import KINDS, IndexEntry, PkiIndex, PkiPaths, write_private, write_public

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CONSUMER_CN",
    "DEVICE_DAYS",
    "Issued",
    "Pki",
    "normalize_device_cn",
]

DEVICE_DAYS = 3650          # seed ADR-002: 10-year device certificates
SERVICE_DAYS = 825          # broker and consumer certificates: rotated by the operator
CA_DAYS = 7300              # outlives every device certificate it signs
DEFAULT_CA_CN = "TDS-New-CA"
DEFAULT_BROKER_CN = "tds-broker"
DEFAULT_CONSUMER_CN = "tds-consumer"
_BACKDATE = timedelta(minutes=5)  # tolerate small clock differences between hosts


def normalize_device_cn(mac: str) -> str:
    """A device CN is its MAC as stored: 'AA-BB-CC-DD-EE-FF' -> 'aa:bb:cc:dd:ee:ff' (ValueError otherwise)."""
    from tds_core.protocol import normalize_mac

    return normalize_mac(mac)


def _check_cn(cn: str, field: str) -> str:
    if not cn or any(c in cn for c in "/+#\x00") or cn != cn.strip():
        raise ValueError(f"{field}: {cn!r} is not a usable CN (empty, spaces around, or '/', '+', '#')")
    return cn


@dataclass(frozen=True)
class Issued:
    """A certificate just issued: its index entry and where its files are."""

    entry: IndexEntry
    cert_path: Path
    key_path: Path | None
    certificate: x509.Certificate


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds")


class Pki:
    """A PKI directory (see tds_core.pki.store for the layout)."""

    def __init__(self, directory: str | Path) -> None:
        self.paths = PkiPaths(Path(directory))
        if not self.paths.ca_cert.is_file() or not self.paths.ca_key.is_file():
            raise FileNotFoundError(f"{self.paths.root}: no CA here (ca.crt and private/ca.key); "
                                    "run `tds pki init` first")
        self.ca_cert = x509.load_pem_x509_certificate(self.paths.ca_cert.read_bytes())
        self._ca_key = serialization.load_pem_private_key(self.paths.ca_key.read_bytes(), None)

    # -- creation ------------------------------------------------------------------------------
    @classmethod
    def init(cls, directory: str | Path, *, ca_cn: str = DEFAULT_CA_CN, days: int = CA_DAYS,
             crl_days: int = 7, force: bool = False) -> Pki:
        """Create the CA (key 0600), an empty index and a first CRL. Refuses to overwrite a CA."""
        paths = PkiPaths(Path(directory))
        if paths.ca_key.exists() and not force:
            raise FileExistsError(f"{paths.ca_key} exists: this directory already has a CA")
        _check_cn(ca_cn, "ca_cn")
        if days <= 0:
            raise ValueError(f"days: {days} must be positive")
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "TDS")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        paths.root.mkdir(parents=True, exist_ok=True)
        write_private(paths.ca_key, key.private_bytes(serialization.Encoding.PEM,
                                                     serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
        write_public(paths.ca_cert, cert.public_bytes(serialization.Encoding.PEM))
        PkiIndex().save(paths.index)
        pki = cls(paths.root)
        from tds_core.pki.crl import publish_crl

        publish_crl(pki, days=crl_days)
        log.info("created CA %r in %s", ca_cn, paths.root)
        return pki

    def load_index(self) -> PkiIndex:
        """Read index.json."""
        return PkiIndex.load(self.paths.index)

    # -- issuing -------------------------------------------------------------------------------
    def _build(self, cn: str, kind: str, public_key: ec.EllipticCurvePublicKey | object, *, days: int,
               san: x509.SubjectAlternativeName | None, not_before: datetime | None) -> x509.Certificate:
        if kind not in KINDS:
            raise ValueError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
        start = not_before or (datetime.now(UTC) - _BACKDATE)
        end = start + timedelta(days=days) if days > 0 else start + timedelta(seconds=1)
        if end > self.ca_cert.not_valid_after_utc:
            raise ValueError(f"days: {days} would outlive the CA (valid until "
                             f"{_iso(self.ca_cert.not_valid_after_utc)})")
        eku = ExtendedKeyUsageOID.SERVER_AUTH if kind == "broker" else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.ca_cert.subject)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.ca_cert.public_key()), critical=False)  # type: ignore[arg-type]
        )
        if san is not None:
            builder = builder.add_extension(san, critical=False)
        return builder.sign(self._ca_key, hashes.SHA256())  # type: ignore[arg-type]

    def _record(self, cert: x509.Certificate, cn: str, kind: str, key: ec.EllipticCurvePrivateKey | None,
                renewed_from: str | None = None, file_cn: str | None = None) -> Issued:
        cert_path = self.paths.cert(file_cn or cn)
        key_path = self.paths.key(file_cn or cn) if key is not None else None
        if key is not None:
            assert key_path is not None
            write_private(key_path, key.private_bytes(serialization.Encoding.PEM,
                                                      serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
        write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        entry = IndexEntry(
            serial=format(cert.serial_number, "x"), cn=cn, kind=kind,
            not_before=_iso(cert.not_valid_before_utc), not_after=_iso(cert.not_valid_after_utc),
            cert_file=str(cert_path.relative_to(self.paths.root)),
            key_file=str(key_path.relative_to(self.paths.root)) if key_path else None,
            renewed_from=renewed_from,
        )
        index = self.load_index()
        index.certs.append(entry)
        index.save(self.paths.index)
        log.info("issued %s certificate CN=%s serial=%s until %s", kind, cn, entry.serial, entry.not_after)
        return Issued(entry, cert_path, key_path, cert)

    def issue(self, cn: str, kind: str, *, days: int | None = None, san_names: Iterable[str] = (),
              public_key: object | None = None, not_before: datetime | None = None,
              file_cn: str | None = None) -> Issued:
        """Issue a certificate; generates a key (written 0600) unless ``public_key`` is given."""
        _check_cn(cn, "cn")
        if days is None:
            days = DEVICE_DAYS if kind == "device" else SERVICE_DAYS
        san = None
        if kind == "broker":
            entries: list[x509.GeneralName] = []
            for name in ["localhost", "127.0.0.1", *san_names]:
                try:
                    gn: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
                except ValueError:
                    gn = x509.DNSName(name)
                if gn not in entries:
                    entries.append(gn)
            san = x509.SubjectAlternativeName(entries)
        key = None
        if public_key is None:
            key = ec.generate_private_key(ec.SECP256R1())
            public_key = key.public_key()
        cert = self._build(cn, kind, public_key, days=days, san=san, not_before=not_before)
        return self._record(cert, cn, kind, key, file_cn=file_cn)

    def issue_broker(self, names: Iterable[str] = (), *, cn: str = DEFAULT_BROKER_CN,
                     days: int = SERVICE_DAYS) -> Issued:
        """Server certificate; SAN = localhost, 127.0.0.1 and ``names`` (host names or IPs).

        Stored as certs/broker.crt and private/broker.key whatever the CN, where the broker looks.
        """
        return self.issue(cn, "broker", days=days, san_names=names, file_cn="broker")

    def issue_consumer(self, cn: str = DEFAULT_CONSUMER_CN, *, days: int = SERVICE_DAYS) -> Issued:
        """Client certificate for an ingest consumer (reads all telemetry, writes commands)."""
        return self.issue(cn, "consumer", days=days)

    def issue_device(self, mac: str, *, days: int = DEVICE_DAYS, csr_pem: bytes | None = None,
                     not_before: datetime | None = None) -> Issued:
        """Device certificate, CN = normalized MAC. With ``csr_pem`` the key stays on the device."""
        if not mac:
            raise ValueError("mac: a device certificate needs the device MAC (--mac)")
        cn = normalize_device_cn(mac)
        if csr_pem is not None:
            csr = self._load_csr(csr_pem)
            csr_cn = self._csr_cn(csr)
            if normalize_device_cn(csr_cn) != cn:
                raise ValueError(f"csr: subject CN {csr_cn!r} does not match --mac {cn!r}")
            return self.issue(cn, "device", days=days, public_key=csr.public_key(), not_before=not_before)
        return self.issue(cn, "device", days=days, not_before=not_before)

    # -- renewal -------------------------------------------------------------------------------
    @staticmethod
    def _load_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise ValueError(f"csr: not a PEM certificate signing request ({exc})") from exc
        if not csr.is_signature_valid:
            raise ValueError("csr: signature does not verify (the requester does not hold the key)")
        return csr

    @staticmethod
    def _csr_cn(csr: x509.CertificateSigningRequest) -> str:
        cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if len(cns) != 1:
            raise ValueError(f"csr: subject must have exactly one CN, has {len(cns)}")
        return str(cns[0].value)

    def renew(self, csr_pem: bytes, *, days: int | None = None, revoke_old: bool = False) -> Issued:
        """Issue a new certificate for the public key in a CSR whose CN already holds a valid certificate.

        The key stays where it was generated (the device). Refused for a CN with no certificate or
        whose every certificate is revoked. With ``revoke_old`` the previous certificates are revoked
        (reason superseded) and a new CRL is published.
        """
        csr = self._load_csr(csr_pem)
        cn = self._csr_cn(csr)
        index = self.load_index()
        current = [e for e in index.by_cn(cn) if e.revoked_at is None]
        if not current:
            known = "all revoked" if index.by_cn(cn) else "never issued"
            raise ValueError(f"csr: CN {cn!r} has no valid certificate to renew ({known})")
        kind = current[-1].kind
        if days is None:
            days = DEVICE_DAYS if kind == "device" else SERVICE_DAYS
        cert = self._build(cn, kind, csr.public_key(), days=days, san=None, not_before=None)
        issued = self._record(cert, cn, kind, None, renewed_from=current[-1].serial)
        if revoke_old:
            self.revoke(serials=[e.serial_int for e in current], reason="superseded")
        return issued

    # -- revocation ----------------------------------------------------------------------------
    def revoke(self, *, serials: Iterable[int] = (), cn: str | None = None, reason: str = "unspecified",
               publish: bool = True, crl_days: int | None = None) -> list[IndexEntry]:
        """Revoke by serial(s) and/or every valid certificate of a CN; publishes a new CRL.

        A device CN may be given in any MAC spelling. Returns the entries revoked now; ValueError if
        nothing matched.
        """
        if reason not in _REASONS:
            raise ValueError(f"reason: {reason!r} is not one of {', '.join(sorted(_REASONS))}")
        index = self.load_index()
        targets: list[IndexEntry] = []
        for serial in serials:
            entry = index.by_serial(serial)
            if entry is None:
                raise ValueError(f"serial: {serial:x} was not issued by this CA")
            targets.append(entry)
        if cn is not None:
            names = {cn}
            with contextlib.suppress(ValueError):
                names.add(normalize_device_cn(cn))
            by_cn = [e for e in index.certs if e.cn in names]
            if not by_cn:
                raise ValueError(f"cn: no certificate with CN {cn!r}")
            targets += by_cn
        if not targets:
            raise ValueError("give a serial or a CN to revoke")
        now = _iso(datetime.now(UTC))
        revoked = []
        for entry in targets:
            if entry.revoked_at is None:
                entry.revoked_at = now
                entry.revocation_reason = reason
                revoked.append(entry)
        index.save(self.paths.index)
        for entry in revoked:
            log.warning("revoked %s certificate CN=%s serial=%s (%s)", entry.kind, entry.cn, entry.serial,
                        reason)
        if publish:
            from tds_core.pki.crl import publish_crl

            publish_crl(self, **({"days": crl_days} if crl_days else {}))
        return revoked

    def sign_crl(self, builder: x509.CertificateRevocationListBuilder) -> x509.CertificateRevocationList:
        """Sign a CRL with the CA key (used by tds_core.pki.crl)."""
        return builder.sign(self._ca_key, hashes.SHA256())  # type: ignore[arg-type]


_REASONS = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key_compromise": x509.ReasonFlags.key_compromise,
    "affiliation_changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
}


def reason_flag(reason: str | None) -> x509.ReasonFlags:
    """CRL reason code for a reason name stored in the index."""
    return _REASONS.get(reason or "unspecified", x509.ReasonFlags.unspecified)
