"""`tds registry ...` end to end through tds_core.cli.main, against a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from tds_core.cli import main

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "fleet.yaml")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["registry", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_load_list_show_revoke_reinstate(db_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "load", EXAMPLE, "--dsn", db_dsn)
    assert code == 0
    assert "gateways: 202 created, 0 updated, 0 unchanged" in out
    code, out, _ = run(capsys, "load", EXAMPLE, "--dsn", db_dsn)
    assert code == 0 and "no changes" in out and "devices:  0 created, 0 updated, 1604 unchanged" in out

    code, out, _ = run(capsys, "list", "--tenant", "acme", "--dsn", db_dsn)
    assert code == 0 and "GW-TEST-001" in out and "SOL-0001" not in out and out.endswith("2 gateways\n")

    code, out, _ = run(capsys, "revoke", "AA-BB-CC-00-00-01", "--dsn", db_dsn)
    assert (code, out) == (0, "aa:bb:cc:00:00:01 (GW-0001): revoked\n")
    code, out, _ = run(capsys, "revoke", "aa:bb:cc:00:00:01", "--dsn", db_dsn)
    assert out == "aa:bb:cc:00:00:01 (GW-0001): already revoked\n"
    code, out, _ = run(capsys, "show", "aa:bb:cc:00:00:01", "--dsn", db_dsn)
    assert code == 0 and "status   revoked since" in out and "D03" in out and "°C" in out
    code, out, _ = run(capsys, "reinstate", "aa:bb:cc:00:00:01", "--dsn", db_dsn)
    assert (code, out) == (0, "aa:bb:cc:00:00:01 (GW-0001): reinstated\n")


def test_bad_file_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "fleet.yaml"
    bad.write_text("tenants:\n  - code: a\n    name: A\n    gateways:\n      - {mac: zz, code: G}\n")
    code, out, err = run(capsys, "load", str(bad), "--dsn", "host=/nonexistent")  # never connects
    assert code == 2 and out == ""
    assert err == (f"tds registry: error: {bad}:5: tenants[0].gateways[0].mac: "
                   "expected a MAC like aa:bb:cc:dd:ee:ff, got 'zz'\n")


def test_check_only(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "load", "--check", EXAMPLE)
    assert code == 0 and "OK (2 tenants, 202 gateways, 1604 devices)" in out


def test_unknown_mac_and_bad_mac(db_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "show", "ff:ff:ff:ff:ff:ff", "--dsn", db_dsn)
    assert code == 1 and err == "tds registry: error: no gateway with MAC ff:ff:ff:ff:ff:ff in the registry\n"
    code, _, err = run(capsys, "revoke", "nope", "--dsn", db_dsn)
    assert code == 2 and "invalid MAC address" in err


def test_unmigrated_database(empty_db_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "list", "--dsn", empty_db_dsn)
    assert code == 1 and "run `tds db migrate` first" in err


def test_revoke_also_revokes_certificates_and_republishes_the_crl(
    db_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tds_core.pki import Pki

    pki = Pki.init(tmp_path / "pki")
    pki.issue_device("aa:bb:cc:00:00:01")
    crl_before = (tmp_path / "pki" / "crl.pem").read_bytes()
    assert run(capsys, "load", EXAMPLE, "--dsn", db_dsn)[0] == 0
    code, out, _ = run(capsys, "revoke", "aa:bb:cc:00:00:01", "--dsn", db_dsn, "--pki", str(tmp_path / "pki"))
    assert code == 0 and "revoked\n" in out and "CRL republished" in out
    [entry] = [e for e in pki.load_index().certs if e.cn == "aa:bb:cc:00:00:01"]
    assert entry.revoked_at is not None
    assert (tmp_path / "pki" / "crl.pem").read_bytes() != crl_before
    # A named PKI directory that is not one is an error, not a silent skip.
    code, _, err = run(capsys, "revoke", "aa:bb:cc:00:00:02", "--dsn", db_dsn, "--pki", str(tmp_path / "none"))
    assert code == 2 and "no PKI there" in err
