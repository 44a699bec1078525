"""The CRL: publish, check, refresh before it lapses.

A CRL past its nextUpdate makes Mosquitto refuse *every* client ("certificate expired"), so the CRL
is re-signed well before: ``refresh_crl(pki, if_due=True)`` is idempotent and meant to run on a
schedule (e.g. hourly or daily: ``tds pki crl refresh --if-due``); it re-signs only when less than
``margin`` is left. After publishing, Mosquitto needs SIGHUP (``MosquittoProcess.reload()``) and the
embedded broker ``reload_crl()``.

Each CRL's lastUpdate is strictly later than the previous one's: OpenSSL keeps every CRL loaded into a
live context and prefers the one with the latest lastUpdate, so two CRLs published within the same
second would otherwise be ambiguous. lastUpdate is back-dated a minute for clock differences.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tds_core.pki.authority import Pki, reason_flag
from tds_core.pki.store import write_public

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_CRL_DAYS", "DEFAULT_REFRESH_MARGIN", "CrlState", "CrlStatus", "crl_status", "publish_crl",
           "refresh_crl"]

DEFAULT_CRL_DAYS = 7
DEFAULT_REFRESH_MARGIN = timedelta(days=3)
_BACKDATE = timedelta(minutes=1)


class CrlState(StrEnum):
    """How urgent a refresh is."""

    OK = "ok"
    DUE = "due"            # less than the margin left: refresh now
    EXPIRED = "expired"    # past nextUpdate: brokers refuse every client
    MISSING = "missing"    # no crl.pem


@dataclass(frozen=True)
class CrlStatus:
    """The current CRL as seen at ``now``."""

    state: CrlState
    number: int | None = None
    last_update: datetime | None = None
    next_update: datetime | None = None
    revoked: int = 0
    remaining: timedelta | None = None

    def describe(self) -> str:
        """One line for humans."""
        if self.state is CrlState.MISSING:
            return "CRL missing: brokers configured with it cannot start; run `tds pki crl publish`"
        assert self.next_update is not None and self.remaining is not None
        left = f"{self.remaining.total_seconds() / 86400:.1f} days" if self.remaining.total_seconds() > 0 \
            else f"expired {(-self.remaining).total_seconds() / 3600:.1f} h ago"
        return (f"CRL #{self.number}: {self.state.value}, {self.revoked} revoked, next update "
                f"{self.next_update.isoformat(timespec='seconds')} ({left})")


def publish_crl(pki: Pki, *, days: int = DEFAULT_CRL_DAYS, now: datetime | None = None) -> CrlStatus:
    """Sign and write a new crl.pem listing every revoked certificate; returns its status."""
    if days <= 0:
        raise ValueError(f"days: {days} must be positive")
    now = now or datetime.now(UTC)
    index = pki.load_index()
    last = (now - _BACKDATE).replace(microsecond=0)  # a CRL stores whole seconds
    if index.crl_last_update:
        previous = datetime.fromisoformat(index.crl_last_update)
        if last <= previous:
            last = previous + timedelta(seconds=1)
    next_update = now + timedelta(days=days)
    number = index.crl_number + 1
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.ca_cert.subject)
        .last_update(last)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            pki.ca_cert.public_key()), critical=False)  # type: ignore[arg-type]
    )
    revoked = [e for e in index.certs if e.revoked_at]
    for entry in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial_int)
            .revocation_date(datetime.fromisoformat(entry.revoked_at))  # type: ignore[arg-type]
            .add_extension(x509.CRLReason(reason_flag(entry.revocation_reason)), critical=False)
            .build()
        )
    crl = pki.sign_crl(builder)
    write_public(pki.paths.crl, crl.public_bytes(serialization.Encoding.PEM))
    index.crl_number = number
    index.crl_last_update = last.isoformat(timespec="seconds")
    index.crl_next_update = next_update.isoformat(timespec="seconds")
    index.save(pki.paths.index)
    log.info("published CRL #%d: %d revoked, next update %s", number, len(revoked), index.crl_next_update)
    return crl_status(pki, now=now)


def crl_status(pki: Pki, *, now: datetime | None = None,
               margin: timedelta = DEFAULT_REFRESH_MARGIN) -> CrlStatus:
    """Read crl.pem and say whether it is fine, due for refresh, expired or missing."""
    now = now or datetime.now(UTC)
    if not pki.paths.crl.is_file():
        return CrlStatus(CrlState.MISSING)
    crl = x509.load_pem_x509_crl(pki.paths.crl.read_bytes())
    if not crl.is_signature_valid(pki.ca_cert.public_key()):  # type: ignore[arg-type]
        raise ValueError(f"{pki.paths.crl}: not signed by this CA ({pki.ca_cert.subject.rfc4514_string()})")
    next_update = crl.next_update_utc
    assert next_update is not None
    remaining = next_update - now
    if remaining <= timedelta(0):
        state = CrlState.EXPIRED
    elif remaining <= margin:
        state = CrlState.DUE
    else:
        state = CrlState.OK
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
    return CrlStatus(state, number, crl.last_update_utc, next_update, len(crl), remaining)


def refresh_crl(pki: Pki, *, if_due: bool = False, days: int = DEFAULT_CRL_DAYS,
                margin: timedelta = DEFAULT_REFRESH_MARGIN, now: datetime | None = None) -> tuple[bool, CrlStatus]:
    """Re-sign the CRL (always, or with ``if_due`` only when due/expired/missing).

    Returns (published, status). Idempotent: running it again right after does nothing with ``if_due``.
    """
    if margin >= timedelta(days=days):
        raise ValueError(f"margin: {margin} must be shorter than the CRL validity ({days} days)")
    status = crl_status(pki, now=now, margin=margin)
    if if_due and status.state is CrlState.OK:
        return False, status
    if status.state is CrlState.EXPIRED:
        log.error("CRL had lapsed (%s): brokers were refusing every client", status.describe())
    return True, publish_crl(pki, days=days, now=now)
