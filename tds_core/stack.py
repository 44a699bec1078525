"""`tds up`: the whole core on one machine with no set-up, and the pieces to build such stacks.

Embedded PostgreSQL (from the wheel) unless a database URL is given, the embedded amqtt broker in a child
process unless a broker URL is given, migrations, an optional fleet file, and the consumer in this process.
Ctrl-C stops the consumer (committing and acknowledging what it holds), then the broker, then PostgreSQL.
"""

from __future__ import annotations

import argparse
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

from tds_core import settings

log = logging.getLogger(__name__)


class BrokerProcess:
    """The embedded broker (`python -m tds_core.broker.embedded`) as a child process."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, extra_args: list[str] | None = None) -> None:
        self.host = host
        self.requested_port = port
        self.extra_args = extra_args or []
        self.port: int | None = None
        self._proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        """mqtt:// (or mqtts:// with TLS arguments) URL of the running broker."""
        scheme = "mqtts" if any(a.startswith("--tls") or a == "--ca" for a in self.extra_args) else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 20.0) -> str:
        """Spawn the broker and wait for its READY line; return its URL."""
        cmd = [sys.executable, "-m", "tds_core.broker.embedded", "--host", self.host,
               "--port", str(self.requested_port), *self.extra_args]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self._proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"embedded broker exited with code {self._proc.returncode} before READY")
            if sel.select(timeout=0.2):
                line = self._proc.stdout.readline().strip()
                if line.startswith("READY "):
                    self.port = int(line.rsplit(":", 1)[1])
                    return self.url
        self.stop()
        raise RuntimeError(f"embedded broker not ready after {timeout:.0f}s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in `timeout` seconds."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def kill(self) -> None:
        """SIGKILL: a broker crash, for fault scenarios."""
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.wait()


def prepare_database(database_url: str | None, fleet: Path | None = None, backend: str = "auto") -> str:
    """Resolve the database (embedded by default), migrate it, load a fleet file; return the DSN."""
    from tds_core.storage.migrate import migrate

    dsn = settings.database_url(database_url)
    applied = migrate(dsn, backend=backend)
    if applied:
        log.info("applied %d migrations", len(applied))
    if fleet is not None:
        import psycopg

        from tds_core.registry.fleet import load_fleet
        from tds_core.registry.store import apply_fleet

        spec = load_fleet(fleet)
        with psycopg.connect(dsn) as conn:
            report = apply_fleet(conn, spec)
        log.info("fleet %s: %s", fleet, report)
    return dsn


def _handle_up(args: argparse.Namespace) -> int:
    from tds_core.ingest.cli import config_from_args, run_until_signalled
    from tds_core.ingest.consumer import Consumer

    dsn = prepare_database(args.database_url, args.fleet)
    broker: BrokerProcess | None = None
    broker_url = settings.broker_url(args.broker_url)
    try:
        if broker_url is None:
            broker = BrokerProcess(args.broker_host, args.broker_port)
            broker_url = broker.start()
        config = config_from_args(args, dsn, broker_url)
        print(f"tds up: database {dsn}", flush=True)
        print(f"tds up: broker {broker_url} (gateways publish to tds_new/devices/<mac>/telemetry)", flush=True)
        print("tds up: consumer running; Ctrl-C to stop", flush=True)
        run_until_signalled(Consumer(config))
    finally:
        if broker is not None:
            broker.stop()
        settings.embedded_postgres().stop()
    print("tds up: stopped", flush=True)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `tds up`."""
    from tds_core.ingest.cli import add_consumer_arguments

    p = subparsers.add_parser("up", help="run database, broker and consumer together (embedded by default)")
    p.add_argument("--database-url", "--dsn", dest="database_url",
                   help="use this PostgreSQL instead of the embedded one")
    p.add_argument("--broker-url", help="use this broker instead of starting the embedded one")
    p.add_argument("--broker-host", default="127.0.0.1", help="embedded broker address (default 127.0.0.1)")
    p.add_argument("--broker-port", type=int, default=1883, help="embedded broker port (0 = any free port)")
    p.add_argument("--fleet", type=Path, help="provision this fleet file before starting")
    add_consumer_arguments(p)
    p.set_defaults(handler=_handle_up)
