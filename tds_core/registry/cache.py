"""In-memory registry lookups for the ingest path, refreshed on `NOTIFY tds_registry`.

The cache holds one immutable :class:`RegistrySnapshot`; a reload builds a new snapshot and swaps the
reference (a single attribute store, atomic under the GIL). Readers never lock and never query:

    cache = RegistryCache(dsn)
    cache.start()                                # loads synchronously; raises if the database is down
    entry = cache.snapshot.by_mac.get(mac)       # ~a dict get; None for an unknown gateway
    if entry is None or entry.revoked: ...       # dead-letter

A daemon thread owns one autocommit connection that LISTENs on `tds_registry` and reloads when notified
(a burst of notifications collapses into one reload), plus a periodic full reload as a safety net. If the
connection drops, the thread keeps the last snapshot, logs, reconnects with exponential backoff and reloads
(notifications sent while it was away are lost, so the reload after reconnecting is what catches up).
Liveness updates (gateways.last_seen / online) fire no notification (migration 0001) and cause no reload.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import psycopg

log = logging.getLogger(__name__)

CHANNEL = "tds_registry"

# One statement, so one MVCC snapshot: a reload never sees half of a provisioning transaction.
_LOAD_SQL = """
SELECT g.id, g.tenant_id, t.code, g.mac, g.code, g.status, g.payload_format,
       d.id, d.code, d.unit, d.kind
FROM gateways g
JOIN tenants t ON t.id = g.tenant_id
LEFT JOIN devices d ON d.gateway_id = g.id
ORDER BY g.id, d.id
"""


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    """A device as the ingest path needs it."""

    id: int
    code: str
    unit: str
    kind: str


@dataclass(frozen=True, slots=True)
class GatewayEntry:
    """A gateway with its tenant and devices (keyed by device code)."""

    id: int
    tenant_id: int
    tenant_code: str
    mac: str
    code: str
    status: str
    payload_format: str
    devices: Mapping[str, DeviceEntry]

    @property
    def revoked(self) -> bool:
        """True if the gateway's certificate was revoked: every message from it is dead-lettered."""
        return self.status == "revoked"


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    """One consistent view of the registry. Never mutated after construction."""

    version: int
    loaded_at: float  # time.monotonic() when the load finished
    by_mac: Mapping[str, GatewayEntry]
    by_code: Mapping[str, GatewayEntry]

    def __len__(self) -> int:
        return len(self.by_mac)


EMPTY_SNAPSHOT = RegistrySnapshot(0, 0.0, MappingProxyType({}), MappingProxyType({}))


def load_snapshot(conn: psycopg.Connection, version: int) -> RegistrySnapshot:
    """Read the whole registry with one query and build a snapshot."""
    by_mac: dict[str, GatewayEntry] = {}
    by_code: dict[str, GatewayEntry] = {}
    current: tuple | None = None
    devices: dict[str, DeviceEntry] = {}

    def close_gateway() -> None:
        if current is not None:
            gw_id, tenant_id, tenant_code, mac, code, status, fmt = current
            entry = GatewayEntry(
                gw_id, tenant_id, tenant_code, mac, code, status, fmt, MappingProxyType(dict(devices))
            )
            by_mac[mac] = entry
            by_code[code] = entry

    for row in conn.execute(_LOAD_SQL).fetchall():
        head = row[:7]
        if current is None or head[0] != current[0]:
            close_gateway()
            current = head
            devices = {}
        if row[7] is not None:
            devices[row[8]] = DeviceEntry(row[7], row[8], row[9], row[10])
    close_gateway()
    return RegistrySnapshot(version, time.monotonic(), MappingProxyType(by_mac), MappingProxyType(by_code))


@dataclass
class CacheStats:
    """Counters for metrics and tests (updated by the refresh thread only)."""

    reloads: int = 0
    notifications: int = 0
    periodic_reloads: int = 0
    reconnects: int = 0
    connection_errors: int = 0
    last_error: str | None = None
    listener_pid: int | None = None
    payloads: dict[str, int] = field(default_factory=dict)


class RegistryCache:
    """The registry as an atomically swapped in-memory snapshot, kept fresh by LISTEN/NOTIFY."""

    def __init__(
        self,
        dsn: str,
        *,
        refresh_interval: float = 30.0,
        poll_interval: float = 0.2,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        connect_timeout: int = 5,
    ) -> None:
        """`refresh_interval`: seconds between safety-net full reloads; `poll_interval`: how often the
        thread checks for stop() while idle; backoff bounds for reconnecting."""
        self._dsn = dsn
        self._refresh_interval = refresh_interval
        self._poll_interval = poll_interval
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._connect_timeout = connect_timeout
        self._snapshot: RegistrySnapshot = EMPTY_SNAPSHOT
        self._version = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None
        self.stats = CacheStats()

    # -- read side (ingest path): no locks, no queries ----------------------------------------------------

    @property
    def snapshot(self) -> RegistrySnapshot:
        """The current snapshot. Take it once per batch for a consistent view across lookups."""
        return self._snapshot

    @property
    def version(self) -> int:
        """Increments on every completed reload (0 before start())."""
        return self._snapshot.version

    def by_mac(self, mac: str) -> GatewayEntry | None:
        """The gateway with this (normalized, lower-case) MAC, or None."""
        return self._snapshot.by_mac.get(mac)

    def by_code(self, code: str) -> GatewayEntry | None:
        """The gateway with this code, or None."""
        return self._snapshot.by_code.get(code)

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> RegistryCache:
        """Connect, LISTEN, load the first snapshot (in the caller's thread), then start refreshing.

        Raises psycopg.OperationalError if the database cannot be reached: ingest must not start blind.
        """
        if self._thread is not None:
            raise RuntimeError("RegistryCache already started")
        self._stop.clear()
        self._conn = self._connect_and_load()
        self._thread = threading.Thread(target=self._run, name="registry-cache", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the refresh thread and close its connection. The last snapshot stays readable."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("registry cache thread did not stop within %.1fs", timeout)
            self._thread = None
        with self._cond:
            self._cond.notify_all()

    def __enter__(self) -> RegistryCache:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for_version(self, n: int, timeout: float = 5.0) -> bool:
        """Block until version >= n; False on timeout. For tests and start-up ordering."""
        with self._cond:
            return self._cond.wait_for(lambda: self._snapshot.version >= n, timeout)

    def reload(self) -> RegistrySnapshot:
        """Force a reload now on a short-lived connection (e.g. from a CLI); the thread keeps running."""
        with psycopg.connect(self._dsn, autocommit=True, connect_timeout=self._connect_timeout) as conn:
            return self._reload(conn)

    # -- refresh thread ----------------------------------------------------------------------------------

    def _connect_and_load(self) -> psycopg.Connection:
        conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=self._connect_timeout)
        try:
            # LISTEN before loading: a change committed after this point is notified, one committed before
            # is in the load. Nothing falls between.
            conn.execute(f"LISTEN {CHANNEL}")
            self.stats.listener_pid = conn.info.backend_pid
            self._reload(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _reload(self, conn: psycopg.Connection) -> RegistrySnapshot:
        with self._cond:  # serializes version numbers between the thread and reload()
            snap = load_snapshot(conn, self._version + 1)
            self._version = snap.version
            self._snapshot = snap
            self.stats.reloads += 1
            self._cond.notify_all()
        log.debug("registry snapshot v%d: %d gateways", snap.version, len(snap))
        return snap

    def _run(self) -> None:
        backoff = self._backoff_initial
        while not self._stop.is_set():
            conn = self._conn
            try:
                if conn is None or conn.closed:
                    conn = self._conn = self._connect_and_load()
                    self.stats.reconnects += 1
                    log.info("registry cache reconnected (listener pid %s)", self.stats.listener_pid)
                backoff = self._backoff_initial
                self._listen(conn)
            except psycopg.Error as exc:
                self.stats.connection_errors += 1
                self.stats.last_error = str(exc).strip()
                log.warning(
                    "registry cache lost its database connection (%s); serving snapshot v%d, retrying in %.1fs",
                    self.stats.last_error, self.version, backoff,
                )
                self._close()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._backoff_max)
        self._close()

    def _listen(self, conn: psycopg.Connection) -> None:
        """Wait for notifications; reload on each burst and on the periodic deadline. Returns on stop()."""
        next_full = time.monotonic() + self._refresh_interval
        while not self._stop.is_set():
            timeout = max(0.0, min(self._poll_interval, next_full - time.monotonic()))
            if self._drain(conn, timeout):
                self._reload(conn)
            elif time.monotonic() >= next_full:
                self.stats.periodic_reloads += 1
                self._reload(conn)
            else:
                continue
            next_full = time.monotonic() + self._refresh_interval

    def _drain(self, conn: psycopg.Connection, timeout: float) -> int:
        """Wait up to `timeout` for one notification, then take every one already queued (coalescing)."""
        received = 0
        for notify in conn.notifies(timeout=timeout, stop_after=1):
            received += 1
            self._count(notify.payload)
        if received:
            for notify in conn.notifies(timeout=0):
                received += 1
                self._count(notify.payload)
        return received

    def _count(self, payload: str) -> None:
        self.stats.notifications += 1
        self.stats.payloads[payload] = self.stats.payloads.get(payload, 0) + 1

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a broken connection must not kill the thread
                log.debug("error closing registry listener connection", exc_info=True)
