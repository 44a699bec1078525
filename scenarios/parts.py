"""The real parts a scenario runs on, each with the faults the timeline can inflict on it.

* Database: `embedded` (a fresh database per run on the embedded PostgreSQL server: the project's one in
  `.tds/pgdata`, or the server whose admin DSN the caller passes, e.g. pytest's), `timescale`
  (Testcontainers `timescale/timescaledb:latest-pg16`; needs a Docker engine), or a `dsn`. Every kind is
  migrated and provisioned with the scenario's fleet. An outage is `ALLOW_CONNECTIONS false` plus
  terminating the database's backends: it works on any server and leaves other databases alone.
* Broker: `embedded` (`BrokerProcess`, amqtt in a child process), `mosquitto` (a private plain-TCP instance
  on a free port with persistence, so a restart keeps sessions), or a `url` (no restart possible).
* Consumer: `in_process` (`Consumer` with the `on_commit` hook: gives publish -> committed latency), or
  `subprocess` (`python -m tds_core.cli ingest`: can be SIGKILLed; no latency measurement). Both use one
  persistent session (fixed client id); the session is created before the fleet starts, so the broker
  queues everything for the consumer from the first message on.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

log = logging.getLogger(__name__)


class PartUnavailable(RuntimeError):
    """A part the scenario asks for cannot run here; the message says what to install or set."""


def _with_dbname(dsn: str, dbname: str) -> str:
    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo(**params)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for servers that cannot report the port they bound)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------- database

class Database:
    """A scenario's database: created (unless given as a DSN), migrated, provisioned; can be cut off."""

    def __init__(self, kind: str, *, dsn: str | None = None, admin_dsn: str | None = None,
                 name_hint: str = "scenario", keep: bool = False) -> None:
        self.kind, self._given_dsn, self._admin_dsn, self.keep = kind, dsn, admin_dsn, keep
        self.name = f"scn_{name_hint.replace('-', '_').replace('.', '_')[:30]}_{uuid.uuid4().hex[:8]}".lower()
        self.dsn: str | None = None
        self._created = False
        self._container = None
        self._embedded = None
        self.blocked = False

    def start(self) -> str:
        """Make the database exist; return its DSN (not yet migrated)."""
        if self.kind == "dsn":
            assert self._given_dsn
            self.dsn = self._given_dsn
            self._admin_dsn = _with_dbname(self.dsn, "postgres")
            return self.dsn
        if self.kind == "timescale":
            self._admin_dsn = self._start_timescale()
        elif self._admin_dsn is None:
            from tds_core import settings

            self._embedded = settings.embedded_postgres()
            self._admin_dsn = self._embedded.start()
        with psycopg.connect(self._admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        self._created = True
        self.dsn = _with_dbname(self._admin_dsn, self.name)
        return self.dsn

    def _start_timescale(self) -> str:
        try:
            import docker

            docker.from_env(timeout=2).ping()
        except Exception as exc:
            raise PartUnavailable(
                "database: timescale needs a Docker engine for Testcontainers (install Docker and start it), "
                "or point `parts.database: {dsn: postgresql://...}` at a TimescaleDB; "
                f"Docker said: {type(exc).__name__}") from None
        from testcontainers.postgres import PostgresContainer

        self._container = PostgresContainer("timescale/timescaledb:latest-pg16", driver=None)
        self._container.start()
        return self._container.get_connection_url()

    def prepare(self, fleet_spec) -> None:
        """Migrate (TimescaleDB when present) and provision the fleet, so the registry matches the simulation."""
        from tds_core.registry.store import apply_fleet
        from tds_core.storage.migrate import migrate

        assert self.dsn
        migrate(self.dsn, backend="auto")
        with psycopg.connect(self.dsn) as conn:
            report = apply_fleet(conn, fleet_spec)
        log.info("database %s provisioned: %s", self.name, report)

    def block(self) -> None:
        """Outage: refuse new connections to this database and end the open ones."""
        with psycopg.connect(self._admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(
                sql.Identifier(self._dbname())))
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", (self._dbname(),))
        self.blocked = True

    def unblock(self) -> None:
        """End of the outage."""
        with psycopg.connect(self._admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(
                sql.Identifier(self._dbname())))
        self.blocked = False

    def _dbname(self) -> str:
        return conninfo_to_dict(self.dsn or "")["dbname"]

    def stop(self) -> None:
        """Drop the run's database (unless kept) and stop what this part started."""
        if self.blocked:
            self.unblock()
        if self._created and not self.keep and self._container is None:
            with psycopg.connect(self._admin_dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))
        if self._container is not None:
            self._container.stop()
        # The embedded server is the project's shared one (settings): left running for the next command.


# --------------------------------------------------------------------------------------------- broker

_MOSQUITTO_CONF = """# generated by scenarios.parts: a private plain-TCP Mosquitto for one scenario run
per_listener_settings false
allow_anonymous true
persistence true
persistence_location {data}/
autosave_interval 1
max_inflight_messages 1000
max_queued_messages 1000000
max_queued_bytes 0
set_tcp_nodelay true
log_dest file {log}
log_type error
log_type warning
log_type notice
connection_messages false
{user}
listener {port} 127.0.0.1
protocol mqtt
"""


class Broker:
    """The scenario's broker: started on a port chosen at run time, restartable on the same port."""

    def __init__(self, kind: str, *, url: str | None = None, work_dir: Path, security: Any = None) -> None:
        self.kind, self.url, self.work_dir = kind, url, work_dir
        self.security = security  # a scenarios.security.ScenarioPki: mTLS, CRL and ACL
        self._proc = None
        self.port: int | None = None

    def start(self) -> str:
        """Start (or restart on the same port); return the broker URL."""
        if self.kind == "url":
            assert self.url
            return self.url
        if self.kind == "embedded":
            from tds_core.stack import BrokerProcess

            args = self.security.embedded_args() if self.security is not None else []
            self._proc = BrokerProcess("127.0.0.1", self.port or 0, extra_args=args)
            self.url = self._proc.start()
            self.port = self._proc.port
            return self.url
        from tds_core.broker.mosquitto import MosquittoProcess, mosquitto_available, write_config

        if not mosquitto_available():
            raise PartUnavailable("broker: mosquitto needs /usr/sbin/mosquitto: apt-get install mosquitto")
        self.port = self.port or free_port()
        data = self.work_dir / "mosquitto"
        data.mkdir(parents=True, exist_ok=True)
        if self.security is not None:
            # the product's generated config: TLS-only, client certificate required, CRL, ACL, persistence
            conf = write_config(data, pki_dir=self.security.root, consumer_cns=self.security.consumer_cns,
                                legacy_gateways=self.security.legacy, port=self.port,
                                user="root" if os.geteuid() == 0 else None)
        else:
            conf = data / "mosquitto.conf"
            user = "user root" if os.geteuid() == 0 else ""
            conf.write_text(_MOSQUITTO_CONF.format(data=data, log=data / "mosquitto.log", port=self.port,
                                                   user=user))
        self._proc = MosquittoProcess(conf, "127.0.0.1", self.port)
        self._proc.start()
        self.url = f"{'mqtts' if self.security is not None else 'mqtt'}://127.0.0.1:{self.port}"
        return self.url

    def reload_crl(self, timeout: float = 10.0) -> bool:
        """Make the broker read the CRL again. True when the reload is confirmed (Mosquitto: SIGHUP, then
        its log line); False when it happens on its own (the embedded broker watches crl.pem)."""
        if self.kind != "mosquitto" or self._proc is None:
            return False
        log_path = self._proc.conf.parent / "mosquitto.log"
        before = log_path.read_text(errors="replace").count("Reloading config") if log_path.exists() else 0
        self._proc.reload()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # readiness: Mosquitto logs the reload once done
            if log_path.exists() and log_path.read_text(errors="replace").count("Reloading config") > before:
                return True
            time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not log a config reload within {timeout:.0f}s ({log_path})")

    @property
    def restartable(self) -> bool:
        return self.kind != "url"

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None


# --------------------------------------------------------------------------------------------- consumer

class ConsumerPart:
    """The ingest consumer, in this process or as a child process, on one persistent MQTT session."""

    def __init__(self, mode: str, *, database_url: str, broker_url: str, client_id: str, work_dir: Path,
                 on_commit: Callable | None = None, tls: Any = None) -> None:
        self.mode, self.database_url, self.broker_url = mode, database_url, broker_url
        self.client_id, self.work_dir, self._on_commit = client_id, work_dir, on_commit
        self.tls = tls  # tds_core.ingest.config.TlsFiles for an mTLS broker (client id = certificate CN)
        self._consumer = None
        self._proc: subprocess.Popen | None = None
        self.kills = 0

    def _config(self):
        from tds_core.ingest.config import IngestConfig

        return IngestConfig(database_url=self.database_url, broker_url=self.broker_url, client_id=self.client_id,
                            liveness_interval=2.0, tls=self.tls)

    def start(self, timeout: float = 30.0) -> None:
        """Start consuming; returns once subscribed (in-process) or once the child runs on the session."""
        from tds_core.ingest.consumer import Consumer

        if self.mode == "in_process":
            self._consumer = Consumer(self._config(), on_commit=self._on_commit)
            self._consumer.start()
            if not self._consumer.subscribed.wait(timeout):
                raise RuntimeError(f"consumer not subscribed to {self.broker_url} after {timeout:.0f}s")
            return
        if self.kills == 0 and self._proc is None:
            # Create the persistent session (with its subscriptions) first: from then on the broker queues
            # every message for this client id, so nothing published before the child subscribes is lost.
            seed = Consumer(self._config())
            seed.start()
            ok = seed.subscribed.wait(timeout)
            seed.stop()
            if not ok:
                raise RuntimeError(f"consumer not subscribed to {self.broker_url} after {timeout:.0f}s")
        self._spawn()

    def _spawn(self) -> None:
        log_path = self.work_dir / "consumer.log"
        with open(log_path, "ab") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "tds_core.cli", "--log-level", "WARNING", "ingest",
                 "--database-url", self.database_url, "--broker-url", self.broker_url,
                 "--client-id", self.client_id, *self._tls_args()],
                stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        log.info("consumer child pid %s (log %s)", self._proc.pid, log_path)

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        return ["--ca", self.tls.ca, "--cert", self.tls.cert, "--key", self.tls.key]

    def registry_shows_revoked(self, mac: str, timeout: float) -> bool | None:
        """Wait until the in-process consumer's registry cache has `mac` revoked (True), or `timeout`
        (False). None for a child-process consumer: its cache cannot be seen from here."""
        cache = getattr(self._consumer, "_cache", None)  # the consumer's RegistryCache (NOTIFY-driven)
        if cache is None:
            return None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = cache.by_mac(mac)
            if entry is not None and entry.revoked:
                return True
            time.sleep(0.02)  # poll interval on an in-memory flag the cache's thread sets
        return False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def kill(self) -> None:
        """SIGKILL the child: a crash with whatever it held unacknowledged."""
        if self._proc is None:
            raise RuntimeError("consumer_kill: the consumer is not a child process")
        if self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self.kills += 1
        self._proc = None

    def restart(self) -> None:
        self._spawn()

    def wait_subscribed(self, timeout: float) -> bool:
        """In-process: wait until the consumer is subscribed again (after a broker restart)."""
        if self._consumer is not None:
            return self._consumer.subscribed.wait(timeout)
        return True

    @property
    def queue_depth(self) -> int:
        return self._consumer.queue_depth if self._consumer is not None else 0

    def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.stop()
            self._consumer = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(15)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None

