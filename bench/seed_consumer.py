"""A reproduction of the seed's consumer design (seed layer 3, `mqtt_telemetry.py` + `telemetry.py`).

What it keeps from the seed, on purpose, because that is what the benchmark compares against:
- paho `on_message` does all the work on paho's network thread, one message at a time;
- per message `Gateway.objects.select_related('conta').get(mac=...)`: a SELECT joining the tenant;
- per reading `Dispositivo.objects.get(gateway=..., codigo=...)`: a SELECT per device;
- the readings inserted row by row (psycopg `executemany` of single-row INSERTs, as the issue
  describes the ORM's bulk_create), then `UPDATE gateways SET last_seen, online`, in ONE transaction
  per message (Django's autocommit + `transaction.atomic()`);
- automatic acknowledgement (paho's default: PUBACK after `on_message` returns, whatever happened) and
  exceptions swallowed and logged, so a failed write is a lost message.
Same schema as the TDS consumer (no unit/payload_raw columns: the table is the core's `readings`).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)

_GATEWAY = """
    SELECT g.id, g.tenant_id, g.mac, g.code, g.status, g.last_seen, g.online, t.id, t.code, t.name
    FROM gateways g JOIN tenants t ON t.id = g.tenant_id WHERE g.mac = %s LIMIT 21
"""
_DEVICE = """
    SELECT id, gateway_id, code, slave_id, register, data_type, word_order, scale, unit, kind
    FROM devices WHERE gateway_id = %s AND code = %s LIMIT 21
"""
_INSERT = "INSERT INTO readings (time, device_id, gateway_id, tenant_id, value) VALUES (%s, %s, %s, %s, %s)"
_TOUCH = "UPDATE gateways SET last_seen = %s, online = %s WHERE id = %s"


class SeedConsumer:
    """The seed design, runnable against the core's schema. `start()`, then `stop()`.

    on_commit(commit_wall_time, payload_timestamp_text) is called after each committed message.
    """

    def __init__(self, database_url: str, host: str, port: int, *, client_id: str = "django_consumer",
                 tls: tuple[str, str, str] | None = None,
                 on_commit: Callable[[float, str], None] | None = None) -> None:
        self._dsn = database_url
        self._on_commit = on_commit
        self._host, self._port = host, port
        self.errors = 0
        self.processed = 0
        self.subscribed = threading.Event()
        # Seed: mqtt.Client(client_id="django_consumer", protocol=mqtt.MQTTv311): clean session, auto-ack.
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        if tls is not None:
            ca, cert, key = tls
            self._client.tls_set(ca_certs=ca, certfile=cert, keyfile=key, cert_reqs=ssl.CERT_REQUIRED,
                                 tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *a: self.subscribed.set()
        self._client.on_message = self._on_message
        self._conn: psycopg.Connection | None = None

    def start(self) -> None:
        """Open the database (autocommit, like Django) and connect; paho's thread runs the callbacks."""
        self._conn = psycopg.connect(self._dsn, autocommit=True)
        self._client.connect(self._host, self._port, keepalive=60)
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect and close the database."""
        self._client.disconnect()
        self._client.loop_stop()
        if self._conn is not None:
            self._conn.close()

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        if getattr(reason, "is_failure", False):
            log.error("seed consumer: connection refused: %s", reason)
            return
        client.subscribe("tds_new/devices/+/telemetry", qos=1)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            log.info("message received: %s (%d bytes)", msg.topic, len(msg.payload))
            parts = msg.topic.split("/")
            if len(parts) != 4:
                log.error("bad topic: %s", msg.topic)
                return
            mac = parts[2]
            conn = self._conn
            assert conn is not None
            gateway = conn.execute(_GATEWAY, (mac,)).fetchone()
            if gateway is None:
                log.error("gateway not found: %s", mac)
                return
            gateway_id, tenant_id = gateway[0], gateway[1]
            try:
                payload = json.loads(msg.payload.decode("utf-8"))
            except json.JSONDecodeError as exc:
                log.error("invalid JSON: %s", exc)
                return
            self._process(conn, gateway_id, tenant_id, payload)
        except Exception:
            self.errors += 1
            log.exception("error processing message")

    def _process(self, conn: psycopg.Connection, gateway_id: int, tenant_id: int, payload: dict) -> None:
        if not all(k in payload for k in ("gateway_mac", "timestamp", "leituras")) \
                or not isinstance(payload["leituras"], list):
            raise ValueError("invalid payload")
        for item in payload["leituras"]:
            if not all(k in item for k in ("dispositivo_codigo", "valor", "unidade")):
                raise ValueError("invalid reading")
        timestamp = datetime.fromisoformat(payload["timestamp"].replace("Z", "+00:00"))
        rows = []
        for item in payload["leituras"]:
            device = conn.execute(_DEVICE, (gateway_id, item["dispositivo_codigo"])).fetchone()
            if device is None:
                log.warning("device not found: %s", item["dispositivo_codigo"])
                continue
            rows.append((timestamp, device[0], gateway_id, tenant_id, Decimal(str(item["valor"]))))
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(_INSERT, rows)
            cur.execute(_TOUCH, (datetime.now(UTC), True, gateway_id))
        self.processed += 1
        if self._on_commit is not None:
            self._on_commit(time.time(), payload["timestamp"])
        log.info("%d readings stored", len(rows))
