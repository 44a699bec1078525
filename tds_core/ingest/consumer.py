"""The MQTT consumer: receive, batch, write, then acknowledge.

Two threads. paho's network thread only appends received messages to a queue (manual ack is on, so paho
sends no PUBACK by itself). The writer thread takes batches (up to `batch_max_messages`, waiting at most
`batch_max_wait` after the first), turns each message into rows or a dead letter, commits them in one
transaction, and only then queues the PUBACKs. If the database is down the writer retries with backoff and
acknowledges nothing, so the broker stops sending once `receive_maximum` messages are in flight: the
consumer stops taking messages rather than dropping them. A message whose rows were committed but whose
PUBACK was lost (crash) comes back from the broker and is skipped by the (device, time) unique key.

Messages are decoded and resolved against the registry on arrival, in paho's thread: that work then
overlaps the writer's wait on the database instead of lengthening its cycle.

Housekeeping (the silence sweep, partitions ahead, rollup refresh, retention) runs in a third thread on its
own connection: a rollup refresh can take seconds of database time, and on the writer's thread it stalled
ingest for as long (every commit waited behind it, which set the latency tail). The two connections touch
the same gateway rows only in id order, so they wait for each other instead of deadlocking.
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tds_core.ingest import metrics
from tds_core.ingest.config import BrokerAddress, IngestConfig
from tds_core.ingest.mqttclient import ConsumerClient
from tds_core.ingest.pipeline import Accepted, InboundMessage, dead_letter, process_message
from tds_core.protocol import STATUS_OFFLINE, STATUS_ONLINE, Reason, Rejection, parse_topic
from tds_core.registry.cache import GatewayEntry, RegistryCache
from tds_core.storage.capabilities import Backend
from tds_core.storage.deadletter import DeadLetter
from tds_core.storage.liveness import mark_silent_gateways_offline, set_gateway_online
from tds_core.storage.writer import BatchWriter, WriteResult

log = logging.getLogger(__name__)

# A write that fails for a reason other than the connection (a constraint the decoder did not foresee) must
# not block the stream: the batch is retried message by message and the culprit dead-lettered with this code.
STORAGE_REJECTED = "storage_rejected"
_TELEMETRY_IN = metrics.MESSAGES_IN.labels("telemetry")  # label lookups once, not per message
_STATUS_IN = metrics.MESSAGES_IN.labels("status")


@dataclass(frozen=True)
class CommitInfo:
    """What one committed batch held; passed to the `on_commit` hook (benchmarks, scenario accounting)."""

    messages: list[InboundMessage]
    result: WriteResult
    committed_mono: float
    dead_letters: list[DeadLetter] = field(default_factory=list)


class Consumer:
    """The ingest consumer. `start()` then `stop()`; or `run()` to block until `stop()` from elsewhere."""

    def __init__(self, config: IngestConfig, *, on_commit: Callable[[CommitInfo], None] | None = None) -> None:
        self.config = config
        self._on_commit = on_commit
        self._queue: deque[InboundMessage] = deque()
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._stop_requested = threading.Event()
        self._batch_in_hand = 0
        self._give_up_at: float | None = None  # while stopping: stop retrying the database after this
        self._cache = RegistryCache(config.database_url)
        self._conn: psycopg.Connection | None = None
        self._writer: BatchWriter | None = None
        self._backend: Backend | None = None  # read by the housekeeping thread on its first rollup fold
        self._client = self._make_client()
        self._thread = threading.Thread(target=self._writer_loop, name="tds-ingest-writer", daemon=True)
        self._housekeeper = threading.Thread(
            target=self._housekeeping_loop, name="tds-ingest-housekeeping", daemon=True
        )
        self.connected = threading.Event()
        self.subscribed = threading.Event()

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Load the registry, open the database, connect to the broker and start consuming."""
        if self.config.metrics_port is not None:
            from prometheus_client import start_http_server

            start_http_server(self.config.metrics_port, addr=self.config.metrics_host)
        self._cache.start()
        self._connect_db()
        address = BrokerAddress.parse(self.config.broker_url)
        self._thread.start()
        self._housekeeper.start()
        if self.config.mqtt_version == 5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 0xFFFFFFFF  # the session (and queued messages) outlives restarts
            props.ReceiveMaximum = self.config.receive_maximum
            self._client.connect_async(
                address.host, address.port, self.config.keepalive, clean_start=False, properties=props
            )
        else:
            self._client.connect_async(address.host, address.port, self.config.keepalive)
        self._client.loop_start()
        log.info(
            "consumer started",
            extra={"broker": self.config.broker_url, "client_id": self.config.client_id,
                   "backend": self._writer.backend if self._writer else None},
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking messages, commit and acknowledge what was received, disconnect.

        If the database stays unreachable for `timeout` seconds, give up without acknowledging: the broker
        keeps those messages for the next run.
        """
        if self._stopping.is_set():
            self._stopped.wait(timeout)
            return
        self._give_up_at = time.monotonic() + timeout
        # From here on, new messages are left unacknowledged (the broker redelivers them to the next run)
        # and the writer drains what was already received. Unsubscribing would end the session's interest.
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout + 5)
        self._housekeeper.join(timeout + 5)  # a refresh in progress finishes (it commits on its own)
        self._client.disconnect()
        self._client.loop_stop()
        self._cache.stop()
        if self._conn is not None:
            self._conn.close()
        self._stopped.set()
        log.info("consumer stopped")

    def request_stop(self) -> None:
        """Ask `run()` to stop (safe from a signal handler: it only sets a flag)."""
        self._stop_requested.set()

    def run(self, stop_timeout: float = 10.0) -> None:
        """Start, block until `request_stop()`, then stop gracefully."""
        self.start()
        try:
            while not self._stop_requested.wait(0.5):
                pass
        finally:
            self.stop(stop_timeout)

    @property
    def queue_depth(self) -> int:
        """Messages received and not yet acknowledged (queued, plus the batch being written)."""
        return len(self._queue) + self._batch_in_hand

    # ---------------------------------------------------------------- MQTT side (paho's thread)

    def _make_client(self) -> ConsumerClient:
        cfg = self.config
        protocol = mqtt.MQTTv5 if cfg.mqtt_version == 5 else mqtt.MQTTv311
        kwargs: dict = {"callback_api_version": CallbackAPIVersion.VERSION2, "client_id": cfg.client_id,
                        "protocol": protocol, "manual_ack": True}
        if protocol == mqtt.MQTTv311:
            kwargs["clean_session"] = False  # persistent session: QoS 1 messages wait for us while we are away
        client = ConsumerClient(**kwargs)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=0.2, max_delay=10)
        if cfg.tls is not None:
            client.tls_set(ca_certs=cfg.tls.ca, certfile=cfg.tls.cert, keyfile=cfg.tls.key,
                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        if getattr(reason, "is_failure", False):
            log.error("broker refused the connection: %s", reason)
            return
        metrics.BROKER_CONNECTED.set(1)
        self.connected.set()
        log.info("connected to broker, session_present=%s", getattr(flags, "session_present", None))
        client.subscribe([(topic, 1) for topic in self.config.subscriptions()])

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, reasons: list, props: object) -> None:
        failed = [r for r in reasons if getattr(r, "is_failure", False)]
        if failed:
            log.error("broker refused subscriptions: %s", failed)
            return
        self.subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                       props: object) -> None:
        metrics.BROKER_CONNECTED.set(0)
        self.connected.clear()
        self.subscribed.clear()
        if not self._stopping.is_set():
            log.warning("disconnected from broker (%s); paho reconnects", reason)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if self._stopping.is_set():
            return  # not acknowledged: the broker keeps it in our session for the next run
        queue = self._queue
        message = InboundMessage(
            msg.topic, msg.payload, msg.mid, msg.qos, datetime.now(UTC), time.monotonic(), bool(msg.retain)
        )
        if not message.topic.endswith("/status"):
            # Decoded here, on arrival, rather than when its batch is taken: the writer thread then spends its
            # cycle on the database only, and decoding overlaps the previous batch's COPY and commit (the
            # writer waits on the server with the GIL released). A shorter cycle means smaller batches and a
            # lower publish->commit latency at the same rate.
            try:
                message.outcome = process_message(message, self._cache.snapshot, limits=self.config.limits)
            except Exception:  # never let paho's network loop die; the writer decodes it again and reports
                log.exception("decoding %s on arrival failed", message.topic)
        queue.append(message)
        # deque.append is atomic: the lock is only needed to wake the writer (first message, or a full batch).
        # The writer checks the queue under the lock before waiting, so this notify cannot be missed.
        depth = len(queue)
        if depth == 1 or depth == self.config.batch_max_messages:
            with self._cond:
                self._cond.notify()

    # ---------------------------------------------------------------- writer side (own thread)

    def _take_batch(self) -> list[InboundMessage]:
        """Wait for a first message, then up to `batch_max_wait` for the batch to fill."""
        cfg = self.config
        with self._cond:
            if not self._queue:
                self._cond.wait(timeout=0.5)
            if not self._queue:
                return []
            deadline = self._queue[0].received_mono + cfg.batch_max_wait
            while len(self._queue) < cfg.batch_max_messages and not self._stopping.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(timeout=remaining)
            count = min(len(self._queue), cfg.batch_max_messages)
            self._batch_in_hand = count
            return [self._queue.popleft() for _ in range(count)]

    def _writer_loop(self) -> None:
        while True:
            batch = self._take_batch()
            metrics.QUEUE_DEPTH.set(self.queue_depth)
            if batch and not self._handle_batch(batch):
                # Gave up while stopping with the database down: put the batch back so nothing is acked.
                return
            if self._stopping.is_set() and not self._queue:
                return

    def _handle_batch(self, batch: list[InboundMessage]) -> bool:
        snapshot = self._cache.snapshot
        limits = self.config.limits
        rows: list = []
        seen: dict[int, datetime] = {}
        letters: list[DeadLetter] = []
        status_after: dict[str, bool] = {}  # mac -> online, applied after the rows (last event wins)
        stored_messages = status_messages = 0
        for message in batch:
            if message.topic.endswith("/status"):
                status_messages += 1
                outcome = self._status_update(message, snapshot)
                if isinstance(outcome, DeadLetter):
                    letters.append(outcome)
                    continue
                gateway, online = outcome
                if online and not message.retain:
                    # Sent just now by a live session: as good as a reading for liveness (last_seen too).
                    _saw(seen, gateway.id, message.received_at)
                    status_after.pop(gateway.mac, None)
                else:
                    # An LWT, a clean "offline", or a retained (possibly stale) "online": the flag only.
                    status_after[gateway.mac] = online
                continue
            result = message.outcome
            if result is None:  # not decoded on arrival (decoding raised there): decode now, and report
                result = process_message(message, snapshot, limits=limits)
            if isinstance(result, Accepted):
                rows.extend(result.rows)
                _saw(seen, result.gateway.id, message.received_at)
                status_after.pop(result.gateway.mac, None)
                stored_messages += 1
            else:
                letters.append(result)
        # Counted per batch, not per message (same totals once the batch is handled).
        if status_messages:
            _STATUS_IN.inc(status_messages)
        if len(batch) > status_messages:
            _TELEMETRY_IN.inc(len(batch) - status_messages)
        written = self._write_with_retry(batch, rows, seen, letters, status_after)
        if written is None:
            return False
        result, letters = written
        # One write for the batch's PUBACKs (QoS 1; the subscriptions grant no QoS 2, kept for completeness).
        self._client.ack_many([m.mid for m in batch if m.qos == 1])
        for message in batch:
            if message.qos > 1:
                self._client.ack(message.mid, message.qos)
        self._batch_in_hand = 0
        done = time.monotonic()
        observe = metrics.ACK_LATENCY.observe
        for message in batch:
            observe(done - message.received_mono)
        metrics.BATCH_SIZE.observe(len(batch))
        metrics.MESSAGES_STORED.inc(stored_messages)
        metrics.READINGS_STORED.inc(result.inserted)
        metrics.READINGS_DUPLICATE.inc(result.duplicates)
        for letter in letters:
            metrics.MESSAGES_REJECTED.labels(letter.reason).inc()
            log.warning("dead-lettered %s: %s: %s", letter.topic, letter.reason, letter.detail)
        if self._on_commit is not None:
            self._on_commit(CommitInfo(batch, result, done, letters))
        return True

    def _status_update(self, message: InboundMessage, snapshot) -> tuple[GatewayEntry, bool] | DeadLetter:
        """A gateway's status message (its LWT or its own announcement) -> (gateway, online)."""
        try:
            info = parse_topic(message.topic)
            gateway = snapshot.by_mac.get(info.mac or "")
            if gateway is None:
                raise Rejection(Reason.UNKNOWN_GATEWAY, f"status topic: {info.mac!r} is not in the registry")
            if gateway.revoked:
                raise Rejection(Reason.GATEWAY_REVOKED, f"gateway {gateway.code} ({gateway.mac}) is revoked")
            status = message.payload.strip()
            if status not in (STATUS_ONLINE, STATUS_OFFLINE):
                raise Rejection(
                    Reason.WRONG_TYPE,
                    f"status: expected {STATUS_ONLINE.decode()!r} or {STATUS_OFFLINE.decode()!r}, "
                    f"got {status[:60].decode('utf-8', 'replace')!r}",
                )
            return gateway, status == STATUS_ONLINE
        except Rejection as rejection:
            return dead_letter(message, rejection.reason, rejection.detail)

    def _write_with_retry(self, batch, rows, seen, letters, status_after):
        """Commit the batch; retry on connection failures until it works (or we give up while stopping).

        Returns (result, dead letters actually written) or None when giving up.
        """
        delay = self.config.db_retry_initial
        while True:
            try:
                conn, writer = self._connect_db()
                started = time.monotonic()
                try:
                    result = writer.write(rows, seen, letters)
                except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError) as exc:
                    log.error("batch refused by the database (%s); writing message by message", exc)
                    result, letters = self._write_one_by_one(batch, writer)
                metrics.COMMIT_SECONDS.observe(time.monotonic() - started)
                for mac, online in status_after.items():
                    set_gateway_online(conn, mac, online)
                    if not online:
                        writer.forget_liveness()  # its next message must set online again at once
                        metrics.GATEWAYS_MARKED_OFFLINE.labels("lwt").inc()
                metrics.DB_UP.set(1)
                return result, letters
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                metrics.DB_UP.set(0)
                metrics.DB_ERRORS.inc()
                self._drop_db()
                if self._give_up_at is not None and time.monotonic() >= self._give_up_at:
                    log.error("database still unreachable while stopping; %d messages left unacknowledged "
                              "(the broker redelivers them)", len(batch) + len(self._queue))
                    return None
                log.warning("database write failed (%s); retrying in %.1fs, nothing acknowledged", exc, delay)
                time.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, self.config.db_retry_max)

    def _write_one_by_one(self, batch: list[InboundMessage], writer: BatchWriter) -> tuple[WriteResult, list]:
        """Fallback for a batch the database refused: isolate the message(s) at fault."""
        snapshot = self._cache.snapshot
        inserted = duplicates = 0
        letters: list[DeadLetter] = []
        for message in batch:
            if message.topic.endswith("/status"):
                continue
            outcome = process_message(message, snapshot, limits=self.config.limits)
            if isinstance(outcome, Accepted):
                try:
                    res = writer.write(outcome.rows, {outcome.gateway.id: message.received_at}, [])
                    inserted += res.inserted
                    duplicates += res.duplicates
                    continue
                except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError) as exc:
                    outcome = dead_letter(message, STORAGE_REJECTED, f"database refused the rows: {exc}"[:500])
            letters.append(outcome)
        res = writer.write([], {}, letters)
        return WriteResult(inserted, duplicates, res.dead_lettered), letters

    def _connect_db(self) -> tuple[psycopg.Connection, BatchWriter]:
        if self._conn is None or self._conn.closed or self._writer is None:
            self._conn = psycopg.connect(self.config.database_url, connect_timeout=5)
            # The backend is read from what the migrations recorded.
            # last_seen lags by less than the resolution: keep that small next to the silence window.
            resolution = min(self.config.last_seen_resolution, self.config.offline_after / 10)
            self._writer = BatchWriter(self._conn, last_seen_resolution=resolution)
        return self._conn, self._writer

    def _drop_db(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None
        self._writer = None

    # ---------------------------------------------------------------- housekeeping (own thread, own connection)

    def _housekeeping_loop(self) -> None:
        cfg = self.config
        tasks: list[tuple[float, Callable[[psycopg.Connection], None]]] = [
            (cfg.liveness_interval, self._sweep_silent_gateways),
            (cfg.maintenance_interval, self._maintain),
            (cfg.rollup_interval, self._fold_rollups),
        ]
        due = [time.monotonic() + interval for interval, _ in tasks]
        conn: psycopg.Connection | None = None
        try:
            while not self._stopping.wait(max(0.0, min(due) - time.monotonic())):
                for i, (interval, task) in enumerate(tasks):
                    if time.monotonic() < due[i]:
                        continue
                    try:
                        if conn is None or conn.closed:
                            conn = psycopg.connect(cfg.database_url, connect_timeout=5)
                        task(conn)
                    except psycopg.Error as exc:  # logged, never fatal: the next round retries
                        log.warning("housekeeping %s failed: %s", task.__name__, exc)
                        if conn is not None:
                            with contextlib.suppress(psycopg.Error):
                                conn.close()
                        conn = None
                    due[i] = time.monotonic() + interval
        finally:
            if conn is not None:
                conn.close()

    def _sweep_silent_gateways(self, conn: psycopg.Connection) -> None:
        for mac in mark_silent_gateways_offline(conn, self.config.offline_after):
            metrics.GATEWAYS_MARKED_OFFLINE.labels("silence").inc()
            log.info("gateway %s offline: silent for more than %s", mac, self.config.offline_after)

    def _fold_rollups(self, conn: psycopg.Connection) -> None:
        from tds_core.storage.migrate import current_backend
        from tds_core.storage.rollups import refresh_rollups

        if self._backend is None:
            self._backend = current_backend(conn)
            conn.commit()
        if self._backend == "postgres":  # TimescaleDB's continuous aggregates refresh by their own policies
            refresh_rollups(conn, "postgres")

    def _maintain(self, conn: psycopg.Connection) -> None:
        from tds_core.storage.maintenance import maintain

        started = time.monotonic()
        report = maintain(conn)
        log.debug("maintenance took %.3fs (%s)", time.monotonic() - started, report)


def _saw(seen: dict[int, datetime], gateway_id: int, at: datetime) -> None:
    """Record that a gateway was heard from at `at` (last_seen only moves forward)."""
    if gateway_id not in seen or seen[gateway_id] < at:
        seen[gateway_id] = at
