"""The bench's private world: PostgreSQL (embedded or a given server), a fleet, certificates, a broker.

Everything lives in one temporary directory and is torn down by `BenchEnv.close()`. The fleet is
provisioned with plain SQL (fast for thousands of devices, independent of the registry code): one tenant,
`gateways` gateways with MACs `02:00:00:00:HH:LL`, devices D01..Dnn in kWh on each.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

log = logging.getLogger(__name__)

CONSUMER_CN = "tds-consumer"
# The seed-design consumer gets its own identity: Mosquitto sets client id := CN, and sharing the TDS
# consumer's CN would resume (and drain) the TDS consumer's persistent session.
SEED_CONSUMER_CN = "tds-seed-consumer"


class BenchSetupError(RuntimeError):
    """A part the bench needs is missing or did not start; the message says what to install or fix."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gateway_macs(count: int) -> list[str]:
    """`count` locally administered MACs, lower-case with colons (the registry's form)."""
    if not 1 <= count <= 65535:
        raise ValueError(f"gateways: {count} is not in 1..65535")
    return [f"02:00:00:00:{n >> 8:02x}:{n & 255:02x}" for n in range(1, count + 1)]


def device_codes(count: int) -> list[str]:
    """D01, D02, ... (the protocol's device-code alphabet)."""
    if not 1 <= count <= 32:
        raise ValueError(f"devices per gateway: {count} is not in 1..32 (the decoder's max_readings)")
    return [f"D{n:02d}" for n in range(1, count + 1)]


@dataclass(frozen=True)
class ClientTls:
    """mTLS material of one MQTT client."""

    ca: str
    cert: str
    key: str


@dataclass
class BrokerInfo:
    """A running broker: how to reach it, which process to watch, how clients authenticate."""

    kind: str  # "mosquitto" | "embedded"
    host: str
    port: int
    pid: int | None
    tls: bool
    pki_dir: Path | None = None
    stop: object = None  # callable

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def client_tls(self, cn: str) -> ClientTls | None:
        """The certificate files of client `cn` (None on a plain broker)."""
        if not self.tls or self.pki_dir is None:
            return None
        from tds_core.pki.store import PkiPaths

        paths = PkiPaths(self.pki_dir)
        return ClientTls(str(paths.ca_cert), str(paths.cert(cn)), str(paths.key(cn)))


@dataclass
class BenchEnv:
    """Database, fleet and broker for one bench run. Use as a context manager."""

    gateways: int = 200
    devices: int = 8
    dsn: str | None = None  # admin DSN of an existing server; None = embedded PostgreSQL
    backend: str = "postgres"  # or "timescale" (needs a server with the extension: --dsn)
    broker: str = "mosquitto"  # or "embedded", or "none" (database only)
    max_inflight: int = 1000
    max_queued: int = 0
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tdsb-", dir="/tmp")))
    db_dsn: str = ""
    admin_dsn: str = ""
    postgres_pid: int | None = None
    broker_info: BrokerInfo | None = None
    macs: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    _server: object = None
    _db_name: str = ""

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> BenchEnv:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Database, migration, fleet, then the broker."""
        self.macs = gateway_macs(self.gateways)
        self.codes = device_codes(self.devices)
        self._start_database()
        self._provision()
        if self.broker == "mosquitto":
            self.broker_info = self._start_mosquitto()
        elif self.broker == "embedded":
            self.broker_info = self._start_embedded()
        elif self.broker != "none":
            raise ValueError(f"broker: {self.broker!r}; expected 'mosquitto', 'embedded' or 'none'")

    def close(self) -> None:
        """Stop the broker, drop the database (or stop the embedded server), remove the directory."""
        if self.broker_info is not None and callable(self.broker_info.stop):
            with contextlib.suppress(Exception):
                self.broker_info.stop()
            self.broker_info = None
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._server.stop()  # type: ignore[attr-defined]
            self._server = None
        elif self._db_name and self.admin_dsn:
            with contextlib.suppress(psycopg.Error), psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self._db_name)))
            self._db_name = ""
        shutil.rmtree(self.workdir, ignore_errors=True)

    # ------------------------------------------------------------------ database

    def _start_database(self) -> None:
        from tds_core.storage.migrate import migrate

        if self.dsn is None:
            from tds_core.storage.embedded import EmbeddedPostgres

            # Short path: the server's Unix socket lives in its data directory (108-byte limit).
            server = EmbeddedPostgres(self.workdir / "pg", delete_on_stop=True)
            self._server = server
            self.admin_dsn = server.start()
        else:
            self.admin_dsn = self.dsn
        self._db_name = f"tds_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self._db_name)))
            if self._server is not None:
                pid_file = conn.execute("SELECT current_setting('data_directory')").fetchone()[0]  # type: ignore[index]
                self.postgres_pid = _read_postmaster_pid(Path(pid_file))
        params = conninfo_to_dict(self.admin_dsn)
        params["dbname"] = self._db_name
        self.db_dsn = make_conninfo(**params)
        migrate(self.db_dsn, backend=self.backend)

    def _provision(self) -> None:
        with psycopg.connect(self.db_dsn) as conn:
            (tenant,) = conn.execute(
                "INSERT INTO tenants (code, name) VALUES ('bench', 'Bench') RETURNING id"
            ).fetchone()  # type: ignore[misc]
            conn.execute(
                "INSERT INTO gateways (tenant_id, mac, code) SELECT %s, m, 'GW-' || lpad(n::text, 5, '0') "
                "FROM unnest(%s::text[]) WITH ORDINALITY AS t(m, n)",
                (tenant, self.macs),
            )
            conn.execute(
                "INSERT INTO devices (gateway_id, code, slave_id, register, unit, kind) "
                "SELECT g.id, c, n, 0, 'kWh', 'energy' FROM gateways g, unnest(%s::text[]) WITH ORDINALITY AS d(c, n)",
                (self.codes,),
            )
        log.info("fleet: %d gateways x %d devices", self.gateways, self.devices)

    def reset_readings(self) -> None:
        """Empty readings, rollup logs and dead letters; forget liveness: a fresh start for the next design."""
        with psycopg.connect(self.db_dsn, autocommit=True) as conn:
            logs = ", readings_batch_log, readings_dirty" if self.backend == "postgres" else ""
            conn.execute(f"TRUNCATE readings{logs}, dead_letters")
            conn.execute("UPDATE gateways SET last_seen = NULL, online = false")
            conn.execute("VACUUM ANALYZE gateways")

    def ensure_today_partition(self) -> None:
        """The seed design inserts straight into `readings`: make sure today's partition exists (a
        hypertable makes its own chunks)."""
        from tds_core.storage.partitions import ensure_partitions

        if self.backend != "postgres":
            return
        with psycopg.connect(self.db_dsn) as conn:
            ensure_partitions(conn, {datetime.now(UTC).date()})
            conn.commit()

    # ------------------------------------------------------------------ brokers

    def _make_pki(self) -> Path:
        from tds_core.pki import Pki

        pki_dir = self.workdir / "pki"
        pki = Pki.init(pki_dir)
        pki.issue_broker()
        pki.issue_consumer(CONSUMER_CN)
        pki.issue_consumer(SEED_CONSUMER_CN)
        for mac in self.macs:
            pki.issue_device(mac)
        return pki_dir

    def _start_mosquitto(self) -> BrokerInfo:
        from tds_core.broker.mosquitto import MosquittoProcess, mosquitto_available, write_config

        if not mosquitto_available():
            raise BenchSetupError("Mosquitto not found at /usr/sbin/mosquitto: apt-get install mosquitto "
                                  "(or use --broker embedded)")
        pki_dir = self._make_pki()
        port = free_port()
        conf = write_config(self.workdir / "mosquitto", pki_dir=pki_dir,
                            consumer_cns=[CONSUMER_CN, SEED_CONSUMER_CN], port=port,
                            user="root" if os.geteuid() == 0 else None,
                            max_inflight_messages=self.max_inflight, max_queued_messages=self.max_queued)
        proc = MosquittoProcess(conf, "127.0.0.1", port)
        proc.start()
        return BrokerInfo("mosquitto", "127.0.0.1", port, proc.pid, True, pki_dir, proc.stop)

    def _start_embedded(self) -> BrokerInfo:
        from tds_core.stack import BrokerProcess

        proc = BrokerProcess("127.0.0.1", 0)
        proc.start()
        assert proc.port is not None
        return BrokerInfo("embedded", "127.0.0.1", proc.port, proc.pid, False, None, proc.stop)


def _read_postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
