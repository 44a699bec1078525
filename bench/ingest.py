"""End-to-end ingest benchmark: the TDS consumer against the seed's design, through a real broker.

    python -m bench ingest [--rates 5000] [--duration 30] [--broker mosquitto|embedded] [--dsn URL] ...

One run: a private PostgreSQL (embedded unless --dsn), migrated, with a fleet; a private Mosquitto with mTLS
(require_certificate, use_identity_as_username, the generated ACL, raised in-flight/queue limits) or the
embedded amqtt broker; then
  1. the TDS consumer in this process, publishers in separate processes at each fixed rate (warm-up, then
     the measured window): achieved msg/s and readings/s, publish->commit latency p50/p95/p99;
  2. the seed-design consumer (bench/seed_consumer.py) at its maximum: a flood of messages, drain timed;
  3. the batch writer alone (bench/bench_writer.py);
and for each consumer a loss check: every PUBACKed reading is in the database exactly once. Prints a table
and writes reports/bench/<timestamp>.json. Latency = commit wall time - publish wall time (the publisher
writes its publish time into the payload `timestamp`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import multiprocessing as mp
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from bench.env import CONSUMER_CN, SEED_CONSUMER_CN, BenchEnv, BenchSetupError
from bench.publisher import PublisherJob, PublisherResult, publisher_main
from bench.stats import CpuMeter, TimestampParser, payload_timestamp, percentiles
from tds_core.ingest.config import IngestConfig

# The consumer's own defaults: the bench measures what `tds ingest` runs unless told otherwise.
_CONSUMER = {f.name: f.default for f in fields(IngestConfig)}

log = logging.getLogger(__name__)

DESIGNS = ("tds", "seed", "writer")
TARGET_MSG_S = 5000
TARGET_P99_MS = 150.0
TARGET_RATIO = 10.0
TARGET_WRITER = 200_000


@dataclass
class IngestBenchConfig:
    """Every knob of one bench run (see `python -m bench ingest --help`)."""

    rates: list[float] = field(default_factory=lambda: [5000.0])
    duration: float = 30.0
    warmup: float = 5.0
    # Publishers keep going this long after the measured window: collecting their results (pickled lists
    # of acked ids) holds the bench process's GIL, which the in-process consumer shares, so it must not
    # happen while messages of the window are still being committed.
    cooldown: float = 2.0
    gateways: int = 200
    devices: int = 8
    publishers: int = 2
    publisher_impl: str = "paho"  # or "raw" (bench/rawmqtt.py)
    broker: str = "mosquitto"
    dsn: str | None = None
    backend: str = "postgres"  # or "timescale": needs `dsn` of a server with the extension
    designs: list[str] = field(default_factory=lambda: list(DESIGNS))
    tds_flood_messages: int = 30_000  # 0 = skip the TDS consumer's flood (maximum) measurement
    seed_messages: int = 10_000
    seed_rate: float = 3000.0
    writer_rows: int = 1_000_000  # 400k rows took ~1.6 s: one busy second of the VM moved it 194-257k
    writer_batch: int = 4000
    batch_max_messages: int = _CONSUMER["batch_max_messages"]
    batch_max_wait: float = _CONSUMER["batch_max_wait"]
    receive_maximum: int = _CONSUMER["receive_maximum"]
    maintenance_interval: float = _CONSUMER["maintenance_interval"]
    rollup_interval: float = _CONSUMER["rollup_interval"]
    mqtt_version: int = 4
    max_inflight: int = 1000
    drain_timeout: float = 120.0
    report_dir: Path | None = Path("reports/bench")

    def __post_init__(self) -> None:
        if bad := [d for d in self.designs if d not in DESIGNS]:
            raise ValueError(f"designs: {bad} not in {DESIGNS}")
        if self.publishers < 1 or self.publishers > self.gateways:
            raise ValueError(f"publishers: {self.publishers}; expected 1..gateways ({self.gateways})")
        if any(r <= 0 for r in self.rates):
            raise ValueError(f"rates: {self.rates}; every rate must be > 0 messages/s")
        if self.publisher_impl not in ("paho", "raw"):
            raise ValueError(f"publisher_impl: {self.publisher_impl!r}; expected 'paho' or 'raw'")
        if self.duration <= 0 or self.warmup < 0:
            raise ValueError(f"duration {self.duration} must be > 0 and warmup {self.warmup} >= 0")


# ---------------------------------------------------------------------------- publishers


class PublisherPool:
    """Publisher processes over disjoint shares of the fleet; started together after all have connected."""

    def __init__(self, env: BenchEnv, cfg: IngestBenchConfig, *, rate: float, run_seconds: float | None = None,
                 count: int | None = None) -> None:
        broker = env.broker_info
        assert broker is not None
        ctx = mp.get_context("spawn")  # no fork of a process with consumer threads and open sockets
        self.procs: list = []
        self.pipes: list = []
        n = cfg.publishers
        for i in range(n):
            macs = env.macs[i::n]
            tls = None
            if broker.tls:
                tls = {}
                for mac in macs:
                    t = broker.client_tls(mac)
                    assert t is not None
                    tls[mac] = (t.ca, t.cert, t.key)
            share_count = None if count is None else count // n + (1 if i < count % n else 0)
            job = PublisherJob(i, broker.host, broker.port, macs, env.codes, rate / n, run_seconds=run_seconds,
                               count=share_count, tls=tls, mqtt_version=4, drain_timeout=cfg.drain_timeout,
                               impl=cfg.publisher_impl)
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=publisher_main, args=(job, child), name=f"tds-bench-pub-{i}", daemon=True)
            proc.start()
            child.close()
            self.procs.append(proc)
            self.pipes.append(parent)
        self.results: list[PublisherResult] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def go(self, lead: float = 0.3) -> float:
        """Wait until every process is connected, then start them all at the same wall time (returned)."""
        for pipe in self.pipes:
            if not pipe.poll(120):
                raise BenchSetupError("a publisher process did not connect in 120 s")
            msg = pipe.recv()
            if isinstance(msg, PublisherResult):
                raise BenchSetupError("; ".join(msg.errors) or "publisher failed")
        start_at = time.time() + lead
        for pipe in self.pipes:
            pipe.send(start_at)
        return start_at

    def collect(self, timeout: float) -> list[PublisherResult]:
        """The results of every process (after their publishing and PUBACK drain)."""
        deadline = time.monotonic() + timeout
        for pipe, proc in zip(self.pipes, self.procs, strict=True):
            if pipe.poll(max(0.1, deadline - time.monotonic())):
                self.results.append(pipe.recv())
            else:
                self.results.append(PublisherResult(-1, errors=[f"{proc.name}: no result in {timeout:.0f} s"]))
            proc.join(5)
            if proc.is_alive():
                proc.kill()
        return self.results


def _publisher_summary(results: list[PublisherResult]) -> dict:
    return {
        "published": sum(r.published for r in results),
        "acked": sum(r.acked_count for r in results),
        "errors": [e for r in results for e in r.errors][:20],
        "max_schedule_lag_s": round(max((r.max_lag_s for r in results), default=0.0), 3),
        "first_publish": min((r.first_publish for r in results if r.first_publish), default=0.0),
        "last_publish": max((r.last_publish for r in results), default=0.0),
    }


def _acked(results: list[PublisherResult]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for r in results:
        for mac, times in r.acked.items():
            out.setdefault(mac, []).extend(times)
    return out


# ---------------------------------------------------------------------------- verification


def verify(dsn: str, acked: dict[str, list[int]], devices: int) -> dict:
    """Every PUBACKed message has all its readings in the database, once: counts of what is not so."""
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TEMP TABLE bench_acked (mac text, us bigint)")
        with conn.cursor() as cur, cur.copy("COPY bench_acked (mac, us) FROM STDIN") as copy:
            for mac, times in acked.items():
                for us in times:
                    copy.write_row((mac, us))
        row = conn.execute(
            """
            WITH a AS (
                SELECT g.id AS gateway_id, timestamptz 'epoch' + b.us * interval '1 microsecond' AS time
                FROM bench_acked b JOIN gateways g ON g.mac = b.mac
            ), r AS (SELECT gateway_id, time, count(*) AS n FROM readings GROUP BY gateway_id, time)
            SELECT count(*) FILTER (WHERE a.time IS NOT NULL AND r.n IS NULL),
                   count(*) FILTER (WHERE a.time IS NOT NULL AND r.n IS NOT NULL AND r.n <> %s),
                   count(*) FILTER (WHERE a.time IS NULL)
            FROM a FULL JOIN r USING (gateway_id, time)
            """,
            (devices,),
        ).fetchone()
        total, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (device_id, time)) FROM readings"
        ).fetchone()  # type: ignore[misc]
        conn.rollback()
    missing, partial, extra = row  # type: ignore[misc]
    acked_messages = sum(len(t) for t in acked.values())
    return {
        "acked_messages": acked_messages,
        "expected_rows": acked_messages * devices,
        "rows": total,
        "distinct_rows": distinct,
        "duplicates": total - distinct,
        "missing_messages": missing,
        "partial_messages": partial,
        "unacked_but_stored_messages": extra,  # published, PUBACK not seen (in flight at the end): not loss
        "lost_messages": missing + partial,
        "ok": missing == 0 and partial == 0 and total == distinct,
    }


# ---------------------------------------------------------------------------- the TDS consumer


class _Commits:
    """The `on_commit` hook: keeps (commit time, publish timestamps) cheaply; parsed after the run."""

    def __init__(self) -> None:
        self.records: list[tuple[float, list[bytes], int]] = []
        self.messages = 0
        self.dead_letters = 0
        self.lock = threading.Lock()

    def __call__(self, info) -> None:
        stamps = [payload_timestamp(m.payload) for m in info.messages]
        self.records.append((info.committed_mono, stamps, info.result.inserted))
        self.messages += len(info.messages)
        self.dead_letters += len(info.dead_letters)


def _clear_session(env: BenchEnv, cn: str) -> None:
    """Connect once with a clean session as `cn`: the broker forgets the consumer's persistent session,
    so it does not queue the next phase's messages for a consumer that is gone."""
    broker = env.broker_info
    assert broker is not None
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cn, protocol=mqtt.MQTTv311, clean_session=True)
    tls = broker.client_tls(cn)
    if tls is not None:
        client.tls_set(ca_certs=tls.ca, certfile=tls.cert, keyfile=tls.key)
    done = threading.Event()
    client.on_connect = lambda *a: done.set()
    with contextlib.suppress(OSError):
        client.connect(broker.host, broker.port)
        client.loop_start()
        done.wait(10)
        client.disconnect()
        client.loop_stop()


def _cpu_groups(env: BenchEnv, publisher_pids: list[int]) -> dict[str, list[int]]:
    groups = {"consumer": [os.getpid()], "publishers": publisher_pids}
    if env.broker_info and env.broker_info.pid:
        groups["broker"] = [env.broker_info.pid]
    if env.postgres_pid:
        groups["postgres"] = [env.postgres_pid]
    return groups


def _cpu_budget(cpu: dict[str, float], threads: dict[str, float], messages: int, seconds: float) -> dict:
    """CPU µs per message per component, and the rate they would allow with the whole machine to themselves.

    Load-independent (mostly): on a shared machine the throughput measured is what the scheduler left us,
    but the CPU each message costs is about the same. The projection takes the tighter of two bounds:
    all cores shared by every component, and each consumer thread (a thread uses at most one core).
    """
    if not messages:
        return {}
    per_msg = {k: round(v / 100.0 * seconds / messages * 1e6, 1) for k, v in cpu.items()}
    thread_us = {k: round(v / 100.0 * seconds / messages * 1e6, 1) for k, v in threads.items() if v > 1.0}
    bounds = [(os.cpu_count() or 1) * 1e6 / sum(per_msg.values())] if sum(per_msg.values()) else []
    bounds += [1e6 / us for us in thread_us.values() if us > 0]
    return {
        "cpu_us_per_msg": per_msg,
        "consumer_thread_us_per_msg": thread_us,
        "projected_max_msg_s": round(min(bounds)) if bounds else None,
    }


def _sleep_until(wall: float) -> None:
    while (left := wall - time.time()) > 0:
        time.sleep(min(left, 0.5))


def latency_timeline(per_second: dict[int, list[float]]) -> list[dict]:
    """Per second of publish time in the window: messages, p50/p99/max publish->commit latency (ms). Shows
    whether a tail comes from steady queueing or from a stall (a few seconds with a huge max)."""
    out = []
    for second in sorted(per_second):
        pct = percentiles(per_second[second])
        out.append({"s": second, "messages": len(per_second[second]),
                    **{k: round(pct[k], 1) for k in ("p50", "p99", "max") if pct.get(k) is not None}})
    return out


def timeline_summary(result: dict) -> str:
    """One line on how the latency tail is spread over the seconds of a fixed-rate run."""
    seconds = result["latency_timeline"]
    over = [x for x in seconds if x.get("p99", 0) > TARGET_P99_MS]
    worst = max(seconds, key=lambda x: x.get("max", 0))
    return (f"tds at {result['offered_msg_s']:,.0f} msg/s: {len(over)} of {len(seconds)} seconds with p99 over "
            f"{TARGET_P99_MS:g} ms; worst second +{worst['s']}s (max {worst.get('max', 0):,.0f} ms)")


def run_tds(env: BenchEnv, cfg: IngestBenchConfig, rate: float, flood: int | None = None) -> dict:
    """The TDS consumer at a fixed offered rate: warm-up, measured window, drain, loss check.

    With `flood` (a message count) it is measured like the seed design instead: that many messages as fast
    as the publishers go (`rate` is then their target), throughput = messages / (last commit - first publish).
    """
    from tds_core.ingest.config import TlsFiles
    from tds_core.ingest.consumer import Consumer

    broker = env.broker_info
    assert broker is not None
    env.reset_readings()
    tls = broker.client_tls(CONSUMER_CN)
    config = IngestConfig(
        database_url=env.db_dsn, broker_url=broker.url, client_id=CONSUMER_CN,
        tls=TlsFiles(tls.ca, tls.cert, tls.key) if tls else None, mqtt_version=cfg.mqtt_version,
        receive_maximum=cfg.receive_maximum, batch_max_messages=cfg.batch_max_messages,
        batch_max_wait=cfg.batch_max_wait, maintenance_interval=cfg.maintenance_interval,
        rollup_interval=cfg.rollup_interval, subscribe_legacy=False,
    )
    commits = _Commits()
    consumer = Consumer(config, on_commit=commits)
    consumer.start()
    try:
        if not consumer.subscribed.wait(30):
            raise BenchSetupError(f"TDS consumer did not subscribe to {broker.url} in 30 s")
        mono_to_wall = time.time() - time.monotonic()
        if flood is None:
            pool = PublisherPool(env, cfg, rate=rate, run_seconds=cfg.warmup + cfg.duration + cfg.cooldown)
        else:
            pool = PublisherPool(env, cfg, rate=rate, count=flood)
        start_at = pool.go()
        window = (start_at + cfg.warmup, start_at + cfg.warmup + cfg.duration)
        meter = CpuMeter(_cpu_groups(env, pool.pids))
        if flood is None:
            _sleep_until(window[0])
            meter.start()
            _sleep_until(window[1])
            cpu = meter.stop()
        else:
            meter.start()
        results = pool.collect(cfg.drain_timeout + 60)
        pubs = _publisher_summary(results)
        deadline = time.monotonic() + cfg.drain_timeout
        while commits.messages < pubs["acked"] and time.monotonic() < deadline:
            time.sleep(0.05)
        if flood is not None:
            cpu = meter.stop()
            cpu["publishers"] = round(100.0 * sum(r.cpu_s for r in results) / max(1e-9, time.time() - start_at), 1)
            last = max((mono for mono, _, _ in commits.records), default=time.monotonic()) + mono_to_wall
            window = (start_at, max(last, start_at + 1e-3) + 1e-6)
    finally:
        consumer.stop()
        _clear_session(env, CONSUMER_CN)
    loss = verify(env.db_dsn, _acked(results), env.devices)

    parse = TimestampParser()
    latencies: list[float] = []
    per_second: dict[int, list[float]] = {}
    in_window = readings_in_window = 0
    last_commit = 0.0
    for mono, stamps, inserted in commits.records:
        wall = mono + mono_to_wall
        last_commit = max(last_commit, wall)
        if window[0] <= wall < window[1]:
            in_window += len(stamps)
            readings_in_window += inserted
        for s in stamps:
            published = parse(s)
            if window[0] <= published < window[1]:
                latency = (wall - published) * 1000.0
                latencies.append(latency)
                per_second.setdefault(int(published - window[0]), []).append(latency)
    lat = percentiles(latencies)
    seconds = window[1] - window[0]
    if flood is None:
        published_s = cfg.warmup + cfg.duration + cfg.cooldown
    else:
        published_s = max(1e-9, pubs["last_publish"] - start_at)
    return {
        "design": "tds" if flood is None else "tds-max",
        "broker": broker.kind,
        "offered_msg_s": rate,
        "published_msg_s": round(pubs["published"] / published_s, 1),
        "achieved_msg_s": round(in_window / seconds, 1),
        "achieved_readings_s": round(readings_in_window / seconds, 1),
        "latency_ms": {k: (round(v, 2) if v is not None else None) for k, v in lat.items()},
        "latency_samples": len(latencies),
        "latency_timeline": latency_timeline(per_second),
        "drain_s": round(max(0.0, last_commit - pubs["last_publish"]), 3),
        "dead_letters": commits.dead_letters,
        "publishers": {k: v for k, v in pubs.items() if k not in ("first_publish", "last_publish")},
        "loss": loss,
        "cpu_pct": cpu,
        "consumer_threads_cpu_pct": meter.threads,
        **_cpu_budget(cpu, meter.threads, in_window, seconds),
        "window_s": round(seconds, 3),
        "window_start_utc": datetime.fromtimestamp(window[0], UTC).isoformat(timespec="milliseconds"),
    }


# ---------------------------------------------------------------------------- the seed design


def run_seed(env: BenchEnv, cfg: IngestBenchConfig) -> dict:
    """The seed-design consumer at its maximum: flood `seed_messages`, time until the last commit."""
    from bench.seed_consumer import SeedConsumer

    broker = env.broker_info
    assert broker is not None
    env.reset_readings()
    env.ensure_today_partition()
    commits: list[tuple[float, str]] = []
    tls = broker.client_tls(SEED_CONSUMER_CN)
    seed = SeedConsumer(env.db_dsn, broker.host, broker.port, client_id=SEED_CONSUMER_CN,
                        tls=(tls.ca, tls.cert, tls.key) if tls else None,
                        on_commit=lambda wall, ts: commits.append((wall, ts)))
    seed.start()
    try:
        if not seed.subscribed.wait(30):
            raise BenchSetupError(f"seed consumer did not subscribe to {broker.url} in 30 s")
        pool = PublisherPool(env, cfg, rate=cfg.seed_rate, count=cfg.seed_messages)
        start_at = pool.go()
        meter = CpuMeter(_cpu_groups(env, pool.pids))
        meter.start()
        results = pool.collect(cfg.drain_timeout + 60)
        pubs = _publisher_summary(results)
        # Drain: until every acked message is processed, or no progress for 10 s (a lost message never comes).
        last_progress, seen = time.monotonic(), -1
        deadline = time.monotonic() + max(cfg.drain_timeout, cfg.seed_messages / 50)
        while seed.processed + seed.errors < pubs["acked"] and time.monotonic() < deadline:
            if seed.processed != seen:
                seen, last_progress = seed.processed, time.monotonic()
            elif time.monotonic() - last_progress > 10:
                break
            time.sleep(0.05)
        cpu = meter.stop()
        # The publishers have exited by now: their own CPU time over the flood instead.
        cpu["publishers"] = round(100.0 * sum(r.cpu_s for r in results) / max(1e-9, time.time() - start_at), 1)
    finally:
        seed.stop()
    loss = verify(env.db_dsn, _acked(results), env.devices)
    parse = TimestampParser()
    latencies = [(wall - parse(ts)) * 1000.0 for wall, ts in commits]
    last_commit = max((w for w, _ in commits), default=start_at)
    elapsed = max(1e-9, last_commit - start_at)
    lat = percentiles(latencies)
    return {
        "design": "seed",
        "broker": broker.kind,
        "offered_msg_s": cfg.seed_rate,
        "published_msg_s": round(pubs["published"] / max(1e-9, pubs["last_publish"] - start_at), 1),
        "achieved_msg_s": round(len(commits) / elapsed, 1),
        "achieved_readings_s": round(len(commits) * env.devices / elapsed, 1),
        "latency_ms": {k: (round(v, 2) if v is not None else None) for k, v in lat.items()},
        "latency_note": "flood: latency is mostly time queued in the broker",
        "latency_samples": len(latencies),
        "drain_s": round(max(0.0, last_commit - pubs["last_publish"]), 3),
        "errors": seed.errors,
        "publishers": {k: v for k, v in pubs.items() if k not in ("first_publish", "last_publish")},
        "loss": loss,
        "cpu_pct": cpu,
        "window_s": round(elapsed, 3),
    }


# ---------------------------------------------------------------------------- the writer alone


def run_writer(env: BenchEnv, cfg: IngestBenchConfig) -> dict:
    """bench/bench_writer.py on the same server: fresh inserts and 100% redelivery (idempotency)."""
    from bench import bench_writer

    out = io.StringIO()
    layout = "partitioned" if cfg.backend == "postgres" else "timescale"
    runs = bench_writer.run(env.admin_dsn, cfg.writer_rows, [cfg.writer_batch], [layout], out=out)
    by_phase = {r.phase: r for r in runs}
    fresh, redelivery = by_phase["fresh"], by_phase["redelivery"]
    return {
        "design": "writer",
        "broker": None,
        "rows": fresh.rows,
        "batch": cfg.writer_batch,
        "achieved_readings_s": round(fresh.rate, 1),
        "redelivery_readings_s": round(redelivery.rate, 1),
        "latency_ms": {"p50": round(fresh.pct(0.5), 2), "p95": round(fresh.pct(0.95), 2),
                       "p99": round(fresh.pct(0.99), 2)},
        "latency_note": "per write() call (one batch, commit included)",
        "loss": {"ok": True, "lost_messages": 0, "duplicates": 0,
                 "note": "bench_writer asserts every row is inserted once, then counted as duplicate"},
    }


# ---------------------------------------------------------------------------- report


def _fmt(v: float | None, spec: str = ",.0f") -> str:
    return "-" if v is None else format(v, spec)


def render_table(results: list[dict]) -> str:
    """The side-by-side table."""
    head = (f"{'design':<7} {'broker':<9} {'offered':>8} {'msg/s':>8} {'readings/s':>11} {'p50 ms':>8} "
            f"{'p95 ms':>8} {'p99 ms':>8} {'lost':>5} {'dup':>4} {'proj.max':>8}  "
            "cpu% consumer/broker/postgres/publishers")
    lines = [head, "-" * len(head)]
    for r in results:
        lat = r.get("latency_ms", {})
        loss = r.get("loss", {})
        cpu = r.get("cpu_pct") or {}
        cpu_text = "/".join(_fmt(cpu.get(k), ".0f") for k in ("consumer", "broker", "postgres", "publishers"))
        lines.append(
            f"{r['design']:<7} {r.get('broker') or '-':<9} {_fmt(r.get('offered_msg_s')):>8} "
            f"{_fmt(r.get('achieved_msg_s')):>8} {_fmt(r.get('achieved_readings_s')):>11} "
            f"{_fmt(lat.get('p50'), '.1f'):>8} {_fmt(lat.get('p95'), '.1f'):>8} {_fmt(lat.get('p99'), '.1f'):>8} "
            f"{loss.get('lost_messages', '-'):>5} {loss.get('duplicates', '-'):>4} "
            f"{_fmt(r.get('projected_max_msg_s')):>8}  {cpu_text if cpu else '-'}"
        )
    return "\n".join(lines)


def evaluate(results: list[dict]) -> dict:
    """The issue's targets, each with the measured value and pass/fail (None when not measured)."""
    tds = [r for r in results if r["design"] == "tds"]
    seed = next((r for r in results if r["design"] == "seed"), None)
    writer = next((r for r in results if r["design"] == "writer"), None)
    sustained = [r for r in tds if r["offered_msg_s"] >= TARGET_MSG_S and r["loss"]["ok"]
                 and r["achieved_msg_s"] >= 0.98 * r["offered_msg_s"]
                 and (r["latency_ms"]["p99"] or 1e9) <= TARGET_P99_MS]
    candidates = [r for r in results if r["design"] in ("tds", "tds-max")]
    best = max(candidates, key=lambda r: r["achieved_readings_s"] if r["loss"]["ok"] else 0, default=None)
    out: dict = {
        "tds_5000_msg_s_p99_150ms_no_loss": bool(sustained) if tds else None,
        "tds_best_achieved_msg_s": best["achieved_msg_s"] if best else None,
        "tds_best_design": best["design"] if best else None,
    }
    if best and seed and seed["achieved_readings_s"]:
        ratio = best["achieved_readings_s"] / seed["achieved_readings_s"]
        out["ratio_vs_seed"] = round(ratio, 1)
        out["ratio_at_least_10"] = ratio >= TARGET_RATIO
    if writer:
        out["writer_readings_s"] = writer["achieved_readings_s"]
        out["writer_at_least_200k"] = writer["achieved_readings_s"] >= TARGET_WRITER
    out["no_loss_everywhere"] = all(r["loss"]["ok"] for r in results)
    return out


def run_bench(cfg: IngestBenchConfig, *, out=sys.stdout) -> dict:
    """Everything in one go; returns the report (also written as JSON when cfg.report_dir is set)."""
    started = datetime.now(UTC)
    load_start = os.getloadavg()
    results: list[dict] = []
    broker = cfg.broker if {"tds", "seed"} & set(cfg.designs) else "none"
    env = BenchEnv(gateways=cfg.gateways, devices=cfg.devices, dsn=cfg.dsn, backend=cfg.backend, broker=broker,
                   max_inflight=cfg.max_inflight)
    print(f"bench: setting up ({cfg.gateways} gateways x {cfg.devices} devices, broker {cfg.broker}, "
          f"{'embedded PostgreSQL' if cfg.dsn is None else 'given PostgreSQL'}, backend {cfg.backend})",
          file=out, flush=True)
    with env:
        print(f"bench: broker {env.broker_info.url if env.broker_info else '?'}", file=out, flush=True)
        if "tds" in cfg.designs:
            for rate in cfg.rates:
                print(f"bench: TDS consumer at {rate:,.0f} msg/s ({cfg.warmup:g} s warm-up + {cfg.duration:g} s)",
                      file=out, flush=True)
                results.append(run_tds(env, cfg, rate))
                print(render_table(results[-1:]).splitlines()[-1], file=out, flush=True)
            if cfg.tds_flood_messages:
                print(f"bench: TDS consumer at its maximum, flood of {cfg.tds_flood_messages:,} messages",
                      file=out, flush=True)
                results.append(run_tds(env, cfg, cfg.seed_rate * 3, flood=cfg.tds_flood_messages))
                print(render_table(results[-1:]).splitlines()[-1], file=out, flush=True)
        if "seed" in cfg.designs:
            print(f"bench: seed design, flood of {cfg.seed_messages:,} messages", file=out, flush=True)
            results.append(run_seed(env, cfg))
            print(render_table(results[-1:]).splitlines()[-1], file=out, flush=True)
        if "writer" in cfg.designs:
            print(f"bench: batch writer alone, {cfg.writer_rows:,} rows in batches of {cfg.writer_batch:,}",
                  file=out, flush=True)
            results.append(run_writer(env, cfg))
    report = {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "load_avg_start": [round(x, 2) for x in load_start],
                 "load_avg_end": [round(x, 2) for x in os.getloadavg()]},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k != "dsn"},
        "results": results,
        "targets": evaluate(results),
    }
    print("", file=out)
    print(render_table(results), file=out)
    for r in results:
        if r["design"] == "writer":
            print(f"writer alone: {r['achieved_readings_s']:,.0f} readings/s fresh, {r['redelivery_readings_s']:,.0f} "
                  f"readings/s 100% redelivery (ON CONFLICT DO NOTHING), batch {r['batch']:,}", file=out)
    for r in results:
        if r["design"] == "tds" and r.get("latency_timeline"):
            print(timeline_summary(r), file=out)
    print(f"load average start {report['host']['load_avg_start']} end {report['host']['load_avg_end']} "
          f"on {report['host']['cpus']} CPUs", file=out)
    print("targets: " + ", ".join(f"{k}={v}" for k, v in report["targets"].items()), file=out, flush=True)
    if cfg.report_dir is not None:
        cfg.report_dir.mkdir(parents=True, exist_ok=True)
        path = cfg.report_dir / f"{started:%Y%m%dT%H%M%SZ}.json"
        path.write_text(json.dumps(report, indent=2))
        report["path"] = str(path)
        print(f"report: {path}", file=out, flush=True)
    return report


# ---------------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `python -m bench ingest` / `tds bench ingest`."""
    d = IngestBenchConfig()
    p.add_argument("--rates", default=",".join(f"{r:g}" for r in d.rates),
                   help="offered msg/s for the TDS consumer, comma-separated: a sweep finds the knee (default 5000)")
    p.add_argument("--duration", type=float, default=d.duration, help="measured seconds per rate (default 30)")
    p.add_argument("--warmup", type=float, default=d.warmup, help="seconds published before measuring (default 5)")
    p.add_argument("--gateways", type=int, default=d.gateways, help="fleet size (default 200)")
    p.add_argument("--devices", type=int, default=d.devices, help="devices = readings per message (default 8)")
    p.add_argument("--publishers", type=int, default=d.publishers, help="publisher processes (default 2)")
    p.add_argument("--publisher-impl", choices=("paho", "raw"), default=d.publisher_impl,
                   help="paho clients (default) or the minimal MQTT publisher (bench/rawmqtt.py, ~1/4 the CPU)")
    p.add_argument("--broker", choices=("mosquitto", "embedded"), default=d.broker,
                   help="private Mosquitto with mTLS (default) or the embedded amqtt broker (plain)")
    p.add_argument("--dsn", help="admin DSN of a PostgreSQL server (default: a private embedded one)")
    p.add_argument("--backend", choices=("postgres", "timescale"), default=d.backend,
                   help="schema to migrate: plain PostgreSQL (default) or TimescaleDB (needs --dsn of a server "
                   "with the extension)")
    p.add_argument("--designs", default=",".join(d.designs), help="which of tds,seed,writer to run")
    p.add_argument("--tds-flood-messages", type=int, default=d.tds_flood_messages,
                   help="also flood the TDS consumer with this many messages at --seed-rate x 3 to time its "
                   "maximum, as the seed design is measured (0 = skip; default 30000)")
    p.add_argument("--seed-messages", type=int, default=d.seed_messages, help="flood size for the seed design")
    p.add_argument("--seed-rate", type=float, default=d.seed_rate, help="flood publish rate (default 3000)")
    p.add_argument("--writer-rows", type=int, default=d.writer_rows)
    p.add_argument("--writer-batch", type=int, default=d.writer_batch)
    p.add_argument("--batch-max-messages", type=int, default=d.batch_max_messages,
                   help=f"default: the consumer's ({d.batch_max_messages})")
    p.add_argument("--batch-max-wait", type=float, default=d.batch_max_wait,
                   help=f"seconds (default: the consumer's, {d.batch_max_wait:g})")
    p.add_argument("--maintenance-interval", type=float, default=d.maintenance_interval,
                   help=f"seconds between the consumer's rollup refresh / partition / retention rounds "
                   f"(default: the consumer's, {d.maintenance_interval:g}; a large value leaves them out)")
    p.add_argument("--rollup-interval", type=float, default=d.rollup_interval,
                   help=f"seconds between the consumer's rollup folds, plain PostgreSQL "
                   f"(default: the consumer's, {d.rollup_interval:g}; a large value leaves them out)")
    p.add_argument("--receive-maximum", type=int, default=d.receive_maximum, help="MQTT 5 only")
    p.add_argument("--mqtt-version", type=int, choices=(4, 5), default=d.mqtt_version, help="consumer protocol")
    p.add_argument("--max-inflight", type=int, default=d.max_inflight, help="Mosquitto max_inflight_messages")
    p.add_argument("--drain-timeout", type=float, default=d.drain_timeout)
    p.add_argument("--report-dir", type=Path, default=d.report_dir, help="JSON reports (default reports/bench)")
    p.add_argument("--no-report", action="store_true", help="do not write the JSON report")


def config_from_args(args: argparse.Namespace) -> IngestBenchConfig:
    """Build the config; ValueError naming the bad option."""
    try:
        rates = [float(x) for x in args.rates.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--rates: expected comma-separated numbers, got {args.rates!r}") from None
    if args.backend == "timescale" and args.dsn is None:
        raise ValueError("--backend timescale: needs --dsn of a server with TimescaleDB (the embedded one has none)")
    return IngestBenchConfig(
        rates=rates, duration=args.duration, warmup=args.warmup, gateways=args.gateways, devices=args.devices,
        publishers=args.publishers, publisher_impl=args.publisher_impl, broker=args.broker, dsn=args.dsn,
        backend=args.backend,
        designs=[x.strip() for x in args.designs.split(",") if x.strip()],
        tds_flood_messages=args.tds_flood_messages, seed_messages=args.seed_messages, seed_rate=args.seed_rate,
        writer_rows=args.writer_rows,
        writer_batch=args.writer_batch, batch_max_messages=args.batch_max_messages,
        batch_max_wait=args.batch_max_wait, receive_maximum=args.receive_maximum,
        maintenance_interval=args.maintenance_interval, rollup_interval=args.rollup_interval,
        mqtt_version=args.mqtt_version, max_inflight=args.max_inflight, drain_timeout=args.drain_timeout,
        report_dir=None if args.no_report else args.report_dir,
    )


def handle(args: argparse.Namespace) -> int:
    """Run from parsed arguments; exit code 0, or 2 for a bad option / missing part."""
    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        print(f"bench ingest: error: {exc}", file=sys.stderr)
        return 2
    try:
        run_bench(cfg)
    except BenchSetupError as exc:
        print(f"bench ingest: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m bench ingest ...`."""
    parser = argparse.ArgumentParser(prog="python -m bench ingest", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return handle(parser.parse_args(argv))
