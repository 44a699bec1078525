"""``python -m firmware --config gateway.yaml`` as a process: bad config, LWT when killed, clean SIGTERM, mTLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fw_testkit import MOSQUITTO, Collector, Mosquitto, energy_bank_meters, write_config

from tds_core.protocol import decode, status_topic

pytest.importorskip("simulators", reason="the simulators package (Modbus banks) is needed")
from simulators.testing import serve_bank

REPO = Path(__file__).resolve().parents[2]
MAC = "aa:bb:cc:dd:ee:01"
TELEMETRY = f"tds_new/devices/{MAC}/telemetry"
STATUS = status_topic(MAC)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "gateway.yaml")
    cfg.write_text(cfg.read_text().replace("slave_id: 2", "slave_id: 300"))
    proc = subprocess.run([sys.executable, "-m", "firmware", "--config", str(cfg)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"firmware: bad config: {cfg}:")
    assert lines[0].endswith("meters[1].slave_id: expected an integer 1..247, got 300")


async def _spawn(cfg: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "firmware", "--config", str(cfg), "--log-level", "INFO",
        cwd=REPO, env=_env(), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )


async def _reap(proc: asyncio.subprocess.Process) -> str:
    if proc.returncode is None:
        proc.kill()
    _, err = await proc.communicate()
    return err.decode(errors="replace")


def test_killed_gateway_leaves_lwt_offline_and_sigterm_says_offline_cleanly(tmp_path: Path, mosquitto: Any) -> None:
    async def scenario() -> None:
        async with serve_bank(tcp_framer="rtu") as served, Collector(mosquitto.port, STATUS, TELEMETRY) as col:
            meters = energy_bank_meters(served.bank, 2)
            cfg = write_config(tmp_path / "gateway.yaml", poll_interval_s=0.2, meters=meters,
                               broker={"url": f"mqtt://127.0.0.1:{mosquitto.port}"},
                               modbus={"port": f"tcp://127.0.0.1:{served.tcp_port}"})
            proc = await _spawn(cfg)
            try:
                await col.wait_for(lambda: col.on(STATUS)[-1:] == [b"online"] and col.on(TELEMETRY),
                                   what="gateway online and publishing")
                assert decode(TELEMETRY, col.on(TELEMETRY)[0]).gateway_mac == MAC
                proc.kill()  # no DISCONNECT: the broker must publish the will
                await proc.wait()
                await col.wait_for(lambda: col.on(STATUS)[-1:] == [b"offline"], what="LWT offline")
            finally:
                await _reap(proc)

            # again, stopped politely this time: it says offline itself and exits 0
            proc = await _spawn(cfg)
            try:
                await col.wait_for(lambda: col.on(STATUS)[-1:] == [b"online"], what="online again")
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(proc.wait(), 30) == 0
                await col.wait_for(lambda: col.on(STATUS)[-1:] == [b"offline"], what="offline on SIGTERM")
            finally:
                err = await _reap(proc)
            assert "event=shutdown" in err and " ERROR firmware." not in err, err

    asyncio.run(scenario())


def _make_pki(d: Path) -> dict[str, str]:
    """A CA, a broker certificate for 127.0.0.1 and a device certificate with CN = MAC."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def key() -> Any:
        return ec.generate_private_key(ec.SECP256R1())

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem: str, cert: Any, k: Any) -> tuple[str, str]:
        c, kk = d / f"{stem}.crt", d / f"{stem}.key"
        c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        kk.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
        return str(c), str(kk)

    ca_key = key()
    ca = (x509.CertificateBuilder().subject_name(name("tds-test-ca")).issuer_name(name("tds-test-ca"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    ca_crt, _ = write("ca", ca, ca_key)

    def leaf(cn: str, usage: Any, san: list[Any] | None) -> Any:
        k = key()
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject).public_key(k.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(days=1)).add_extension(x509.ExtendedKeyUsage([usage]), False))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return b.sign(ca_key, hashes.SHA256()), k

    import ipaddress

    server, server_key = leaf("127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH,
                              [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    device, device_key = leaf(MAC, ExtendedKeyUsageOID.CLIENT_AUTH, None)
    s_crt, s_key = write("broker", server, server_key)
    d_crt, d_key = write("device", device, device_key)
    return {"ca": ca_crt, "cert": s_crt, "key": s_key, "device_cert": d_crt, "device_key": d_key}


def test_mutual_tls(tmp_path: Path) -> None:
    if MOSQUITTO is None:
        pytest.skip("needs the mosquitto binary: apt-get install mosquitto")
    pki = _make_pki(tmp_path)
    broker = Mosquitto(tmp_path, tls={"ca": pki["ca"], "cert": pki["cert"], "key": pki["key"]}).start()

    async def scenario() -> None:
        async with serve_bank(tcp_framer="rtu") as served, Collector(broker.port, STATUS, TELEMETRY) as col:
            meters = energy_bank_meters(served.bank, 1)
            cfg = write_config(tmp_path / "gateway.yaml", poll_interval_s=0.2, meters=meters,
                               broker={"url": f"mqtts://127.0.0.1:{broker.tls_port}", "ca": pki["ca"],
                                       "cert": pki["device_cert"], "key": pki["device_key"]},
                               modbus={"port": f"tcp://127.0.0.1:{served.tcp_port}"})
            proc = await _spawn(cfg)
            try:
                await col.wait_for(lambda: len(col.on(TELEMETRY)) >= 2, what="telemetry over mTLS")
            finally:
                err = await _reap(proc)
            assert " ERROR firmware." not in err, err
            assert decode(TELEMETRY, col.on(TELEMETRY)[0]).readings[0].device_code == "D01"

    try:
        asyncio.run(scenario())
    finally:
        broker.stop()
