"""Consumer settings, with defaults that suit a single consumer on the embedded stack."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlsplit

from tds_core.protocol import DEFAULT_LIMITS, Limits


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker listens: parsed from `mqtt://host:port` or `mqtts://host:port`."""

    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """Parse a broker URL, or raise ValueError naming what is wrong."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"broker URL {url!r}: expected scheme mqtt:// or mqtts://")
        if not parts.hostname:
            raise ValueError(f"broker URL {url!r}: no host")
        try:
            port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        except ValueError:
            raise ValueError(f"broker URL {url!r}: port must be a number 1..65535") from None
        return cls(parts.hostname, port, parts.scheme == "mqtts")


@dataclass(frozen=True)
class TlsFiles:
    """Client-side mTLS material: the CA that signed the broker, and this consumer's certificate and key."""

    ca: str
    cert: str
    key: str


@dataclass(frozen=True)
class IngestConfig:
    """Everything the consumer needs; see `tds ingest --help` for the meaning of each flag."""

    database_url: str
    broker_url: str
    client_id: str = "tds-ingest"
    tls: TlsFiles | None = None
    mqtt_version: int = 4  # 4 = MQTT 3.1.1, 5 = MQTT 5
    shared_group: str | None = None  # "$share/<group>/..." so several consumers split the load
    subscribe_legacy: bool = True
    keepalive: int = 30
    # Unacknowledged messages the broker may have in flight to us (MQTT 5 Receive Maximum). Bounds memory:
    # while the database is down nothing is acked, so at most this many messages wait here.
    receive_maximum: int = 2000
    # A batch closes at batch_max_messages, or batch_max_wait seconds after its first message. While the
    # writer is busy the queue fills by itself, so batches grow with the load up to the size cap (flood
    # throughput does not suffer); the wait only sets how long a lone message lingers. 10 ms, not 50 ms:
    # at 5,000 msg/s on 2 cores p50/p99 publish->commit 14/56 ms against 56/116 ms (bench ingest
    # --batch-max-wait, maintenance off). More, smaller commits cost CPU: in paired runs with upkeep on, the
    # consumer took 49-55 % of a core against 40-43 % at 50 ms.
    batch_max_messages: int = 1000
    batch_max_wait: float = 0.01
    offline_after: timedelta = timedelta(minutes=15)  # three missed 5-minute polls
    # A gateway's last_seen is rewritten at most this often (BatchWriter.last_seen_resolution): at high
    # rates every batch would otherwise lock and update every gateway row. Capped at offline_after / 10.
    last_seen_resolution: timedelta = timedelta(seconds=1)
    liveness_interval: float = 10.0
    # Partitions ahead, rollup refresh, retention, vacuum of the rollup log.
    maintenance_interval: float = 10.0
    # Plain PostgreSQL: fold the rollup log this often. Folding 10 s of log at 5,000 msg/s took ~0.7 s of
    # one core in one burst, and ingest on the other core fell behind (p99 0.3-0.7 s); a fold a second
    # takes 60-80 ms (more in total: every active device's rows are rewritten each time).
    rollup_interval: float = 1.0
    db_retry_initial: float = 0.2
    db_retry_max: float = 10.0
    limits: Limits = field(default_factory=lambda: DEFAULT_LIMITS)
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"

    def subscriptions(self) -> list[str]:
        """Topic filters to subscribe to (with the shared-subscription prefix when configured)."""
        from tds_core.protocol import LEGACY_SUBSCRIPTION, STATUS_SUBSCRIPTION, V1_SUBSCRIPTION

        topics = [V1_SUBSCRIPTION, STATUS_SUBSCRIPTION]
        if self.subscribe_legacy:
            topics.append(LEGACY_SUBSCRIPTION)
        if self.shared_group:
            topics = [f"$share/{self.shared_group}/{t}" for t in topics]
        return topics
