"""The attacker: runs a scenario's `attack` events with real clients and turns each into a verdict.

Identities are real: a fleet gateway's own certificate (the attacker "holds" that gateway's key), a second
consumer certificate (the *commander*: consumer rights, without touching the real consumer's session), and
certificates made on the fly (expired, revoked through the PKI and the CRL, signed by another CA, none).
Publishes *as* a gateway go over that gateway's live firmware connection (`Fleet.publish_raw`); attacks that
need their own MQTT client with a gateway's identity (subscribing, claiming client ids) take that gateway's
firmware off the network meanwhile, so the two never fight over one session; its queue delivers afterwards.

Negative checks never wait for "nothing to happen": each forbidden action is followed by an allowed one (a
marker) that must arrive, and the database is checked again at the end of the run (`finalize`), when
everything published has been committed. Readings the harness publishes as a valid gateway are recorded
(`must_store`) and count as produced and acked in the run's observations.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from tds_core.broker.probe import ClientTLS, ConnectOutcome, ConnectResult, Message, ProbeClient
from tds_core.protocol import Reading, encode_legacy, encode_v1, v1_topic

from .fleetdef import ScenarioFleet
from .observations import Observations, RowKey

log = logging.getLogger(__name__)

REFUSED = (ConnectOutcome.DROPPED, ConnectOutcome.TLS_ERROR, ConnectOutcome.REFUSED)
WAIT_S = 15.0  # wall seconds for an allowed marker to show up (only reached when something is wrong)
QUIET_S = 3.0  # join_consumer_group: stop collecting after this long without a message (only when some are missing)
SHARE_GROUP = "tds-scenario"
MOSQUITTO_SHARE_LIMITATION = (
    "not refused (known Mosquitto limitation: its acl_file never refuses a SUBSCRIBE, so a device can join a "
    "$share group and take messages that the read ACL then drops; consumers on Mosquitto must not use a "
    "guessable shared group)")


def command_topic(mac: str, name: str) -> str:
    """A command topic with any name (the protocol's helper allows only the real commands; gateways reject
    unknown ones, so probe commands change nothing on them)."""
    return f"tds_new/devices/{mac}/commands/{name}"


def default_filters(attacker: str, victim: str) -> tuple[str, ...]:
    """Topic filters a spy tries: wildcards, the victim's topics, shared forms, the consumer's own filters."""
    return ("#", "tds_new/#", "tds_new/devices/+/telemetry", "tds_new/devices/+/+", "+/+/+/+", "telemetry/#",
            "tds_new/devices/+/status", f"tds_new/devices/{victim}/#", f"tds_new/devices/{victim}/commands/#",
            "tds_new/devices/+/commands/#", "$share/x/#", f"$share/{SHARE_GROUP}/tds_new/devices/+/telemetry",
            "$SYS/#")


@dataclass
class Verdict:
    """One attack's result: what was expected, what was observed, and the evidence."""

    name: str
    attack: str
    expected: str
    observed: str
    passed: bool
    evidence: str
    line: int = 0
    fleet_offset_s: float = 0.0
    known_limitation: bool = False  # not refused, for a documented reason (still not a pass)
    must_store: dict[RowKey, float] = field(default_factory=dict)  # valid readings the harness published
    must_not_store: set[RowKey] = field(default_factory=set)  # forged readings
    forbid_after: tuple[str, datetime] | None = None  # no reading of this gateway from this time on

    def to_json(self) -> dict[str, Any]:
        return {"attack": self.attack, "name": self.name, "expected": self.expected, "observed": self.observed,
                "passed": self.passed, "known_limitation": self.known_limitation, "evidence": self.evidence,
                "fleet_offset_s": self.fleet_offset_s}


@dataclass
class SecurityObservations(Observations):
    """Observations plus the attack verdicts (what `attacks_refused` checks)."""

    verdicts: list[Verdict] = field(default_factory=list)


@dataclass
class AttackContext:
    """What the attacker needs from the run (filled by the runner)."""

    host: str
    port: int
    broker_kind: str  # embedded | mosquitto | url
    dsn: str
    fleet: Any  # simulators.fleet.Fleet
    scenario_fleet: ScenarioFleet
    run_dir: Path
    start: datetime
    security: Any = None  # scenarios.security.ScenarioPki (mTLS) or None
    reload_crl: Callable[[], bool] | None = None  # parts.Broker.reload_crl
    registry_shows_revoked: Callable[[str, float], bool | None] | None = None  # parts.ConsumerPart


# ------------------------------------------------------------------------------------------ blocking helpers

def _stored(dsn: str, keys: set[RowKey]) -> dict[RowKey, float]:
    """Which of `keys` are in readings, with their values."""
    if not keys:
        return {}
    out: dict[RowKey, float] = {}
    with psycopg.connect(dsn) as conn:
        for mac, code, at in keys:
            row = conn.execute("SELECT r.value FROM readings r JOIN devices d ON d.id = r.device_id "
                               "JOIN gateways g ON g.id = r.gateway_id WHERE g.mac = %s AND d.code = %s "
                               "AND r.time = %s", (mac, code, at)).fetchone()
            if row is not None:
                out[(mac, code, at)] = row[0]
    return out


def _wait_stored(dsn: str, keys: set[RowKey], timeout: float = WAIT_S) -> tuple[dict[RowKey, float], float]:
    """Poll until every key is stored or `timeout`; (what is stored, seconds waited)."""
    t0 = time.monotonic()
    while True:
        got = _stored(dsn, keys)
        if len(got) == len(keys) or time.monotonic() - t0 > timeout:
            return got, time.monotonic() - t0
        time.sleep(0.05)  # poll interval on the database


def _max_dead_letter(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT coalesce(max(id), 0) FROM dead_letters").fetchone()[0]


def _wait_dead_letter(dsn: str, topic: str, after_id: int, timeout: float = WAIT_S) -> tuple[str, str] | None:
    """The first dead letter on `topic` with id > after_id: (reason, detail), or None after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT reason, detail FROM dead_letters WHERE id > %s AND topic = %s "
                               "ORDER BY id LIMIT 1", (after_id, topic)).fetchone()
        if row is not None or time.monotonic() > deadline:
            return (row[0], row[1]) if row else None
        time.sleep(0.05)  # poll interval on the database


def _until_marker(client: ProbeClient, marker: bytes, timeout: float = WAIT_S) -> tuple[list[Message], bool]:
    """Messages received before `marker`, and whether the marker arrived."""
    before: list[Message] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            m = client.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            return before, False
        if m.payload == marker:
            return before, True
        before.append(m)


def _connect(client: ProbeClient) -> ConnectResult:
    result = client.connect()
    return result


def _describe(result: ConnectResult) -> str:
    detail = f" ({result.detail[:160]})" if result.detail else ""
    return f"{result.outcome.value}{detail}"


def _shown(messages: list[Message]) -> str:
    return ", ".join(f"{m.topic}={m.payload[:40]!r}" for m in messages[:5])


# ------------------------------------------------------------------------------------------ the attacker

class Attacker:
    """Runs attack events (see scenarios/README.md) and keeps their verdicts."""

    def __init__(self, ctx: AttackContext) -> None:
        self.ctx = ctx
        self.verdicts: list[Verdict] = []
        self._slot = 0
        self._spare = 0
        self._rogue: Any = None

    # ---------------------------------------------------------------- helpers

    def _code(self, mac: str) -> str:
        return self.ctx.scenario_fleet.by_mac()[mac].code

    def _time(self) -> datetime:
        """A reading time no gateway uses: 7 s after the fleet's now, plus a unique number of microseconds."""
        self._slot += 1
        return self.ctx.fleet.now() + timedelta(seconds=7, microseconds=1000 * self._slot + 321)

    def _message(self, mac: str, *, value: float | None = None, fmt: str | None = None,
                 claimed: str | None = None) -> tuple[str, bytes, RowKey, float]:
        """A valid reading for `mac`'s first meter in its own format (or `fmt`); `claimed`: the MAC put in
        the payload (v1) instead of `mac`'s. Returns (topic, payload, row key, value)."""
        sim = self.ctx.scenario_fleet.by_mac()[mac]
        device = sim.gateway.devices[0]
        at = self._time()
        value = float(value if value is not None else 1000 + self._slot)
        reading = Reading(device.code, value, device.unit)
        if (fmt or sim.gateway.payload_format) == "legacy":
            topic, payload = encode_legacy(sim.code, device.code, at, reading)
        else:
            topic, payload = encode_v1(claimed or mac, at, [reading])
        return topic, payload, (mac, device.code, at), value

    async def _publish_as(self, mac: str, topic: str, payload: bytes) -> str:
        """Publish as gateway `mac` over its firmware's connection; 'live' or 'separate'."""
        return await asyncio.wait_for(self.ctx.fleet.gateway(mac).publish_raw(topic, payload), WAIT_S)

    def _tls(self, cn: str) -> ClientTLS:
        return self.ctx.security.client_tls(cn)

    def _client(self, tls: ClientTLS, client_id: str, **kw: Any) -> ProbeClient:
        return ProbeClient(self.ctx.host, self.ctx.port, client_id, tls=tls, **kw)

    def _commander(self) -> ProbeClient:
        sec = self.ctx.security
        return self._client(self._tls(sec.commander_cn), sec.commander_cn)

    async def _offline(self, mac: str) -> None:
        """Take a gateway's firmware off the network (its identity is about to be used by an attack client)."""
        self.ctx.fleet.network_down([mac])

    # ---------------------------------------------------------------- entry point

    async def run(self, name: str, params: dict[str, Any], line: int, offset_s: float) -> Verdict:
        """Run one attack; its verdict is kept (an attack that breaks gives a failed verdict naming why)."""
        kind = params["attack"]
        try:
            verdict = await getattr(self, f"_{kind}")(params)
        except Exception as exc:
            log.exception("attack %s failed to run", name)
            verdict = Verdict(name, kind, "refused", "attack did not run", False, f"{type(exc).__name__}: {exc}")
        verdict.name, verdict.line, verdict.fleet_offset_s = name, line, offset_s
        self.verdicts.append(verdict)
        log.info("attack %s: expected %s, observed %s: %s", name, verdict.expected, verdict.observed,
                 verdict.evidence)
        return verdict

    # ---------------------------------------------------------------- attacks

    async def _valid_publish(self, p: dict[str, Any]) -> Verdict:
        """Control: a valid device publishes its own reading and it is stored."""
        mac = p["attacker"]
        topic, payload, key, value = self._message(mac)
        how = await self._publish_as(mac, topic, payload)
        got, waited = await asyncio.to_thread(_wait_stored, self.ctx.dsn, {key})
        v = Verdict("", "valid_publish", "stored", "stored" if key in got else "NOT stored", key in got, "",
                    must_store={key: value})
        v.evidence = (f"{self._code(mac)} published {topic} at {key[2].isoformat()} over its {how} session; "
                      + (f"stored with value {got[key]:g} after {waited:.2f}s" if key in got
                         else f"not stored after {waited:.1f}s"))
        return v

    async def _publish_as_other(self, p: dict[str, Any]) -> Verdict:
        """A device publishes readings (v1 and legacy) and a command on another gateway's topics."""
        atk, victim = p["attacker"], p["victim"]
        forged = [self._message(victim, value=-1.0, fmt="v1"), self._message(victim, value=-2.0, fmt="legacy")]
        for topic, payload, _, _ in forged:
            await self._publish_as(atk, topic, payload)
        command_note = ""
        gw = self.ctx.fleet.gateway(victim)
        commands_before = gw.firmware.counters().commands if gw.firmware else None
        if self.ctx.security is not None:
            await self._publish_as(atk, command_topic(victim, "probe-forged"), b"forged")
        marker_topic, marker_payload, marker_key, marker_value = self._message(atk)
        await self._publish_as(atk, marker_topic, marker_payload)
        got, waited = await asyncio.to_thread(_wait_stored, self.ctx.dsn, {marker_key})
        leaked = await asyncio.to_thread(_stored, self.ctx.dsn, {k for _, _, k, _ in forged})
        commands_leaked = 0
        if self.ctx.security is not None and commands_before is not None:
            # the commander's marker command to the victim: once the victim's firmware has it, the forged
            # reboot (published earlier) would have arrived first
            commander = self._commander()
            result = await asyncio.to_thread(_connect, commander)
            if result.ok:
                await asyncio.to_thread(commander.publish, command_topic(victim, "marker"), b"marker")
                arrived = await self._wait_counter(gw, commands_before + 1)
                commands_leaked = gw.firmware.counters().commands - commands_before - 1 if arrived else -1
                await asyncio.to_thread(commander.disconnect)
            command_note = ("; forged command: " + ("marker never reached the victim (inconclusive)"
                                                           if commands_leaked < 0 else
                                                           f"{commands_leaked} reached the victim's firmware"))
        ok = marker_key in got and not leaked
        if commands_leaked != 0 and self.ctx.security is not None and commands_before is not None:
            ok = False
        observed = "refused" if ok else ("inconclusive" if marker_key not in got else "NOT refused")
        evidence = (f"{self._code(atk)} published a v1 and a legacy reading as {self._code(victim)} "
                    f"(PUBACKed, MQTT 3.1.1); its own marker reading was "
                    + (f"stored after {waited:.2f}s" if marker_key in got else "not stored")
                    + f"; forged readings stored: {len(leaked)}" + (f" ({sorted(map(str, leaked))})" if leaked else "")
                    + command_note)
        return Verdict("", "publish_as_other", "refused", observed, ok, evidence,
                       must_store={marker_key: marker_value}, must_not_store={k for _, _, k, _ in forged})

    async def _wait_counter(self, gw: Any, want: int, timeout: float = WAIT_S) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if gw.firmware is not None and gw.firmware.counters().commands >= want:
                return True
            await asyncio.sleep(0.02)  # the firmware's command loop runs on this event loop
        return False

    async def _forged_payload_mac(self, p: dict[str, Any]) -> Verdict:
        """A device publishes on its own topic a payload that claims another gateway's MAC."""
        atk, victim = p["attacker"], p["victim"]
        _, payload, key, _ = self._message(victim, value=-3.0, fmt="v1")
        topic = v1_topic(atk)
        before = await asyncio.to_thread(_max_dead_letter, self.ctx.dsn)
        await self._publish_as(atk, topic, payload)
        letter = await asyncio.to_thread(_wait_dead_letter, self.ctx.dsn, topic, before)
        leaked = await asyncio.to_thread(_stored, self.ctx.dsn, {key})
        ok = letter is not None and letter[0] == "mac_mismatch" and not leaked
        observed = f"dead-lettered {letter[0]}" if letter else "no dead letter"
        evidence = (f"{self._code(atk)} published on {topic} a payload with gateway_mac {victim}: "
                    + (f"dead letter {letter[0]}: {letter[1]}" if letter else f"no dead letter after {WAIT_S:.0f}s")
                    + f"; stored as {self._code(victim)}: {'yes' if leaked else 'no'}")
        return Verdict("", "forged_payload_mac", "dead-lettered mac_mismatch", observed, ok, evidence,
                       must_not_store={key})

    async def _bad_certificate(self, p: dict[str, Any]) -> Verdict:
        """Expired, revoked, other-CA or no certificate: the broker refuses the connection."""
        which = p["certificate"]
        if which == "revoked":
            return await self._revoked_certificate()
        sec = self.ctx.security
        cn = p.get("victim") or self._spare_mac()
        now = datetime.now(UTC)
        if which == "expired":
            issued = sec.pki.issue(cn, "device", days=1, not_before=now - timedelta(days=30),
                                   file_cn=f"expired-{cn}")
            tls = ClientTLS(sec.ca_file, issued.cert_path, issued.key_path)
            what = f"certificate CN={cn} from the run's CA, expired {issued.entry.not_after}"
        elif which == "other_ca":
            if self._rogue is None:
                from tds_core.pki import Pki

                self._rogue = Pki.init(self.ctx.run_dir / "rogue-ca", ca_cn="TDS-New-CA")  # same name, other key
            issued = self._rogue.issue_device(cn)
            tls = ClientTLS(sec.ca_file, issued.cert_path, issued.key_path)
            what = f"certificate CN={cn} signed by another CA with the same name"
        else:
            tls = ClientTLS(sec.ca_file)
            what = "no client certificate"
        client = self._client(tls, cn)
        result = await asyncio.to_thread(_connect, client)
        if result.ok:
            await asyncio.to_thread(client.disconnect)
        refused = result.outcome in REFUSED
        return Verdict("", f"bad_certificate:{which}", "refused", "refused" if refused else
                       f"NOT refused ({result.outcome.value})", refused,
                       f"{what}, client id {cn}: {_describe(result)}")

    def _spare_mac(self) -> str:
        """A device MAC outside the fleet (a spare device of ours: valid-looking, never registered)."""
        self._spare += 1
        return f"02:ee:ee:00:00:{self._spare:02x}"

    async def _revoked_certificate(self) -> Verdict:
        sec = self.ctx.security
        cn = self._spare_mac()
        issued = sec.pki.issue(cn, "device", file_cn=f"revoked-{cn}")
        tls = ClientTLS(sec.ca_file, issued.cert_path, issued.key_path)
        live = self._client(tls, cn)
        control = await asyncio.to_thread(_connect, live)
        serial = issued.certificate.serial_number
        await asyncio.to_thread(sec.pki.revoke, serials=[serial], reason="key_compromise")
        confirmed = await asyncio.to_thread(self.ctx.reload_crl) if self.ctx.reload_crl else False
        cut = None
        if control.ok and not confirmed:
            # the embedded broker reloads on its own when crl.pem changes and then closes revoked sessions:
            # that close is the signal that the new CRL is in force
            cut = await asyncio.to_thread(live.wait_disconnected, 10.0)
        result = ConnectResult(ConnectOutcome.TIMEOUT, "no attempt")
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            attempt = self._client(tls, cn)
            result = await asyncio.to_thread(_connect, attempt)
            if not result.ok:
                break
            await asyncio.to_thread(attempt.disconnect)  # the CRL is not in force yet: try again
            await asyncio.sleep(0.2)
        if cut is None and control.ok:
            cut = await asyncio.to_thread(live.wait_disconnected, 0.5)
        if control.ok and live.is_connected:
            await asyncio.to_thread(live.disconnect)
        refused = control.ok and result.outcome in REFUSED
        how = "SIGHUP (reload confirmed in its log)" if confirmed else "crl.pem watch"
        session = ("the open session was closed by the broker" if cut else
                   "the open session stayed connected (Mosquitto keeps sessions after a reload; the registry "
                   "revocation cuts them off at ingest: see revoked_gateway_live)")
        evidence = (f"certificate CN={cn} serial {serial:x}: before revocation {_describe(control)}; revoked "
                    f"(CRL republished, broker reload by {how}); new connection: {_describe(result)}; {session}")
        observed = "refused" if refused else ("inconclusive (the certificate was refused before revocation)"
                                              if not control.ok else f"NOT refused ({result.outcome.value})")
        return Verdict("", "bad_certificate:revoked", "refused", observed, refused, evidence)

    async def _subscribe_others(self, p: dict[str, Any]) -> Verdict:
        """With its own certificate a device subscribes to anything: it must receive nothing of other gateways
        (telemetry, status, commands) and the consumer must still get every message."""
        atk, victim = p["attacker"], p["victim"]
        filters = p.get("filters") or default_filters(atk, victim)
        n = p.get("messages", 5)
        await self._offline(atk)
        spy = self._client(self._tls(atk), atk)
        commander = self._commander()
        must: dict[RowKey, float] = {}
        try:
            spy_result = await asyncio.to_thread(_connect, spy)
            if not spy_result.ok:
                return Verdict("", "subscribe_others", "refused", "inconclusive", False,
                               f"the attacker could not connect with its own certificate: {_describe(spy_result)}")
            codes = {}
            for f in filters:
                codes[f] = (await asyncio.to_thread(spy.subscribe, f))[0]
            await asyncio.to_thread(spy.subscribe, command_topic(atk, "#"))
            c_result = await asyncio.to_thread(_connect, commander)
            for _ in range(n):
                topic, payload, key, value = self._message(victim)
                await self._publish_as(victim, topic, payload)
                must[key] = value
            if c_result.ok:
                await asyncio.to_thread(commander.publish, command_topic(victim, "probe"), b"for-the-victim")
                await asyncio.to_thread(commander.publish, command_topic(atk, "probe"), b"spy-marker")
            leaked, marker = await asyncio.to_thread(_until_marker, spy, b"spy-marker")
            got, _ = await asyncio.to_thread(_wait_stored, self.ctx.dsn, set(must))
        finally:
            for c in (spy, commander):
                await asyncio.to_thread(c.disconnect)
            self.ctx.fleet.network_up([atk])
        ok = marker and not leaked and len(got) == n
        granted = [f for f, c in codes.items() if c != 128]
        refused_n = len(filters) - len(granted)
        evidence = (f"{self._code(atk)} subscribed to {len(filters)} filters (SUBACK refused {refused_n}"
                    f", granted {len(granted)}: {granted[:6]}); {self._code(victim)} published {n} readings and "
                    f"got a command; the spy received {len(leaked)} foreign messages before its marker"
                    + (f" ({_shown(leaked)})" if leaked else "") + ("" if marker else " (marker never arrived)")
                    + f"; the consumer stored {len(got)}/{n} of the victim's readings")
        observed = "refused" if ok else ("inconclusive" if not marker and not leaked else "NOT refused")
        return Verdict("", "subscribe_others", "refused", observed, ok, evidence, must_store=must)

    async def _join_consumer_group(self, p: dict[str, Any]) -> Verdict:
        """A device subscribes to the consumers' shared group filter: it must not take any message from it."""
        atk, victim = p["attacker"], p["victim"]
        n = p.get("messages", 10)
        shared = f"$share/{SHARE_GROUP}/tds_new/devices/+/telemetry"
        await self._offline(atk)
        spy = self._client(self._tls(atk), atk)
        commander = self._commander()  # a consumer in the shared group
        must: dict[RowKey, float] = {}
        got: list[Message] = []
        try:
            c_result = await asyncio.to_thread(_connect, commander)
            spy_result = await asyncio.to_thread(_connect, spy)
            if not (c_result.ok and spy_result.ok):
                return Verdict("", "join_consumer_group", "refused", "inconclusive", False,
                               f"consumer {_describe(c_result)}, attacker {_describe(spy_result)}")
            await asyncio.to_thread(commander.subscribe, shared)
            code = (await asyncio.to_thread(spy.subscribe, shared))[0]
            payloads = set()
            for _ in range(n):
                topic, payload, key, value = self._message(victim)
                await self._publish_as(victim, topic, payload)
                must[key] = value
                payloads.add(payload)

            def collect() -> list[Message]:
                out: list[Message] = []
                while len(out) < n:
                    try:
                        m = commander.get(timeout=QUIET_S)
                    except queue.Empty:
                        break
                    if m.payload in payloads:
                        out.append(m)
                return out
            got = await asyncio.to_thread(collect)
            spy_got = spy.messages.qsize()
        finally:
            for c in (spy, commander):
                await asyncio.to_thread(c.disconnect)
            self.ctx.fleet.network_up([atk])
        ok = len(got) == n
        evidence = (f"{self._code(atk)} subscribed to {shared}: SUBACK {code}; of {n} readings of "
                    f"{self._code(victim)} the shared-group consumer got {len(got)}"
                    + (f", {n - len(got)} went to the device's share (it received {spy_got}: dropped by the "
                       "read ACL)" if not ok else ""))
        if ok:
            observed = "refused"
        elif self.ctx.broker_kind == "mosquitto":
            observed = MOSQUITTO_SHARE_LIMITATION
        else:
            observed = f"NOT refused: the device took {n - len(got)} of {n} messages from the consumers' group"
        return Verdict("", "join_consumer_group", "refused", observed, ok, evidence, must_store=must,
                       known_limitation=not ok and self.ctx.broker_kind == "mosquitto")

    async def _session_takeover(self, p: dict[str, Any]) -> Verdict:
        """With its own certificate a device claims another gateway's client id (persistent and clean): the
        victim's live session must stay, and the claimant must get nothing of the victim's."""
        atk, victim = p["attacker"], p["victim"]
        gw = self.ctx.fleet.gateway(victim)
        live_before, connects_before = gw.transport.live, gw.transport.connects
        await self._offline(atk)
        commander = self._commander()
        notes: list[str] = []
        leaks: list[Message] = []
        must: dict[RowKey, float] = {}
        try:
            await asyncio.to_thread(_connect, commander)
            for clean in (False, True):
                claimant = self._client(self._tls(atk), victim, clean_session=clean)
                result = await asyncio.to_thread(_connect, claimant)
                note = f"clean_session={clean}: {_describe(result)}"
                if result.ok:
                    await asyncio.to_thread(claimant.subscribe, "tds_new/#")
                    await asyncio.to_thread(claimant.subscribe, f"tds_new/devices/{atk}/commands/+")
                    topic, payload, key, value = self._message(victim)
                    await self._publish_as(victim, topic, payload)
                    must[key] = value
                    marker = f"takeover-marker-{clean}".encode()
                    await asyncio.to_thread(commander.publish, command_topic(atk, "probe"), marker)
                    leaked, arrived = await asyncio.to_thread(_until_marker, claimant, marker)
                    leaks += leaked
                    note += (f", then got {len(leaked)} of the victim's messages"
                             + ("" if arrived else " (its marker never arrived: it is not the attacker's session)"))
                    await asyncio.to_thread(claimant.disconnect)
                notes.append(note)
            topic, payload, key, value = self._message(victim)
            how = await self._publish_as(victim, topic, payload)
            must[key] = value
            got, _ = await asyncio.to_thread(_wait_stored, self.ctx.dsn, {key})
        finally:
            await asyncio.to_thread(commander.disconnect)
            self.ctx.fleet.network_up([atk])
        kept = (gw.transport.live is live_before and live_before is not None and not live_before.dead
                and gw.transport.connects == connects_before and how == "live")
        ok = kept and not leaks and key in got
        evidence = (f"{self._code(atk)}'s certificate with client id {victim}: " + "; ".join(notes)
                    + f". Victim {self._code(victim)}: connection "
                    + ("kept (same session, no reconnect)" if kept else
                       f"DISTURBED (connects {connects_before} -> {gw.transport.connects}, publish over {how})")
                    + f", its next reading {'stored' if key in got else 'NOT stored'}")
        return Verdict("", "session_takeover", "refused", "refused" if ok else "NOT refused", ok, evidence,
                       must_store=must)

    async def _consumer_publishes_telemetry(self, p: dict[str, Any]) -> Verdict:
        """A consumer certificate (read all telemetry, write commands) publishes telemetry: not stored."""
        victim = p["victim"]
        forged = [self._message(victim, value=-4.0, fmt="v1"), self._message(victim, value=-5.0, fmt="legacy")]
        commander = self._commander()
        try:
            result = await asyncio.to_thread(_connect, commander)
            if not result.ok:
                return Verdict("", "consumer_publishes_telemetry", "refused", "inconclusive", False,
                               f"the consumer certificate could not connect: {_describe(result)}")
            acks = [await asyncio.to_thread(commander.publish, t, pl) for t, pl, _, _ in forged]
        finally:
            await asyncio.to_thread(commander.disconnect)
        topic, payload, key, value = self._message(victim)
        await self._publish_as(victim, topic, payload)
        got, _ = await asyncio.to_thread(_wait_stored, self.ctx.dsn, {key})
        leaked = await asyncio.to_thread(_stored, self.ctx.dsn, {k for _, _, k, _ in forged})
        ok = key in got and not leaked
        evidence = (f"consumer certificate CN={self.ctx.security.commander_cn} published a v1 and a legacy reading "
                    f"for {self._code(victim)} (PUBACK: {acks}); the victim's next reading was "
                    f"{'stored' if key in got else 'NOT stored'}; forged readings stored: {len(leaked)}")
        observed = "refused" if ok else ("inconclusive" if key not in got else "NOT refused")
        return Verdict("", "consumer_publishes_telemetry", "refused", observed, ok, evidence,
                       must_store={key: value}, must_not_store={k for _, _, k, _ in forged})

    async def _revoked_gateway_live(self, p: dict[str, Any]) -> Verdict:
        """Revoke a gateway in the registry while its session stays open: ingest dead-letters its messages."""
        mac = p["gateway"]
        from tds_core.registry.store import revoke_gateway

        def revoke() -> None:
            with psycopg.connect(self.ctx.dsn) as conn:
                revoke_gateway(conn, mac)
        await asyncio.to_thread(revoke)
        seen = None
        if self.ctx.registry_shows_revoked is not None:
            seen = await asyncio.to_thread(self.ctx.registry_shows_revoked, mac, WAIT_S)
        since = self.ctx.fleet.now()
        topic, payload, key, _ = self._message(mac)
        before = await asyncio.to_thread(_max_dead_letter, self.ctx.dsn)
        how = await self._publish_as(mac, topic, payload)
        letter = await asyncio.to_thread(_wait_dead_letter, self.ctx.dsn, topic, before)
        leaked = await asyncio.to_thread(_stored, self.ctx.dsn, {key})
        ok = letter is not None and letter[0] == "gateway_revoked" and not leaked and seen is not False
        cache = {True: "the consumer's registry showed it revoked", False: "the consumer's registry did NOT show "
                 f"it revoked within {WAIT_S:.0f}s", None: "consumer in a child process (registry not visible)"}[seen]
        evidence = (f"{self._code(mac)} revoked in the registry (revoke_gateway) at fleet "
                    f"{since.isoformat()}; {cache}; a reading over its {how} session: "
                    + (f"dead letter {letter[0]} ({letter[1]})" if letter else "no dead letter")
                    + f", stored: {'yes' if leaked else 'no'}")
        return Verdict("", "revoked_gateway_live", "dead-lettered gateway_revoked",
                       f"dead-lettered {letter[0]}" if letter else "not dead-lettered", ok, evidence,
                       must_not_store={key}, forbid_after=(mac, since))

    async def _tenant_isolation(self, p: dict[str, Any]) -> Verdict:
        """Through the core's query interface (tds_core.storage.queries), neither tenant sees the other's data."""
        return await asyncio.to_thread(self._tenant_isolation_sync, p["tenant"], p["other"])

    def _tenant_isolation_sync(self, tenant: str, other: str) -> Verdict:
        from tds_core.storage.migrate import current_backend
        from tds_core.storage.queries import gateway_health, hourly_timeline, monthly_consumption
        from tds_core.storage.rollups import refresh_rollups

        start, now = self.ctx.start, self.ctx.fleet.now()
        lines: list[str] = []
        leaks = 0
        inconclusive = False
        with psycopg.connect(self.ctx.dsn) as conn:
            backend = current_backend(conn)
            conn.commit()
            refresh_rollups(conn, backend, start=start - timedelta(days=1))
            ids = dict(conn.execute("SELECT code, id FROM tenants").fetchall())
            for me, them in ((tenant, other), (other, tenant)):
                devices = {r[0] for r in conn.execute(
                    "SELECT d.id FROM devices d JOIN gateways g ON g.id = d.gateway_id WHERE g.tenant_id = %s",
                    (ids[them],))}
                gateways = {r[0] for r in conn.execute("SELECT id FROM gateways WHERE tenant_id = %s", (ids[them],))}
                mine = conn.execute("SELECT count(*) FROM gateways WHERE tenant_id = %s", (ids[me],)).fetchone()[0]
                monthly = monthly_consumption(conn, ids[me], start.date(), (now + timedelta(days=1)).date())
                hourly = hourly_timeline(conn, ids[me], start - timedelta(hours=1), now + timedelta(hours=1))
                guessed = hourly_timeline(conn, ids[me], start - timedelta(hours=1), now + timedelta(hours=1),
                                          device_ids=sorted(devices))
                health = gateway_health(conn, ids[me])
                bad = ([m for m in monthly if m.device_id in devices] + [h for h in hourly if h.device_id in devices]
                       + list(guessed) + [g for g in health if g.gateway_id in gateways])
                leaks += len(bad)
                if not monthly or not hourly or len(health) != mine:
                    inconclusive = True
                lines.append(f"{me} sees {len(monthly)} monthly rows, {len(hourly)} hourly points, {len(health)}/"
                             f"{mine} gateways; asking for {them}'s {len(devices)} device ids gives {len(guessed)} "
                             f"rows; rows of {them}: {len(bad)}")
        ok = leaks == 0 and not inconclusive
        observed = ("refused" if ok else "NOT refused" if leaks else
                    "inconclusive (a tenant saw none of its own data: the check proves nothing)")
        return Verdict("", "tenant_isolation", "refused", observed, ok,
                       f"rollups refreshed ({backend}); " + "; ".join(lines))

    # ---------------------------------------------------------------- end of run

    def settle_exclusions(self) -> tuple[set[str], int]:
        """Gateways whose acked readings are not expected in the database (revoked ones), and the number of
        harness readings that must be stored (on top of the fleet's acked ones)."""
        excluded = {v.forbid_after[0] for v in self.verdicts if v.forbid_after}
        extra = sum(1 for v in self.verdicts for k in v.must_store if k[0] not in excluded)
        return excluded, extra

    def finalize(self, obs: Observations) -> list[Verdict]:
        """Check the database again now that everything is committed; record the harness's valid readings
        as produced and acked (they were PUBACKed). Returns the verdicts (also on `obs.verdicts` when it is a
        SecurityObservations)."""
        for v in self.verdicts:
            for key, value in v.must_store.items():
                obs.produced.setdefault((key[0], key[1]), set()).add(value)
                obs.acked_values[key] = value
                obs.expected.add(key)
        for v in self.verdicts:
            problems = []
            stored_forged = [k for k in v.must_not_store if k in obs.stored]
            if stored_forged:
                problems.append(f"forged readings stored at the end: {sorted(str(k) for k in stored_forged)[:3]}")
            if v.forbid_after is not None:
                mac, since = v.forbid_after
                after = [k for k in obs.stored if k[0] == mac and k[2] >= since]
                revoked_letters = sum(1 for d in obs.dead_letters if d.reason == "gateway_revoked"
                                      and (mac in d.topic or self._code(mac) in d.topic))
                v.evidence += (f"; by the end {revoked_letters} of its messages were dead-lettered "
                               f"gateway_revoked and {len(after)} readings from the revocation on were stored")
                if after:
                    problems.append(f"{len(after)} readings of the revoked gateway stored after its revocation")
            if problems and v.passed:
                v.passed, v.observed = False, "NOT refused"
            if problems:
                v.evidence += "; " + "; ".join(problems)
        if isinstance(obs, SecurityObservations):
            obs.verdicts = list(self.verdicts)
        return list(self.verdicts)
