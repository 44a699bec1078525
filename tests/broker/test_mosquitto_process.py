"""MosquittoProcess and `tds broker config` (needs the mosquitto binary for the process tests)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tds_core.broker.cli import register
from tds_core.broker.mosquitto import MosquittoError, MosquittoProcess, mosquitto_available, write_config
from tds_core.broker.probe import ClientTLS, ProbeClient
from tds_core.pki import Pki

needs_mosquitto = pytest.mark.skipif(not mosquitto_available(), reason="apt-get install mosquitto")


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tds")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.handler(args))


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    p = Pki.init(tmp_path / "pki")
    p.issue_broker()
    return p


def test_cli_config_writes_files(pki: Pki, tmp_path: Path) -> None:
    out = tmp_path / "conf"
    assert _run(["broker", "config", "--out", str(out), "--pki", str(pki.paths.root), "--port", "18999",
                 "--legacy", "aa:bb:cc:dd:ee:01=GW-1", "--consumer", "tds-consumer"]) == 0
    assert "listener 18999 127.0.0.1" in (out / "mosquitto.conf").read_text()
    assert "topic write telemetry/GW-1/+/data" in (out / "acl.conf").read_text()
    with pytest.raises(ValueError, match="--legacy"):
        _run(["broker", "config", "--out", str(out), "--pki", str(pki.paths.root), "--legacy", "nonsense"])


def test_config_needs_pki_material(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="cafile"):
        write_config(tmp_path / "c", pki_dir=tmp_path / "nothing", consumer_cns=["c"])


@needs_mosquitto
def test_bad_config_reports_mosquitto_log(pki: Pki, tmp_path: Path) -> None:
    conf = write_config(tmp_path / "c", pki_dir=pki.paths.root, consumer_cns=["tds-consumer"], port=18998,
                        user="root")
    conf.write_text(conf.read_text() + "\nno_such_option 1\n")
    with pytest.raises(MosquittoError, match=r"no_such_option|exited"):
        MosquittoProcess(conf, "127.0.0.1", 18998).start()


@needs_mosquitto
def test_start_reload_stop(pki: Pki, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    consumer = pki.issue_consumer()
    conf = write_config(tmp_path / "c", pki_dir=pki.paths.root, consumer_cns=["tds-consumer"], port=port,
                        user="root")
    with MosquittoProcess(conf, "127.0.0.1", port) as proc:
        c = ProbeClient("127.0.0.1", port, "tds-consumer",
                        tls=ClientTLS(pki.paths.ca_cert, consumer.cert_path, consumer.key_path))
        assert c.connect().ok
        c.disconnect()
        proc.reload()
        assert proc.pid is not None
    assert proc.pid is None
