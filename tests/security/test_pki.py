"""Unit tests for tds_core.pki: key modes, certificate contents, CRL timing, renewal, revocation."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tds_core.pki import CrlState, Pki, crl_status, publish_crl, refresh_crl
from tds_core.pki.cli import register

MAC = "AA-BB-CC-DD-EE-01"
CN = "aa:bb:cc:dd:ee:01"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki.init(tmp_path / "pki")


def _crl(pki: Pki) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(pki.paths.crl.read_bytes())


def _csr(cn: str, key: ec.EllipticCurvePrivateKey | None = None) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM), key


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_keys_are_0600(pki: Pki) -> None:
    issued = [pki.issue_broker(), pki.issue_consumer(), pki.issue_device(MAC)]
    assert _mode(pki.paths.ca_key) == 0o600
    for i in issued:
        assert i.key_path is not None and _mode(i.key_path) == 0o600
    assert _mode(pki.paths.ca_key.parent) == 0o700
    assert _mode(pki.paths.ca_cert) == 0o644


def test_init_refuses_to_overwrite_a_ca(pki: Pki) -> None:
    with pytest.raises(FileExistsError):
        Pki.init(pki.paths.root)


def test_device_cert_cn_is_normalized_mac_valid_ten_years(pki: Pki) -> None:
    issued = pki.issue_device(MAC)
    cert = issued.certificate
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CN
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=3649) < life <= timedelta(days=3651)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    cert.verify_directly_issued_by(pki.ca_cert)
    entry = pki.load_index().by_cn(CN)[0]
    assert entry.kind == "device" and entry.revoked_at is None and entry.serial_int == cert.serial_number


def test_broker_cert_has_sans(pki: Pki) -> None:
    cert = pki.issue_broker(["mqtt.example", "10.0.0.5"]).certificate
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "mqtt.example"}
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.0.0.5"}
    assert (pki.paths.root / "certs" / "broker.crt").is_file()


def test_bad_mac_is_refused_with_reason(pki: Pki) -> None:
    with pytest.raises(ValueError, match="MAC"):
        pki.issue_device("not-a-mac")


def test_crl_has_next_update_and_grows_on_revoke(pki: Pki) -> None:
    crl = _crl(pki)
    assert crl.next_update_utc is not None and crl.next_update_utc > datetime.now(UTC) + timedelta(days=6)
    assert len(crl) == 0
    issued = pki.issue_device(MAC)
    revoked = pki.revoke(cn=MAC, reason="key_compromise")  # any MAC spelling
    assert [e.serial_int for e in revoked] == [issued.certificate.serial_number]
    crl = _crl(pki)
    entry = crl.get_revoked_certificate_by_serial_number(issued.certificate.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    assert crl.is_signature_valid(pki.ca_cert.public_key())
    assert pki.load_index().by_cn(CN)[0].revoked_at is not None


def test_revoke_by_serial_and_unknown_serial(pki: Pki) -> None:
    issued = pki.issue_consumer()
    pki.revoke(serials=[issued.certificate.serial_number])
    assert _crl(pki).get_revoked_certificate_by_serial_number(issued.certificate.serial_number) is not None
    with pytest.raises(ValueError, match="was not issued"):
        pki.revoke(serials=[12345])


def test_crl_last_update_strictly_increases(pki: Pki) -> None:
    now = datetime.now(UTC)
    first = publish_crl(pki, now=now)
    second = publish_crl(pki, now=now)  # same instant: still a later lastUpdate
    assert second.last_update is not None and first.last_update is not None
    assert second.last_update > first.last_update
    assert second.number == first.number + 1  # type: ignore[operator]


def test_refresh_if_due_is_idempotent_and_acts_before_lapse(pki: Pki) -> None:
    published, status = refresh_crl(pki, if_due=True)
    assert not published and status.state is CrlState.OK
    number = status.number
    later = datetime.now(UTC) + timedelta(days=5)  # 2 days left < 3-day margin
    assert crl_status(pki, now=later).state is CrlState.DUE
    published, status = refresh_crl(pki, if_due=True, now=later)
    assert published and status.state is CrlState.OK and status.number == number + 1  # type: ignore[operator]
    published, _ = refresh_crl(pki, if_due=True, now=later)
    assert not published
    much_later = later + timedelta(days=8)
    assert crl_status(pki, now=much_later).state is CrlState.EXPIRED
    published, status = refresh_crl(pki, if_due=True, now=much_later)
    assert published and status.state is CrlState.OK


def test_csr_renewal_keeps_public_key_and_writes_no_key(pki: Pki) -> None:
    pki.issue_device(MAC)
    csr, device_key = _csr(CN)
    keys_before = set((pki.paths.root / "private").iterdir())
    renewed = pki.renew(csr)
    assert renewed.key_path is None
    assert set((pki.paths.root / "private").iterdir()) == keys_before
    pub = lambda k: k.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # noqa: E731
    assert pub(renewed.certificate.public_key()) == pub(device_key.public_key())
    entries = pki.load_index().by_cn(CN)
    assert len(entries) == 2 and entries[1].renewed_from == entries[0].serial
    renewed.certificate.verify_directly_issued_by(pki.ca_cert)


def test_renewal_with_revoke_old(pki: Pki) -> None:
    old = pki.issue_device(MAC)
    csr, _ = _csr(CN)
    pki.renew(csr, revoke_old=True)
    assert _crl(pki).get_revoked_certificate_by_serial_number(old.certificate.serial_number) is not None


def test_renewal_refused_for_unknown_or_revoked_cn_and_bad_csr(pki: Pki) -> None:
    csr, _ = _csr(CN)
    with pytest.raises(ValueError, match="never issued"):
        pki.renew(csr)
    pki.issue_device(MAC)
    pki.revoke(cn=CN)
    with pytest.raises(ValueError, match="all revoked"):
        pki.renew(csr)
    with pytest.raises(ValueError, match="csr"):
        pki.renew(b"garbage")


def test_device_from_csr_must_match_mac(pki: Pki) -> None:
    csr, _ = _csr("aa:bb:cc:dd:ee:02")
    with pytest.raises(ValueError, match="does not match"):
        pki.issue_device(MAC, csr_pem=csr)
    issued = pki.issue_device("aa:bb:cc:dd:ee:02", csr_pem=csr)
    assert issued.key_path is None


def _run_cli(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="tds")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.handler(args))


def test_cli_crl_refresh_if_due_and_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "p")
    assert _run_cli(["pki", "init", "--dir", d]) == 0
    assert _run_cli(["pki", "issue", "device", "--dir", d, "--mac", MAC]) == 0
    assert _run_cli(["pki", "crl", "refresh", "--dir", d, "--if-due"]) == 0
    assert "not due" in capsys.readouterr().out
    assert _run_cli(["pki", "crl", "status", "--dir", d]) == 0
    assert _run_cli(["pki", "crl", "status", "--dir", d, "--margin-days", "8"]) == 1  # within margin: warn
    assert _run_cli(["pki", "revoke", "--dir", d, "--cn", CN]) == 0
    with pytest.raises(ValueError, match="--serial"):
        _run_cli(["pki", "revoke", "--dir", d, "--serial", "xyz"])
