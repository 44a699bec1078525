"""Run a scenario: build the world, play the timeline, drain, observe, check, report.

    result = run_scenario(load_scenario("scenarios/suite/quickstart.yaml"), reports_dir=Path("reports"))

Order: database (fresh, migrated, provisioned with the scenario's fleet) -> broker -> consumer (its
persistent session exists before any gateway publishes) -> fleet. The timeline's actions are sorted by fleet
time; the runner advances the fleet to each one (`Fleet.run_until`) and performs it. At the end every fault
still active is reverted, the fleet drains its store-and-forward queues, the runner waits until the database
holds what was acked (or a timeout), then reads the database and the fleet's accounting and checks.

Latency (publish -> committed, wall time) comes from the in-process consumer's `on_commit` hook matched to
the fleet's `publish_times`; with `consumer: subprocess` it is not measured (the schema refuses a latency
expectation there).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from tds_core.protocol import DEFAULT_LIMITS, Rejection, decode

from .durations import format_duration
from .expectations import Outcome, check_all
from .malformed import malformed
from .observations import DeadLetterRecord, Observations, OnlineSample, RowKey, StoredRow, compare_in_database
from .parts import Broker, ConsumerPart, Database, PartUnavailable
from .reports import RunResult, write_reports
from .schema import Event, Expectation, Scenario

log = logging.getLogger(__name__)

LATENCY_SAMPLE_TARGET = 100_000  # at most about this many latency samples (a month of fleet has millions)


@dataclass
class Progress:
    """What the progress line shows."""

    scenario: str
    fleet_s: float
    fleet_total_s: float
    wall_s: float
    phase: str
    published: int = 0
    acked: int = 0
    stored: int = 0


@dataclass
class RunOptions:
    """How to run (not what): where reports go, which PostgreSQL server to use for `embedded`, etc."""

    reports_dir: Path = Path("reports")
    admin_dsn: str | None = None  # the embedded kind: create the run's database on this server instead
    keep_database: bool = False
    progress: Callable[[Progress], None] | None = None
    settle_timeout_s: float = 60.0  # after the drain: wait at most this long for the database to catch up
    run_id: str | None = None


@dataclass
class _Action:
    at: timedelta
    order: int
    label: str
    run: Callable[[], Awaitable[None]]


@dataclass
class _State:
    started_mono: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)
    latency_raw: list[tuple[float, str, bytes]] = field(default_factory=list)
    commits: list[tuple[float, int]] = field(default_factory=list)
    redelivered: int = 0
    stride: int = 1
    seen: int = 0
    malformed_sent: dict[str, int] = field(default_factory=dict)
    samples: list[OnlineSample] = field(default_factory=list)


def run_scenario(scenario: Scenario, options: RunOptions | None = None) -> RunResult:
    """Run `scenario` to its end and write its reports; never raises for a failing part (see result.error)."""
    options = options or RunOptions()
    run_id = options.run_id or datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = options.reports_dir / scenario.name / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    started_at = datetime.now(UTC)
    runner = _Runner(scenario, options, run_dir)
    obs = Observations(gateway_codes={g.mac: g.code for g in scenario.fleet.gateways})
    error = None
    try:
        obs = asyncio.run(runner.run())
    except PartUnavailable as exc:
        error = str(exc)
    except Exception as exc:  # the report must still be written, naming what broke
        log.exception("scenario %s: run failed", scenario.name)
        error = f"{type(exc).__name__}: {exc}"
    if error is None:
        outcomes = check_all(scenario.expectations, obs, scenario.fleet)
    else:
        outcomes = [Outcome(e.name, e.kind, False, f"not checked: {error}", error=True) for e in scenario.expectations]
    result = RunResult(
        scenario=scenario.name, source=scenario.source, run_id=run_id, started_at=started_at,
        wall_seconds=time.monotonic() - runner.state.started_mono if runner.state.started_mono else 0.0,
        fleet_seconds=scenario.clock.duration.total_seconds(), clock_mode=scenario.clock.mode,
        parts=dataclasses.asdict(scenario.parts), outcomes=outcomes, observations=obs,
        events=runner.state.events, error=error, description=scenario.description)
    result.paths = write_reports(run_dir, result)  # type: ignore[attr-defined]
    return result


class _Runner:
    def __init__(self, scenario: Scenario, options: RunOptions, run_dir: Path) -> None:
        self.sc, self.options, self.run_dir = scenario, options, run_dir
        self.state = _State()
        self.db: Database | None = None
        self.broker: Broker | None = None
        self.consumer: ConsumerPart | None = None
        self.fleet: Any = None
        self.start: datetime = datetime.now(UTC)
        self._phase = "starting"
        self.drained = False
        self._fleet_now = timedelta(0)
        self._active: dict[str, Callable[[], Awaitable[None]]] = {}  # parts faults to revert at the end
        self.security: Any = None  # scenarios.security.ScenarioPki with an mTLS broker
        self.attacker: Any = None  # scenarios.attacks.Attacker when the timeline has attacks

    # ------------------------------------------------------------------ the run

    async def run(self) -> Observations:
        self.state.started_mono = time.monotonic()
        sc = self.sc
        parts = sc.parts
        self.db = Database(parts.database, dsn=parts.database_dsn, admin_dsn=self.options.admin_dsn,
                           name_hint=sc.name, keep=self.options.keep_database)
        progress_task = None
        try:
            if parts.broker_tls:
                from .security import ScenarioPki

                self.security = await asyncio.to_thread(ScenarioPki.create, self.run_dir / "pki", sc.fleet)
                self._event("parts", f"PKI: CA, broker, consumer and {len(sc.fleet.gateways)} device certificates")
            self.broker = Broker(parts.broker, url=parts.broker_url, work_dir=self.run_dir, security=self.security)
            dsn = await asyncio.to_thread(self.db.start)
            await asyncio.to_thread(self.db.prepare, sc.fleet.registry)
            self._event("parts", f"database {parts.database} ready ({self.db.name})")
            broker_url = await asyncio.to_thread(self.broker.start)
            self._event("parts", f"broker {parts.broker} at {broker_url}")
            expected_messages = sum(
                max(1, int(sc.clock.duration / g.poll_interval)) * (1 if g.gateway.payload_format == "v1"
                                                                   else len(g.gateway.devices))
                for g in sc.fleet.gateways)
            self.state.stride = max(1, expected_messages // LATENCY_SAMPLE_TARGET)
            # with mTLS the client id must be the certificate's CN (the broker ties them together)
            self.consumer = ConsumerPart(parts.consumer, database_url=dsn, broker_url=broker_url,
                                         client_id=self.security.consumer_cn if self.security else
                                         f"tds-scenario-{self.db.name}", work_dir=self.run_dir,
                                         on_commit=self._on_commit,
                                         tls=self.security.consumer_tls() if self.security else None)
            await asyncio.to_thread(self.consumer.start)
            self._event("parts", f"consumer {parts.consumer} subscribed")
            self.start = self._fleet_start()
            self.fleet = self._make_fleet(broker_url)
            await self.fleet.start()
            self._event("fleet", f"{len(sc.fleet.gateways)} gateways started at {self.start.isoformat()}")
            if any(e.kind == "attack" for e in sc.timeline):
                self.attacker = self._make_attacker(broker_url, dsn)
            progress_task = asyncio.create_task(self._progress_loop())
            self._phase = "running"
            for action in self._actions():
                await self._advance(action.at)
                self._event(action.label, "")
                await action.run()
            await self._advance(sc.clock.duration)
            self._phase = "draining"
            for label, revert in list(self._active.items()):
                self._event("revert", label)
                await revert()
            self._revert_fleet_faults()
            drained = self.drained = await self.fleet.drain(sc.clock.drain_timeout.total_seconds())
            self._event("drain", "all gateway queues empty" if drained else
                        f"queues not empty after {format_duration(sc.clock.drain_timeout)}")
            self._phase = "settling"
            await self._settle()
            self._phase = "observing"
            return await asyncio.to_thread(self._observe)
        finally:
            self._phase = "stopping"
            if progress_task is not None:
                progress_task.cancel()
            if self.fleet is not None:
                try:
                    await self.fleet.stop()
                except Exception:
                    log.exception("fleet stop failed")
            for part in (self.consumer, self.broker, self.db):
                if part is not None:
                    try:
                        await asyncio.to_thread(part.stop)
                    except Exception:
                        log.exception("stopping %s failed", type(part).__name__)
            if self.security is not None:  # throwaway keys: not left in the reports
                for private in (self.run_dir / "pki" / "private", self.run_dir / "rogue-ca" / "private"):
                    shutil.rmtree(private, ignore_errors=True)

    def _fleet_start(self) -> datetime:
        if self.sc.clock.start is not None:
            return self.sc.clock.start
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        # Virtual time ends at about now, so every timestamp is inside the consumer's accepted window.
        return now - self.sc.clock.duration if self.sc.clock.mode == "virtual" else now

    def _make_fleet(self, broker_url: str) -> Any:
        from simulators.fleet import Fleet  # the fleet engine: harness, imported only when a run starts

        from .adapter import gateway_specs

        return Fleet(gateway_specs(self.sc.fleet), broker_url=broker_url, clock=self.sc.clock.mode,
                     start=self.start, seed=self.sc.seed,
                     tls=self.security.fleet_tls() if self.security else None)

    def _make_attacker(self, broker_url: str, dsn: str) -> Any:
        from urllib.parse import urlsplit

        from .attacks import AttackContext, Attacker

        url = urlsplit(broker_url)
        assert self.broker is not None and self.consumer is not None
        return Attacker(AttackContext(
            host=url.hostname or "127.0.0.1", port=url.port or 1883, broker_kind=self.sc.parts.broker, dsn=dsn,
            fleet=self.fleet, scenario_fleet=self.sc.fleet, run_dir=self.run_dir, start=self.start,
            security=self.security, reload_crl=self.broker.reload_crl,
            registry_shows_revoked=self.consumer.registry_shows_revoked))

    async def _advance(self, offset: timedelta) -> None:
        if offset > self._fleet_now:
            await self.fleet.run_until(self.start + offset)
            self._fleet_now = offset

    def _event(self, event: str, detail: str) -> None:
        self.state.events.append({"fleet_offset": format_duration(self._fleet_now), "event": event,
                                  "detail": detail,
                                  "wall_s": round(time.monotonic() - self.state.started_mono, 3)})
        log.info("[%s] %s %s %s", self.sc.name, format_duration(self._fleet_now), event, detail)

    # ------------------------------------------------------------------ timeline

    def _actions(self) -> list[_Action]:
        actions: list[_Action] = []
        for i, ev in enumerate(self.sc.timeline):
            actions.extend(self._event_actions(i, ev))
        for i, exp in enumerate(self.sc.expectations):
            if exp.kind == "gateway_online":
                actions.append(_Action(exp.params["at"], 10_000 + i, f"sample {exp.name}",
                                       self._sampler(exp)))
        return sorted(actions, key=lambda a: (a.at, a.order))

    def _until(self, ev: Event) -> datetime | None:
        return self.start + ev.at + ev.duration if ev.duration else None

    def _event_actions(self, i: int, ev: Event) -> list[_Action]:
        fleet_macs = ev.target.macs(self.sc.fleet)
        label = f"{ev.kind} (line {ev.line})"
        if ev.kind == "modbus_fault":
            params = {k: v for k, v in ev.params.items() if k not in ("slave_id", "kind")}

            async def modbus() -> None:
                self.fleet.modbus_fault(fleet_macs[0], ev.params["slave_id"], ev.params["kind"], self._until(ev),
                                        **params)
            return [_Action(ev.at, i, label, modbus)]
        if ev.kind in ("power_loss", "network_partition"):
            method = "power_loss" if ev.kind == "power_loss" else "network_down"

            async def fleet_fault() -> None:
                getattr(self.fleet, method)(fleet_macs, self._until(ev))
            return [_Action(ev.at, i, f"{label}: {len(fleet_macs)} gateways", fleet_fault)]
        if ev.kind == "reboot":
            async def reboot() -> None:
                self.fleet.reboot(fleet_macs)
            return [_Action(ev.at, i, label, reboot)]
        if ev.kind == "clock_drift":
            async def drift() -> None:
                self.fleet.clock_drift(fleet_macs, ev.params["ppm"])
            return [_Action(ev.at, i, label, drift)]
        if ev.kind == "malformed_messages":
            return [_Action(ev.at, i, f"{label}: {ev.params['count']}", self._injector(ev, fleet_macs[0]))]
        if ev.kind == "attack":
            async def attack() -> None:
                v = await self.attacker.run(ev.params["name"], ev.params, ev.line, ev.at.total_seconds())
                self._event(f"verdict {v.name}", f"expected {v.expected}, observed {v.observed}")
            return [_Action(ev.at, i, f"attack {ev.params['name']} (line {ev.line})", attack)]
        return self._parts_fault(i, ev, label)

    def _parts_fault(self, i: int, ev: Event, label: str) -> list[_Action]:
        """broker_restart, consumer_kill, database_outage: a start action and an end action."""
        hold_s = ev.hold.total_seconds()
        began: dict[str, float] = {}
        assert self.broker and self.consumer and self.db
        broker, consumer, db = self.broker, self.consumer, self.db
        if ev.kind == "broker_restart":
            if not broker.restartable:
                raise PartUnavailable(f"timeline line {ev.line}: broker_restart needs a broker the run starts "
                                      "(embedded or mosquitto), not a url")
            down, up = broker.stop, broker.start
        elif ev.kind == "consumer_kill":
            down, up = consumer.kill, consumer.restart
        else:
            down, up = db.block, db.unblock

        async def begin() -> None:
            await asyncio.to_thread(down)
            began["t"] = time.monotonic()
            self._active[label] = end

        async def end() -> None:
            if label not in self._active:
                return
            del self._active[label]
            remaining = hold_s - (time.monotonic() - began["t"])
            if remaining > 0:  # the fault lasts at least `hold` of wall time, so the parts really notice it
                await asyncio.sleep(remaining)
            await asyncio.to_thread(up)
            # The embedded broker forgets sessions: hold the fleet until the consumer has subscribed
            # again, so messages the broker acks from now on have a subscriber (see README).
            if ev.kind == "broker_restart" and not await asyncio.to_thread(consumer.wait_subscribed, 30.0):
                self._event("warning", "consumer not resubscribed 30 s after the broker restart")
            self._event(f"end of {label}", "")
        return [_Action(ev.at, i, f"{label}: begin", begin),
                _Action(ev.at + (ev.duration or timedelta(0)), i, f"{label}: end", end)]

    def _injector(self, ev: Event, mac: str) -> Callable[[], Awaitable[None]]:
        from .schema import MALFORMED_KINDS

        gw = self.sc.fleet.by_mac()[mac].gateway
        device = gw.devices[0]

        async def inject() -> None:
            kinds = ev.params["kinds"]
            at = self.start + ev.at
            for n in range(ev.params["count"]):
                kind = kinds[n % len(kinds)]
                topic, payload = malformed(kind, mac, device.code, device.unit, n, at)
                await self.fleet.publish_raw(mac, topic, payload)
                reason = MALFORMED_KINDS[kind]
                self.state.malformed_sent[reason] = self.state.malformed_sent.get(reason, 0) + 1
        return inject

    def _sampler(self, exp: Expectation) -> Callable[[], Awaitable[None]]:
        async def sample() -> None:
            macs = exp.target.macs(self.sc.fleet)
            want = exp.params["online"]
            t0 = time.monotonic()
            deadline = t0 + exp.params["settle"].total_seconds()
            while True:  # poll the database until it shows the expected state or the settle time is over
                observed = await asyncio.to_thread(self._online_flags, macs)
                if all(v is want for v in observed.values()) or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.2)
            self.state.samples.append(OnlineSample(exp.name, exp.params["at"].total_seconds(), observed,
                                                   time.monotonic() - t0))
        return sample

    def _online_flags(self, macs: list[str]) -> dict[str, bool | None]:
        assert self.db and self.db.dsn
        with psycopg.connect(self.db.dsn) as conn:
            rows = dict(conn.execute("SELECT mac, online FROM gateways WHERE mac = ANY(%s)", (macs,)).fetchall())
        return {m: rows.get(m) for m in macs}

    def _revert_fleet_faults(self) -> None:
        """Network partitions and power losses without an end are lifted before the drain."""
        for ev in self.sc.timeline:
            if ev.kind in ("network_partition", "power_loss") and ev.duration is None:
                self._event("revert", f"{ev.kind} (line {ev.line})")
                now = self.fleet.now()
                macs = ev.target.macs(self.sc.fleet)
                getattr(self.fleet, "network_down" if ev.kind == "network_partition" else "power_loss")(
                    macs, now + timedelta(microseconds=1))

    # ------------------------------------------------------------------ consumer hook (writer thread)

    def _on_commit(self, info: Any) -> None:
        now = time.time()
        self.state.commits.append((time.monotonic() - self.state.started_mono, info.result.inserted))
        self.state.redelivered += info.result.duplicates
        for message in info.messages:
            self.state.seen += 1
            if self.state.seen % self.state.stride == 0 and not message.topic.endswith("/status"):
                self.state.latency_raw.append((now, message.topic, message.payload))

    # ------------------------------------------------------------------ the end

    async def _settle(self) -> None:
        """Wait until the database holds every acked reading (or nothing changes for the settle timeout)."""
        acc = self.fleet.accounting
        excluded: set[str] = set()
        want = acc.expected_count()
        if self.attacker is not None:
            # revoked gateways' acked readings are dead-lettered, not stored; the harness's valid ones are stored
            excluded, extra = self.attacker.settle_exclusions()
            want += extra - sum(len({at for at, _ in acc.acked_readings(g.mac, d.code)})
                                for g in self.sc.fleet.gateways if g.mac in excluded for d in g.gateway.devices)
        deadline = time.monotonic() + self.options.settle_timeout_s
        last = -1
        while time.monotonic() < deadline:
            count = await asyncio.to_thread(self._row_count, excluded)
            if count >= want and (self.consumer is None or self.consumer.queue_depth == 0):
                return
            if count != last:
                last, deadline = count, time.monotonic() + self.options.settle_timeout_s
            await asyncio.sleep(0.25)
        self._event("settle", f"database holds {last} rows, {want} acked; gave up waiting")

    def _row_count(self, excluded: set[str] | None = None) -> int:
        assert self.db and self.db.dsn
        try:
            with psycopg.connect(self.db.dsn, connect_timeout=5) as conn:
                if excluded:
                    return conn.execute("SELECT count(*) FROM readings r JOIN gateways g ON g.id = r.gateway_id "
                                        "WHERE g.mac <> ALL(%s)", (sorted(excluded),)).fetchone()[0]
                return conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        except psycopg.OperationalError:
            return -1

    def _observe(self) -> Observations:
        acc = self.fleet.accounting
        codes = {g.mac: g.code for g in self.sc.fleet.gateways}
        if self.attacker is not None:
            from .attacks import SecurityObservations

            obs: Observations = SecurityObservations(gateway_codes=codes)
        else:
            obs = Observations(gateway_codes=codes)
        obs.published, obs.acked, obs.dropped = dict(acc.published), dict(acc.acked), dict(acc.dropped)
        obs.lost_on_power_loss = dict(getattr(acc, "lost_on_power_loss", {}))
        obs.failed_polls = dict(acc.failed_polls)
        obs.drained = self.drained
        if hasattr(self.fleet, "queue_depths"):
            obs.queued = dict(self.fleet.queue_depths())
        try:
            obs.accounting_snapshot = json.loads(json.dumps(acc.snapshot(), default=str))
        except Exception as exc:  # a report detail: never worth failing the run
            obs.accounting_snapshot = {"error": str(exc)}
        assert self.db and self.db.dsn
        with psycopg.connect(self.db.dsn) as conn:
            for reason, topic, detail, client in conn.execute(
                    "SELECT reason, topic, detail, client_id FROM dead_letters ORDER BY id"):
                obs.dead_letters.append(DeadLetterRecord(reason, topic, detail, client))
            if self.attacker is not None:  # its end-of-run checks look rows up (attack runs are small)
                cur = conn.execute(
                    "SELECT g.mac, d.code, r.time, r.value, r.xmin::text::bigint FROM readings r "
                    "JOIN devices d ON d.id = r.device_id JOIN gateways g ON g.id = r.gateway_id")
                for mac, code, at, value, xid in cur:
                    obs.stored[(mac, code, at)] = StoredRow(value, xid)
        obs.online_samples = list(self.state.samples)
        obs.commits = list(self.state.commits)
        obs.redelivered_rows = self.state.redelivered
        obs.malformed_sent = dict(self.state.malformed_sent)
        obs.latencies_ms = self._latencies(acc)
        if self.attacker is not None:  # adds the harness's valid readings to produced / acked_values / expected
            self.attacker.finalize(obs)
        t0 = time.monotonic()
        served = [0]
        with psycopg.connect(self.db.dsn) as conn:
            obs.readings = compare_in_database(conn, _expected_rows(acc, obs), _produced_values(acc, obs, served))
        obs.distinct_values_served = served[0]
        self._event("verify", f"{obs.readings.total('expected')} acked readings and "
                    f"{obs.readings.total('stored')} stored rows compared in the database in "
                    f"{time.monotonic() - t0:.1f}s")
        return obs

    def _latencies(self, acc: Any) -> list[float]:
        publish_times = getattr(acc, "publish_times", {})
        by_code = {g.code: g.mac for g in self.sc.fleet.gateways}
        out = []
        # Only the key (gateway, timestamp) matters here: accept any age, the consumer already judged it.
        limits = dataclasses.replace(DEFAULT_LIMITS, max_age=timedelta(days=36500),
                                     max_future_skew=timedelta(days=36500))
        for committed, topic, payload in self.state.latency_raw:
            try:
                tel = decode(topic, payload, limits=limits)
            except Rejection:
                continue
            mac = tel.gateway_mac or by_code.get(tel.gateway_code or "")
            published = publish_times.get((mac, tel.timestamp))
            if published is not None:
                out.append((committed - published) * 1000.0)
        return out

    # ------------------------------------------------------------------ progress

    async def _progress_loop(self) -> None:
        if self.options.progress is None:
            return
        total = self.sc.clock.duration.total_seconds()
        while True:
            try:
                acc = self.fleet.accounting
                fleet_s = max(0.0, (self.fleet.now() - self.start).total_seconds())
                self.options.progress(Progress(
                    self.sc.name, min(fleet_s, total), total, time.monotonic() - self.state.started_mono,
                    self._phase, sum(acc.published.values()), sum(acc.acked.values()),
                    sum(n for _, n in self.state.commits)))
            except Exception:  # progress is cosmetic
                log.debug("progress failed", exc_info=True)
            await asyncio.sleep(0.5)


# ---------------------------------------------------------------------- verification inputs (streamed)

def _expected_rows(acc: Any, obs: Observations) -> Iterator[tuple[str, str, datetime, float]]:
    """Distinct acked (mac, code, time, value) rows, one meter at a time (the last acked value wins, as when
    a replay is acked twice), plus readings the harness added to `obs.acked_values` (they override)."""
    extra: dict[tuple[str, str], dict[datetime, float]] = {}
    for (mac, code, at), value in obs.acked_values.items():
        extra.setdefault((mac, code), {})[at] = value
    meters = dict.fromkeys((mac, code) for mac, code, _ in _meter_starts(acc.iter_expected_rows()))
    for mac, code in meters:
        values = dict(acc.acked_readings(mac, code))
        values.update(extra.pop((mac, code), {}))
        for at in sorted(values):
            yield mac, code, at, values[at]
    for (mac, code), values in extra.items():
        for at in sorted(values):
            yield mac, code, at, values[at]


def _meter_starts(rows: Iterator[RowKey]) -> Iterator[RowKey]:
    """The first row of each meter from a stream grouped by meter."""
    last = None
    for row in rows:
        if row[:2] != last:
            last = row[:2]
            yield row


def _produced_values(acc: Any, obs: Observations, count: list[int]) -> Iterator[tuple[str, str, float]]:
    """Distinct (mac, code, value) every meter served (plus the harness's, from `obs.produced`); counts them
    into `count[0]`."""
    produced = acc.produced
    keys = dict.fromkeys([*produced, *obs.produced])
    for key in keys:
        values = {value for _, value in produced[key]} if key in produced else set()
        values |= obs.produced.get(key, set())
        count[0] += len(values)
        for value in values:
            yield key[0], key[1], value
