"""The embedded MQTT broker (amqtt 0.12.1, MQTT 3.1.1) with TDS's identity and topic rules.

Plain mode (``tls=None``): username = client id, so persistent sessions keep QoS 1 messages for an
offline subscriber and resend unacknowledged ones on reconnect. mTLS mode: client certificate from our
CA required, CRL checked, username = certificate CN, client id must equal the CN, topic ACL applied.

Run as a process: ``python -m tds_core.broker.embedded --host 127.0.0.1 --port 0 [--tls-dir DIR]``
prints ``READY host:port`` once listening, reloads the CRL on SIGHUP or when crl.pem changes, stops on
SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from amqtt.errors import BrokerError

from tds_core.broker._amqtt_broker import DEFAULT_MAX_INFLIGHT, AccessPolicy, TdsBroker, check_max_inflight
from tds_core.broker.acl import Acl
from tds_core.broker.policy import CertificatePolicy, PlainPolicy, peer_identity
from tds_core.broker.tls import BrokerTLS, RevocationList

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_CONSUMER_CN", "EmbeddedBroker", "ThreadedBroker", "main"]

DEFAULT_CONSUMER_CN = "tds-consumer"
_SERIAL = "tds.serial"


class _SerialRecordingPolicy(CertificatePolicy):
    """CertificatePolicy that remembers each session's certificate serial (to cut revoked sessions)."""

    def identify(self, session: Any) -> None:
        super().identify(session)
        session.attributes[_SERIAL] = peer_identity(session)[1]


class EmbeddedBroker:
    """An in-process MQTT broker. ``port=0`` binds a free port; read ``port`` after ``start()``.

    With ``tls`` and no ``acl``, the ACL defaults to ``Acl.build([DEFAULT_CONSUMER_CN])``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, tls: BrokerTLS | None = None,
                 acl: Acl | None = None, *, session_expiry_interval: int | None = None,
                 max_inflight: int = DEFAULT_MAX_INFLIGHT) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port: {port} is not in 0..65535")
        self.max_inflight = check_max_inflight(max_inflight)
        self._host = host
        self._requested_port = port
        self.tls = tls
        self._ssl_context: ssl.SSLContext | None = None
        self._revocations: RevocationList | None = None
        if tls is not None:
            self.acl: Acl | None = acl if acl is not None else Acl.build([DEFAULT_CONSUMER_CN])
            self._revocations = RevocationList(tls.ca_file, tls.crl_file)
            policy: AccessPolicy = _SerialRecordingPolicy(self.acl, self._revocations)
        else:
            self.acl = acl
            policy = PlainPolicy(acl)
        self.policy = policy
        self._session_expiry = session_expiry_interval
        self._broker: TdsBroker | None = None
        self._port: int | None = None

    @property
    def host(self) -> str:
        """The address the listener is bound to."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0); only valid after start()."""
        if self._port is None:
            raise RuntimeError("EmbeddedBroker.port is known only after start()")
        return self._port

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._broker is not None

    def _make_ssl_context(self) -> ssl.SSLContext:
        assert self.tls is not None
        self._ssl_context = self.tls.server_context()
        return self._ssl_context

    async def start(self) -> None:
        """Bind and start serving; returns once the listener accepts connections."""
        if self._broker is not None:
            raise RuntimeError("EmbeddedBroker already started")
        self._warn_if_crl_lapsing()
        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self._host}:{self._requested_port}",
                                      "ssl": self.tls is not None}},
            # no plugins: no anonymous-auth plugin (it marks sessions anonymous and drops their queues),
            # no $SYS publisher; identity and topic rules come from the policy.
            "plugins": {},
            "session_expiry_interval": self._session_expiry,
        }
        broker = TdsBroker(config, policy=self.policy,
                           ssl_context_factory=self._make_ssl_context if self.tls else None,
                           max_inflight=self.max_inflight)
        await broker.start()
        self._broker = broker
        self._port = broker.bound_port()
        log.info("embedded broker listening on %s:%s (%s)", self._host, self._port,
                 "mTLS" if self.tls else "plain")

    def _warn_if_crl_lapsing(self) -> None:
        rl = self._revocations
        if rl is None or rl.next_update is None:
            return
        if rl.is_stale():
            log.error("CRL is past its nextUpdate (%s): every client will be refused; run "
                      "`tds pki crl refresh` and reload", rl.next_update)
        elif rl.is_stale(datetime.now(UTC) + timedelta(days=1)):
            log.warning("CRL lapses at %s: run `tds pki crl refresh --if-due`", rl.next_update)

    async def stop(self) -> None:
        """Close every connection and the listener. Sessions are not kept across a stop."""
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()

    def update_acl(self, acl: Acl) -> None:
        """Swap the topic rules (e.g. after the registry gained a legacy gateway); applies to the next
        publish/subscribe/delivery check. Existing subscriptions stay, but deliveries are checked."""
        self.acl = acl
        if isinstance(self.policy, PlainPolicy):
            self.policy.acl = acl

    async def reload_crl(self, *, disconnect_revoked: bool = True) -> list[str]:
        """Read the CRL file again; new connections see it at once.

        With ``disconnect_revoked`` (the default) open sessions whose certificate is now revoked are
        closed (Mosquitto keeps them open until they reconnect). Returns the client ids cut off.
        """
        if self.tls is None or self._revocations is None:
            return []
        self._revocations.reload()
        if self._ssl_context is not None:
            self.tls.reload_crl(self._ssl_context)
        cut: list[str] = []
        if disconnect_revoked and self._broker is not None:
            for client_id, (session, handler) in list(self._broker.sessions.items()):
                serial = session.attributes.get(_SERIAL)
                if (serial is not None and self._revocations.is_revoked(serial)
                        and session.transitions.state == "connected"):
                    log.warning("closing session %r: certificate %x revoked", client_id, serial)
                    await handler.handle_connection_closed()
                    cut.append(client_id)
        return cut

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()


class ThreadedBroker:
    """Runs an EmbeddedBroker on its own event loop in a background thread, for blocking callers
    (paho clients, synchronous tests and tools)::

        with ThreadedBroker(EmbeddedBroker()) as tb:
            connect_to(tb.broker.host, tb.broker.port)
    """

    def __init__(self, broker: EmbeddedBroker) -> None:
        self.broker = broker
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="embedded-broker", daemon=True)

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        """Run a coroutine on the broker's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> ThreadedBroker:
        self._thread.start()
        try:
            self.call(self.broker.start())
        except BaseException:
            self._close_loop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.call(self.broker.stop())
        finally:
            self._close_loop()

    def _close_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def _parse_legacy(values: Sequence[str]) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        mac, sep, code = value.partition("=")
        if not sep or not mac or not code:
            raise ValueError(f"--legacy {value!r}: expected MAC=GATEWAY_CODE")
        pairs.append((mac, code))
    return pairs


def add_broker_arguments(p: argparse.ArgumentParser) -> None:
    """The embedded broker's options (shared by this module's entry point and `tds broker run`)."""
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed in the READY line)")
    p.add_argument("--tls-dir", type=Path, help="PKI directory (ca.crt, crl.pem, certs/broker.crt, "
                   "private/broker.key); enables mTLS")
    p.add_argument("--ca", type=Path)
    p.add_argument("--cert", type=Path)
    p.add_argument("--key", type=Path)
    p.add_argument("--crl", type=Path)
    p.add_argument("--max-inflight", type=int, default=DEFAULT_MAX_INFLIGHT, metavar="N",
                   help="unacknowledged QoS 1 messages per client before the rest wait (Mosquitto: "
                        f"max_inflight_messages; 1..65535, default {DEFAULT_MAX_INFLIGHT})")
    p.add_argument("--consumer", action="append", default=[], metavar="CN",
                   help=f"consumer identity (repeatable; default {DEFAULT_CONSUMER_CN})")
    p.add_argument("--legacy", action="append", default=[], metavar="MAC=GATEWAY_CODE",
                   help="allow MAC to publish telemetry/GATEWAY_CODE/+/data (repeatable)")
    p.add_argument("--acl-plain", action="store_true", help="apply the ACL in plain mode too")


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m tds_core.broker.embedded``."""
    p = argparse.ArgumentParser(prog="python -m tds_core.broker.embedded",
                                description="Run the embedded MQTT broker until SIGTERM/SIGINT.")
    add_broker_arguments(p)
    p.add_argument("--log-level", default="WARNING")
    return p


def broker_from_args(args: argparse.Namespace) -> EmbeddedBroker:
    """Build an EmbeddedBroker from parsed arguments; ValueError/FileNotFoundError on bad ones."""
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port: {args.port} is not in 0..65535")
    tls: BrokerTLS | None = None
    if args.tls_dir is not None:
        tls = BrokerTLS.from_dir(args.tls_dir)
    elif any(v is not None for v in (args.ca, args.cert, args.key)):
        if None in (args.ca, args.cert, args.key):
            raise ValueError("--ca, --cert and --key go together")
        tls = BrokerTLS(args.ca, args.cert, args.key, args.crl)
    acl: Acl | None = None
    if tls is not None or args.acl_plain or args.consumer or args.legacy:
        acl = Acl.build(args.consumer or [DEFAULT_CONSUMER_CN], _parse_legacy(args.legacy))
    if tls is None and not args.acl_plain:
        acl = None
    return EmbeddedBroker(args.host, args.port, tls, acl, max_inflight=args.max_inflight)


async def serve(broker: EmbeddedBroker) -> None:
    """Start, print ``READY host:port``, reload the CRL on SIGHUP, stop on SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def _reload() -> None:
        task = loop.create_task(broker.reload_crl())
        task.add_done_callback(lambda t: t.exception() and log.error("CRL reload failed: %s", t.exception()))

    loop.add_signal_handler(signal.SIGHUP, _reload)
    watcher = None
    if broker.tls is not None and broker.tls.crl_file is not None:
        # A revocation (`tds pki revoke` rewrites crl.pem) reaches the broker without a SIGHUP.
        from tds_core.broker.crlwatch import CrlWatcher

        watcher = CrlWatcher(broker.tls.crl_file, lambda: loop.call_soon_threadsafe(_reload)).start()
    await broker.start()
    print(f"READY {broker.host}:{broker.port}", flush=True)
    try:
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.stop()
        await broker.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        broker = broker_from_args(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(broker))
    except (OSError, BrokerError) as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
