"""`tds ingest`: run the consumer until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
from dataclasses import replace

from tds_core import settings
from tds_core.ingest.config import BrokerAddress, IngestConfig, TlsFiles
from tds_core.protocol import DEFAULT_LIMITS
from tds_core.storage.durations import parse_duration

log = logging.getLogger(__name__)


def add_consumer_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by `tds ingest` and `tds up`."""
    g = parser.add_argument_group("consumer")
    g.add_argument("--client-id", default="tds-ingest", help="MQTT client id; keep it stable (persistent session)")
    g.add_argument("--ca", help="CA certificate that signed the broker (mqtts://)")
    g.add_argument("--cert", help="this consumer's certificate (mqtts://)")
    g.add_argument("--key", help="this consumer's private key (mqtts://)")
    g.add_argument("--mqtt-version", choices=("3.1.1", "5"), default="3.1.1")
    g.add_argument("--shared-group", help="subscribe as $share/GROUP/... so several consumers split the load")
    g.add_argument("--no-legacy", action="store_true", help="do not subscribe to telemetry/+/+/data")
    d = IngestConfig("", "")
    g.add_argument("--batch-size", type=int, default=d.batch_max_messages,
                   help=f"messages per transaction at most (default {d.batch_max_messages})")
    g.add_argument("--batch-wait-ms", type=float, default=d.batch_max_wait * 1000,
                   help=f"wait at most this long after a batch's first message (default {d.batch_max_wait * 1000:g})")
    g.add_argument("--receive-maximum", type=int, default=2000,
                   help="unacknowledged messages in flight from the broker (MQTT 5; default 2000)")
    g.add_argument("--offline-after", default="15m", help="mark a gateway offline after this silence (15m)")
    g.add_argument("--max-future-skew", default="5m", help="refuse timestamps further ahead than this (5m)")
    g.add_argument("--max-age", default="400d", help="refuse timestamps older than this (400d)")
    g.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on 127.0.0.1:PORT")


def config_from_args(args: argparse.Namespace, database_url: str, broker_url: str) -> IngestConfig:
    """Build and check an IngestConfig; ValueError names the bad flag."""
    address = BrokerAddress.parse(broker_url)
    tls = None
    if address.tls:
        if not (args.ca and args.cert and args.key):
            raise ValueError(f"{broker_url} is TLS: --ca, --cert and --key are required")
        tls = TlsFiles(args.ca, args.cert, args.key)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size: expected a positive number, got {args.batch_size}")
    if args.batch_wait_ms < 0:
        raise ValueError(f"--batch-wait-ms: expected 0 or more, got {args.batch_wait_ms}")
    if not 1 <= args.receive_maximum <= 65535:
        raise ValueError(f"--receive-maximum: expected 1..65535, got {args.receive_maximum}")
    limits = replace(
        DEFAULT_LIMITS,
        max_future_skew=parse_duration(args.max_future_skew, name="--max-future-skew"),
        max_age=parse_duration(args.max_age, name="--max-age"),
    )
    return IngestConfig(
        database_url=database_url,
        broker_url=broker_url,
        client_id=args.client_id,
        tls=tls,
        mqtt_version=5 if args.mqtt_version == "5" else 4,
        shared_group=args.shared_group,
        subscribe_legacy=not args.no_legacy,
        receive_maximum=args.receive_maximum,
        batch_max_messages=args.batch_size,
        batch_max_wait=args.batch_wait_ms / 1000.0,
        offline_after=parse_duration(args.offline_after, name="--offline-after"),
        limits=limits,
        metrics_port=args.metrics_port,
    )


def run_until_signalled(consumer) -> None:
    """Run a consumer until SIGINT/SIGTERM, then stop it gracefully."""
    def _stop(signum: int, frame: object) -> None:
        log.info("signal %d: stopping", signum)
        consumer.request_stop()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    consumer.run()


def _handle(args: argparse.Namespace) -> int:
    from tds_core.ingest.consumer import Consumer

    broker_url = settings.broker_url(args.broker_url)
    if broker_url is None:
        raise ValueError("no broker: pass --broker-url mqtt://HOST:PORT or set TDS_BROKER_URL (or use `tds up`)")
    config = config_from_args(args, settings.database_url(args.database_url), broker_url)
    run_until_signalled(Consumer(config))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `tds ingest`."""
    p = subparsers.add_parser("ingest", help="run the MQTT consumer (MQTT -> database)")
    p.add_argument("--database-url", "--dsn", dest="database_url",
                   help="PostgreSQL DSN (default $TDS_DATABASE_URL, else the embedded one)")
    p.add_argument("--broker-url", help="mqtt://HOST:PORT or mqtts://HOST:PORT (default $TDS_BROKER_URL)")
    add_consumer_arguments(p)
    p.set_defaults(handler=_handle)
