"""Publisher processes: many gateways per process, QoS 1, a fixed rate, publish time in the payload.

Each process owns a share of the gateways, one MQTT connection per gateway (mTLS with the gateway's own
certificate on Mosquitto, CN = MAC), and drives all of them from ONE thread with a selector (paho's
external-loop API) instead of a thread per client. A token bucket releases messages at the process's
share of the target rate, round-robin over its gateways. The v1 payload's `timestamp` is the publish wall
time with microseconds (strictly increasing per gateway, so (device, time) stays unique); the consumer
side subtracts it from the commit time. Every PUBACK is recorded so the bench can check that each
acknowledged reading reached the database exactly once.
"""

from __future__ import annotations

import logging
import os
import selectors
import ssl
import time
from array import array
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublisherJob:
    """What one publisher process does. Times are wall-clock (time.time()) so processes agree."""

    index: int
    host: str
    port: int
    gateways: list[str]  # MACs
    devices: list[str]  # device codes (same on every gateway)
    rate: float  # messages/s for this process
    run_seconds: float | None = None  # publish for this long (rate mode)
    count: int | None = None  # total messages for this process (flood mode)
    tls: dict[str, tuple[str, str, str]] | None = None  # mac -> (ca, cert, key); None = plain
    mqtt_version: int = 4
    inflight: int = 100  # per connection
    drain_timeout: float = 60.0
    impl: str = "paho"  # or "raw" (bench/rawmqtt.py: same packets, a fraction of the CPU)


@dataclass
class PublisherResult:
    """What a publisher process did; `acked` maps MAC -> publish times (µs since epoch) that got a PUBACK."""

    index: int
    published: int = 0
    acked_count: int = 0
    first_publish: float = 0.0
    last_publish: float = 0.0
    acked: dict[str, array] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    max_lag_s: float = 0.0  # how far the token bucket fell behind schedule (CPU starvation)
    cpu_s: float = 0.0


class _Gateway:
    __slots__ = ("acked", "client", "connected", "last_us", "mac", "pending", "prefix", "seq")

    def __init__(self, mac: str, client: mqtt.Client, prefix: bytes) -> None:
        self.mac = mac
        self.client = client
        self.prefix = prefix
        self.pending: dict[int, int] = {}
        self.acked = array("q")
        self.last_us = 0
        self.seq = 0
        self.connected = False


def _topic(mac: str) -> str:
    return f"tds_new/devices/{mac}/telemetry"


class _Stamp:
    """Fast ISO-8601 UTC rendering of integer microseconds: the seconds part is cached."""

    def __init__(self) -> None:
        self._sec = -1
        self._text = b""

    def __call__(self, us: int) -> bytes:
        sec, frac = divmod(us, 1_000_000)
        if sec != self._sec:
            self._sec = sec
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)).encode()
        return b"%s.%06dZ" % (self._text, frac)


def build_payload(prefix: bytes, stamp: bytes, devices_json: list[bytes], seq: int) -> bytes:
    """A v1 payload equal in shape to `encode_v1`'s (compact JSON, fixed key order)."""
    readings = b",".join(b'{"dispositivo_codigo":"%s","valor":%d.%d,"unidade":"kWh"}' % (d, seq, n)
                         for n, d in enumerate(devices_json))
    return b'%s"timestamp":"%s","leituras":[%s]}' % (prefix, stamp, readings)


def run_publisher(job: PublisherJob, ctrl=None) -> PublisherResult:
    """Connect every gateway, publish on schedule, wait for the PUBACKs; return the accounting.

    With `ctrl` (a Pipe end), send "ready" once every gateway is connected and receive the wall time of the
    first publish, so all processes start together; without it, start at once.
    """
    if job.rate <= 0:
        raise ValueError(f"rate: {job.rate} messages/s; expected > 0")
    result = PublisherResult(job.index)
    cpu0 = os.times()
    protocol = mqtt.MQTTv5 if job.mqtt_version == 5 else mqtt.MQTTv311
    gateways: list[_Gateway] = []
    sel = selectors.DefaultSelector()

    def on_connect(client, gw, flags, reason, props) -> None:
        if getattr(reason, "is_failure", False):
            result.errors.append(f"{gw.mac}: connect refused: {reason}")
        else:
            gw.connected = True

    def on_publish(client, gw, mid, reason, props) -> None:
        us = gw.pending.pop(mid, None)
        if us is not None and not getattr(reason, "is_failure", False):
            gw.acked.append(us)

    def on_disconnect(client, gw, flags, reason, props) -> None:
        if not stopping:
            result.errors.append(f"{gw.mac}: disconnected: {reason}")
        gw.connected = False

    stopping = False
    for mac in job.gateways:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=mac, protocol=protocol,
                             **({"clean_session": True} if protocol == mqtt.MQTTv311 else {}))
        client.max_inflight_messages_set(job.inflight)
        client.max_queued_messages_set(0)
        if job.tls is not None:
            ca, cert, key = job.tls[mac]
            client.tls_set(ca_certs=ca, certfile=cert, keyfile=key, cert_reqs=ssl.CERT_REQUIRED,
                           tls_version=ssl.PROTOCOL_TLS_CLIENT)
        prefix = b'{"gateway_mac":"%s",' % mac.encode()
        gw = _Gateway(mac, client, prefix)
        client.user_data_set(gw)
        client.on_connect = on_connect
        client.on_publish = on_publish
        client.on_disconnect = on_disconnect
        client.connect(job.host, job.port, keepalive=60)
        sock = client.socket()
        sel.register(sock, selectors.EVENT_READ, gw)
        gateways.append(gw)

    watching: set[_Gateway] = set()  # gateways registered for writability (paho holds unsent bytes)

    def want_write(gw: _Gateway) -> None:
        # A publish that did not fit in the socket buffer waits in paho: ask for writability. Only
        # gateways that just published are checked, not the whole share (that scan cost ~100 µs/message).
        if gw not in watching and gw.client.want_write():
            watching.add(gw)
            sel.modify(gw.client.socket(), selectors.EVENT_READ | selectors.EVENT_WRITE, gw)

    def pump(timeout: float) -> None:
        for key, mask in sel.select(timeout):
            gw = key.data
            if mask & selectors.EVENT_READ:
                gw.client.loop_read()
            if mask & selectors.EVENT_WRITE:
                gw.client.loop_write()
        for gw in [g for g in watching if not g.client.want_write()]:
            watching.discard(gw)
            sock = gw.client.socket()
            if sock is not None:
                sel.modify(sock, selectors.EVENT_READ, gw)

    deadline = time.monotonic() + 30
    while not all(g.connected for g in gateways):
        if result.errors or time.monotonic() > deadline:
            result.errors.append(f"publisher {job.index}: not every gateway connected")
            _finish(gateways, sel, result, cpu0)
            return result
        pump(0.05)

    devices_json = [d.encode() for d in job.devices]
    stamp = _Stamp()
    interval = 1.0 / job.rate
    n_gw = len(gateways)
    start_at = time.time()
    if ctrl is not None:
        ctrl.send("ready")
        while not ctrl.poll(0):  # keep the connections serviced while the others connect
            pump(0.02)
        start_at = ctrl.recv()
    while time.time() < start_at:
        pump(min(0.02, max(0.0, start_at - time.time())))
    stop_at = start_at + job.run_seconds if job.run_seconds is not None else None
    due = start_at
    next_misc = time.monotonic() + 1.0
    i = 0
    result.first_publish = time.time()
    while True:
        now = time.time()
        if job.count is not None and i >= job.count:
            break
        if stop_at is not None and due >= stop_at:
            break
        burst = 0
        while due <= now and burst < 200:  # bounded so PUBACKs are read between bursts
            if job.count is not None and i >= job.count:
                break
            gw = gateways[i % n_gw]
            i += 1
            us = int(time.time() * 1_000_000)
            if us <= gw.last_us:
                us = gw.last_us + 1
            gw.last_us = us
            gw.seq += 1
            info = gw.client.publish(_topic(gw.mac), build_payload(gw.prefix, stamp(us), devices_json, gw.seq),
                                     qos=1)
            gw.pending[info.mid] = us
            want_write(gw)
            result.published += 1
            due += interval
            burst += 1
        lag = now - due
        if lag > result.max_lag_s:
            result.max_lag_s = lag
        # Sleep at least ~2 ms: waking per message at thousands/s costs more CPU than the publishing.
        pump(min(0.05, max(0.002, due - time.time())))
        if time.monotonic() >= next_misc:
            for gw in gateways:
                gw.client.loop_misc()
            next_misc = time.monotonic() + 1.0
    result.last_publish = time.time()
    deadline = time.monotonic() + job.drain_timeout
    while any(g.pending for g in gateways) and time.monotonic() < deadline:
        pump(0.05)
    stopping = True
    unacked = sum(len(g.pending) for g in gateways)
    if unacked:
        result.errors.append(f"publisher {job.index}: {unacked} publishes without PUBACK after "
                             f"{job.drain_timeout:.0f} s")
    _finish(gateways, sel, result, cpu0)
    return result


def _finish(gateways: list[_Gateway], sel: selectors.BaseSelector, result: PublisherResult,
            cpu0: os.times_result) -> None:
    for gw in gateways:
        result.acked[gw.mac] = gw.acked
        result.acked_count += len(gw.acked)
        try:
            gw.client.disconnect()
            gw.client.loop_write()
        except Exception:  # best effort: the process ends right after
            pass
    sel.close()
    cpu1 = os.times()
    result.cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)


def run_raw_publisher(job: PublisherJob, ctrl=None) -> PublisherResult:
    """As `run_publisher`, with `bench.rawmqtt.RawPublisher` connections instead of paho clients."""
    from bench.rawmqtt import RawPublisher, tls_context

    if job.rate <= 0:
        raise ValueError(f"rate: {job.rate} messages/s; expected > 0")
    if job.mqtt_version != 4:
        raise ValueError("the raw publisher speaks MQTT 3.1.1 only (mqtt_version 4)")
    result = PublisherResult(job.index)
    cpu0 = os.times()
    sel = selectors.DefaultSelector()
    conns: list[tuple[RawPublisher, _Gateway]] = []
    try:
        for mac in job.gateways:
            ctx = tls_context(*job.tls[mac]) if job.tls is not None else None
            conn = RawPublisher(job.host, job.port, mac, ctx)
            gw = _Gateway(mac, None, b'{"gateway_mac":"%s",' % mac.encode())  # type: ignore[arg-type]
            sel.register(conn.sock, selectors.EVENT_READ, (conn, gw))
            conns.append((conn, gw))
    except (OSError, RuntimeError) as exc:
        result.errors.append(f"publisher {job.index}: connect failed: {exc}")
        for conn, _ in conns:
            conn.close()
        return result
    watching: set[int] = set()

    def pump(timeout: float) -> None:
        for key, mask in sel.select(timeout):
            conn, gw = key.data
            if mask & selectors.EVENT_READ:
                try:
                    acks = conn.read_acks()
                except ConnectionError as exc:
                    result.errors.append(f"{gw.mac}: {exc}")
                    sel.unregister(conn.sock)
                    continue
                for mid in acks:
                    us = gw.pending.pop(mid, None)
                    if us is not None:
                        gw.acked.append(us)
            if mask & selectors.EVENT_WRITE:
                conn.flush()
        for idx in list(watching):
            conn, gw = conns[idx]
            if not conn.want_write:
                watching.discard(idx)
                sel.modify(conn.sock, selectors.EVENT_READ, (conn, gw))

    devices_json = [d.encode() for d in job.devices]
    topics = [_topic(gw.mac).encode() for _, gw in conns]
    stamp = _Stamp()
    interval = 1.0 / job.rate
    n_gw = len(conns)
    start_at = time.time()
    if ctrl is not None:
        ctrl.send("ready")
        while not ctrl.poll(0):
            pump(0.02)
        start_at = ctrl.recv()
    while time.time() < start_at:
        pump(min(0.02, max(0.0, start_at - time.time())))
    stop_at = start_at + job.run_seconds if job.run_seconds is not None else None
    due = start_at
    i = 0
    result.first_publish = time.time()
    while True:
        now = time.time()
        if (job.count is not None and i >= job.count) or (stop_at is not None and due >= stop_at):
            break
        touched: set[int] = set()
        while due <= now and len(touched) < 200:
            if job.count is not None and i >= job.count:
                break
            idx = i % n_gw
            conn, gw = conns[idx]
            i += 1
            us = int(time.time() * 1_000_000)
            if us <= gw.last_us:
                us = gw.last_us + 1
            gw.last_us = us
            gw.seq += 1
            mid = conn.publish(topics[idx], build_payload(gw.prefix, stamp(us), devices_json, gw.seq))
            gw.pending[mid] = us
            touched.add(idx)
            result.published += 1
            due += interval
        for idx in touched:
            conn, gw = conns[idx]
            conn.flush()
            if conn.want_write and idx not in watching:
                watching.add(idx)
                sel.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, (conn, gw))
        result.max_lag_s = max(result.max_lag_s, now - due)
        pump(min(0.05, max(0.002, due - time.time())))
    result.last_publish = time.time()
    deadline = time.monotonic() + job.drain_timeout
    while any(gw.pending for _, gw in conns) and time.monotonic() < deadline and not result.errors:
        pump(0.05)
    unacked = sum(len(gw.pending) for _, gw in conns)
    if unacked:
        result.errors.append(f"publisher {job.index}: {unacked} publishes without PUBACK")
    for conn, gw in conns:
        result.acked[gw.mac] = gw.acked
        result.acked_count += len(gw.acked)
        conn.close()
    sel.close()
    cpu1 = os.times()
    result.cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return result


def publisher_main(job: PublisherJob, out) -> None:
    """Entry point of a publisher process: handshake and result through `out` (a duplex Pipe end)."""
    try:
        run = run_raw_publisher if job.impl == "raw" else run_publisher
        out.send(run(job, out))
    except BaseException as exc:  # report, never hang the parent
        out.send(PublisherResult(job.index, errors=[f"publisher {job.index} crashed: {exc!r}"]))
        raise
    finally:
        out.close()
