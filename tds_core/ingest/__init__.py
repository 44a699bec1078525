"""Ingest: the MQTT consumer.

Subscribes (QoS 1, persistent session, optionally a shared subscription), decodes and validates each
message, checks identity against the registry cache, batches by size and time, writes with one COPY-based
transaction, and only then acknowledges (manual PUBACK). Rejected messages go to the dead-letter table in
the same transaction. While the database is down it stops acknowledging, so the broker stops sending.
"""

from tds_core.ingest.config import IngestConfig
from tds_core.ingest.consumer import Consumer
from tds_core.ingest.pipeline import Accepted, InboundMessage, process_message

__all__ = ["Accepted", "Consumer", "InboundMessage", "IngestConfig", "process_message"]
