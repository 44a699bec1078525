"""`tds broker ...`: write the Mosquitto config, run a broker (embedded or Mosquitto)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from pathlib import Path

from tds_core.broker.crlwatch import CrlWatcher
from tds_core.broker.embedded import _parse_legacy, add_broker_arguments, broker_from_args, serve
from tds_core.broker.mosquitto import MosquittoProcess, write_config

__all__ = ["register"]


def _state_dir() -> Path:
    return Path(os.environ.get("TDS_STATE_DIR", ".tds"))


def _pki_dir(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    from tds_core.pki.cli import default_pki_dir

    return default_pki_dir()


def _write(args: argparse.Namespace, out: Path) -> Path:
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port: {args.port} is not in 1..65535 (Mosquitto needs a fixed port)")
    return write_config(out, pki_dir=_pki_dir(args.pki), consumer_cns=args.consumer or ["tds-consumer"],
                        legacy_gateways=_parse_legacy(args.legacy), host=args.host, port=args.port,
                        user=args.user, max_inflight_messages=args.max_inflight,
                        max_queued_messages=args.max_queued)


def _cmd_config(args: argparse.Namespace) -> int:
    conf = _write(args, args.out)
    print(f"wrote {conf} and {conf.parent / 'acl.conf'}")
    print(f"run: mosquitto -c {conf}   (reload after a revocation: kill -HUP <pid>; `tds broker run --mosquitto` "
          "does it by itself)")
    return 0


def _run_mosquitto(args: argparse.Namespace) -> int:
    if args.port == 0:
        raise ValueError("--port: Mosquitto needs a fixed port (0 is only for the embedded broker)")
    user = args.user or ("root" if os.geteuid() == 0 else None)
    args.user = user
    conf = _write(args, args.out or _state_dir() / "mosquitto")
    proc = MosquittoProcess(conf, args.host, args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: proc.reload())
    proc.start()
    # Mosquitto reads a replaced CRL only after SIGHUP (FIELD-NOTES): send it whenever crl.pem changes.
    watcher = CrlWatcher(_pki_dir(args.pki) / "crl.pem", proc.reload).start()
    print(f"READY {args.host}:{args.port}", flush=True)
    try:
        while not stop.wait(0.5):
            if proc.pid is None:
                print("error: mosquitto exited", file=sys.stderr)
                return 1
    finally:
        watcher.stop()
        proc.stop()
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    if args.mosquitto:
        if args.tls_dir is not None:
            args.pki = args.tls_dir
        return _run_mosquitto(args)
    broker = broker_from_args(args)
    asyncio.run(serve(broker))
    return 0


def _config_arguments(p: argparse.ArgumentParser, *, for_run: bool) -> None:
    if not for_run:
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8883)
        p.add_argument("--consumer", action="append", default=[], metavar="CN",
                       help="consumer CN (repeatable; default tds-consumer)")
        p.add_argument("--legacy", action="append", default=[], metavar="MAC=GATEWAY_CODE",
                       help="legacy gateway: MAC may publish telemetry/GATEWAY_CODE/+/data (repeatable)")
    p.add_argument("--pki", type=Path, help="PKI directory (default $TDS_PKI_DIR or .tds/pki)")
    p.add_argument("--user", help="user Mosquitto runs as (root: give 'root' to keep privileges)")
    if not for_run:  # `run` has it from add_broker_arguments, for either broker
        p.add_argument("--max-inflight", type=int, default=1000, help="max_inflight_messages (default 1000)")
    p.add_argument("--max-queued", type=int, default=1_000_000, help="max_queued_messages (default 1e6)")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `broker` command tree to the `tds` parser."""
    broker = subparsers.add_parser("broker", help="MQTT broker: Mosquitto config, run a broker")
    broker.set_defaults(handler=lambda _a: (broker.print_help(), 2)[1])
    sub = broker.add_subparsers(dest="broker_command", metavar="BROKER_COMMAND")

    p = sub.add_parser("config", help="write mosquitto.conf + acl.conf (TLS-only, seed rules)")
    p.add_argument("--out", type=Path, required=True, help="directory for mosquitto.conf, acl.conf, data/")
    _config_arguments(p, for_run=False)
    p.set_defaults(handler=_cmd_config)

    p = sub.add_parser("run", help="run a broker until SIGTERM/SIGINT; prints READY host:port")
    add_broker_arguments(p)
    p.add_argument("--mosquitto", action="store_true",
                   help="run Mosquitto with a generated config instead of the embedded broker (needs --port)")
    p.add_argument("--out", type=Path, help="Mosquitto: config directory (default .tds/mosquitto)")
    _config_arguments(p, for_run=True)
    p.set_defaults(handler=_cmd_run)
