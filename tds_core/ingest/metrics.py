"""Prometheus metrics of the consumer (module-level: one set per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_IN = Counter("tds_ingest_messages_received_total", "MQTT messages received", ["kind"])
MESSAGES_STORED = Counter("tds_ingest_messages_stored_total", "Telemetry messages whose readings were committed")
READINGS_STORED = Counter("tds_ingest_readings_stored_total", "Readings inserted (new rows)")
READINGS_DUPLICATE = Counter(
    "tds_ingest_readings_duplicate_total", "Readings already stored (broker redelivery), skipped"
)
MESSAGES_REJECTED = Counter("tds_ingest_messages_rejected_total", "Messages dead-lettered", ["reason"])
BATCH_SIZE = Histogram(
    "tds_ingest_batch_messages", "Messages per committed batch", buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)
)
COMMIT_SECONDS = Histogram(
    "tds_ingest_commit_seconds",
    "Duration of one batch transaction",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
ACK_LATENCY = Histogram(
    "tds_ingest_receive_to_ack_seconds",
    "From message receipt to its PUBACK being queued",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
)
QUEUE_DEPTH = Gauge("tds_ingest_queue_depth", "Messages received and not yet acknowledged")
DB_ERRORS = Counter("tds_ingest_database_errors_total", "Failed write attempts (retried)")
DB_UP = Gauge("tds_ingest_database_up", "1 when the last write succeeded, 0 while retrying")
BROKER_CONNECTED = Gauge("tds_ingest_broker_connected", "1 while connected to the broker")
GATEWAYS_MARKED_OFFLINE = Counter("tds_ingest_gateways_marked_offline_total", "Gateways set offline", ["cause"])
