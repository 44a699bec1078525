"""Scenario files: the YAML schema and its validation (every error reads `file:line: field.path: problem`).

See scenarios/README.md for the format. `load_scenario(path)` returns a :class:`Scenario` or raises
`tds_core.yamlconf.ConfigError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tds_core.protocol import Reason, normalize_mac
from tds_core.yamlconf import (
    ConfigError,
    YList,
    YMap,
    check_keys,
    items,
    load_yaml,
    one_of,
    require,
    require_bool,
    require_float,
    require_int,
    require_list,
    require_map,
    require_str,
)
from tds_core.yamlconf import _suggest as suggest

from .durations import EXPECTED as DURATION_EXPECTED
from .durations import parse_duration
from .fleetdef import ScenarioFleet, parse_scenario_fleet

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MODBUS_FAULTS = ("no_reply", "exception", "delay", "bad_crc", "stuck", "counter_reset")
# Malformed payloads the harness can send, each with the reason the core must dead-letter it with.
MALFORMED_KINDS: dict[str, str] = {
    "malformed_json": Reason.MALFORMED_JSON.value,
    "not_an_object": Reason.NOT_AN_OBJECT.value,
    "missing_field": Reason.MISSING_FIELD.value,
    "wrong_type": Reason.WRONG_TYPE.value,
    "bad_timestamp": Reason.BAD_TIMESTAMP.value,
    "unknown_unit": Reason.UNKNOWN_UNIT.value,
    "mac_mismatch": Reason.MAC_MISMATCH.value,
    "unknown_device": Reason.UNKNOWN_DEVICE.value,
}
REASONS = (*(r.value for r in Reason), "storage_rejected")
# Attacks the harness can run (scenarios/attacks.py): required keys, optional keys, needs an mTLS broker.
ATTACKS: dict[str, tuple[set[str], set[str], bool]] = {
    "valid_publish": ({"attacker"}, set(), False),
    "publish_as_other": ({"attacker", "victim"}, set(), False),
    "forged_payload_mac": ({"attacker", "victim"}, set(), False),
    "bad_certificate": ({"certificate"}, {"victim"}, True),
    "subscribe_others": ({"attacker", "victim"}, {"filters", "messages"}, True),
    "join_consumer_group": ({"attacker", "victim"}, {"messages"}, True),
    "session_takeover": ({"attacker", "victim"}, set(), True),
    "consumer_publishes_telemetry": ({"victim"}, set(), True),
    "revoked_gateway_live": ({"gateway"}, set(), False),
    "tenant_isolation": ({"tenant", "other"}, set(), False),
}
BAD_CERTIFICATES = ("expired", "revoked", "other_ca", "none")


# ------------------------------------------------------------------------------------------ the model

@dataclass(frozen=True)
class Parts:
    """Which real parts the run uses."""

    broker: str = "embedded"  # embedded | mosquitto | url
    broker_url: str | None = None
    broker_tls: bool = False  # mTLS with a throwaway PKI per run, CRL and ACL (embedded or mosquitto)
    database: str = "embedded"  # embedded | timescale | dsn
    database_dsn: str | None = None
    consumer: str = "in_process"  # in_process | subprocess


@dataclass(frozen=True)
class ClockSpec:
    """Real or virtual time, how long, and when the fleet's clock starts (None: now - duration, virtual)."""

    mode: str
    duration: timedelta
    start: datetime | None = None
    drain_timeout: timedelta = timedelta(seconds=60)


@dataclass(frozen=True)
class Selector:
    """Which gateways: explicit gateway codes/MACs and/or groups; empty = all gateways."""

    gateways: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    def macs(self, fleet: ScenarioFleet) -> list[str]:
        """The MACs this selector names (all gateways when it names nothing)."""
        if not self.gateways and not self.groups:
            return [g.mac for g in fleet.gateways]
        by_code, groups = fleet.by_code(), fleet.groups
        out: list[str] = []
        for ref in self.gateways:
            out.append(by_code[ref].mac if ref in by_code else normalize_mac(ref))
        for name in self.groups:
            out.extend(groups[name])
        return list(dict.fromkeys(out))

    def describe(self) -> str:
        parts = [f"group {g}" for g in self.groups] + list(self.gateways)
        return ", ".join(parts) or "all gateways"


@dataclass(frozen=True)
class Event:
    """One timeline event: `kind` at fleet offset `at`, lasting `duration` when it has one."""

    kind: str
    at: timedelta
    duration: timedelta | None = None
    target: Selector = field(default_factory=Selector)
    params: dict[str, Any] = field(default_factory=dict)
    hold: timedelta = timedelta(seconds=2)  # parts faults: at least this much wall time, so they bite
    line: int = 0


@dataclass(frozen=True)
class Expectation:
    """One check of the run; `name` is its JUnit test case name."""

    kind: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    target: Selector = field(default_factory=Selector)
    line: int = 0


@dataclass(frozen=True)
class Scenario:
    """A validated scenario file."""

    name: str
    description: str
    source: str
    seed: int
    clock: ClockSpec
    parts: Parts
    fleet: ScenarioFleet
    timeline: tuple[Event, ...]
    expectations: tuple[Expectation, ...]
    tags: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


# ------------------------------------------------------------------------------------------ loading

_TOP = {"name", "description", "seed", "clock", "parts", "fleet", "timeline", "expectations", "tags"}
_EVENT_KINDS = {
    "modbus_fault": {"gateway", "slave_id", "kind", "for", "code", "seconds", "probability"},
    "power_loss": {"gateways", "group", "for"},
    "reboot": {"gateways", "group"},
    "network_partition": {"gateways", "group", "for"},
    "clock_drift": {"gateways", "group", "ppm"},
    "broker_restart": {"down_for", "hold"},
    "consumer_kill": {"restart_after", "hold"},
    "database_outage": {"for", "hold"},
    "malformed_messages": {"gateway", "count", "kinds"},
    "attack": {"kind", "name", "attacker", "victim", "gateway", "certificate", "filters", "messages", "tenant",
               "other"},
}
_EXPECTATION_KINDS = {
    "readings_stored_equal_produced": {"gateways", "group", "min_readings"},
    "no_duplicates": set(),
    "in_order": {"gateways", "group"},
    "dead_letters": {"counts", "strict"},
    "gateway_online": {"at", "gateways", "group", "online", "settle"},
    "latency": {"p50_ms", "p95_ms", "p99_ms", "max_ms", "min_samples"},
    "all_published_acked": {"gateways", "group"},
    "attacks_refused": {"attacks"},
}


def load_scenario(path: str | Path) -> Scenario:
    """Load and validate a scenario file. Raises ConfigError naming file, line and field."""
    return parse_scenario(load_yaml(path))


def parse_scenario(doc: YMap) -> Scenario:
    """Validate a loaded scenario document."""
    check_keys(doc, _TOP, required={"clock", "fleet", "expectations"})
    stem = Path(doc.file).stem if doc.file and not doc.file.startswith("<") else "scenario"
    name = doc.get("name", stem)
    if not isinstance(name, str) or not _NAME.match(name):
        raise doc.error("name", "expected 1-64 characters of A-Z a-z 0-9 _ . - (used in report paths), "
                                f"got {name!r}")
    description = require_str(doc, "description", default="")
    seed = require_int(doc, "seed", min=0, max=2**63 - 1, default=0)
    tags = tuple(str(t) for t in require_list(doc, "tags", default=YList()))
    clock = _clock(require_map(doc, "clock"))
    parts = _parts(doc.get("parts"), doc)
    fleet = parse_scenario_fleet(require_map(doc, "fleet"), seed)
    timeline = tuple(_event(e, clock, fleet) for e in items(require_list(doc, "timeline", default=YList()),
                                                           what="an event like {at: 10m, power_loss: {...}}"))
    timeline = _name_attacks(timeline, parts, doc.file)
    expectations = _expectations(require_list(doc, "expectations"), clock, fleet, parts)
    _check_attack_expectations(expectations, timeline, doc)
    if parts.consumer == "in_process" and any(e.kind == "consumer_kill" for e in timeline):
        event = next(e for e in timeline if e.kind == "consumer_kill")
        raise ConfigError("consumer_kill needs `parts: {consumer: subprocess}` (a real process to kill)",
                          file=doc.file, line=event.line, field="timeline")
    return Scenario(name, description, doc.file, seed, clock, parts, fleet, timeline, expectations, tags, doc)


def _clock(m: YMap) -> ClockSpec:
    check_keys(m, {"mode", "duration", "start", "drain_timeout"}, required={"mode", "duration"})
    mode = one_of(m, "mode", ("real", "virtual"))
    duration = require(m, "duration", parse_duration, expected=DURATION_EXPECTED)
    start = None
    if "start" in m:
        start = require(m, "start", _datetime, expected="a time with a zone like 2026-03-01T00:00:00Z")
    drain = require(m, "drain_timeout", parse_duration, expected=DURATION_EXPECTED,
                    default=timedelta(seconds=60))
    return ClockSpec(mode, duration, start, drain)


def _datetime(value: object) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        raise TypeError(value)
    if parsed.tzinfo is None:
        raise ValueError(value)
    return parsed.astimezone(UTC)


def _parts(node: Any, doc: YMap) -> Parts:
    if node is None:
        return Parts()
    if not isinstance(node, YMap):
        raise doc.error("parts", "expected a mapping like {broker: embedded, database: embedded}, "
                                 f"got {node!r}")
    check_keys(node, {"broker", "database", "consumer"})
    broker_tls = False
    if isinstance(node.get("broker"), YMap) and "url" not in node["broker"]:
        # {kind: embedded|mosquitto, tls: true}
        b = node["broker"]
        check_keys(b, {"kind", "tls"}, required={"kind"})
        broker, broker_url = one_of(b, "kind", ("embedded", "mosquitto")), None
        broker_tls = require_bool(b, "tls", default=False)
    else:
        broker, broker_url = _choice_or_url(node, "broker", ("embedded", "mosquitto"), "url",
                                            ("mqtt://",), "mqtt://HOST:PORT")
    database, dsn = _choice_or_url(node, "database", ("embedded", "timescale"), "dsn",
                                   ("postgresql://", "postgres://", "host=", "dbname="), "postgresql://...")
    consumer = one_of(node, "consumer", ("in_process", "subprocess"), default="in_process")
    return Parts(broker=broker, broker_url=broker_url, database=database, database_dsn=dsn, consumer=consumer,
                 broker_tls=broker_tls)


def _choice_or_url(node: YMap, key: str, choices: tuple[str, ...], url_key: str, prefixes: tuple[str, ...],
                   example: str) -> tuple[str, str | None]:
    value = node.get(key, choices[0])
    if isinstance(value, str):
        return one_of(node, key, choices, default=choices[0]), None
    if isinstance(value, YMap):
        check_keys(value, {url_key}, required={url_key})
        url = require_str(value, url_key)
        if not url.startswith(prefixes):
            raise value.error(url_key, f"expected {example}, got {url!r}")
        return url_key, url
    extra = " or {kind: embedded|mosquitto, tls: true}" if key == "broker" else ""
    raise node.error(key, f"expected one of {', '.join(choices)} or {{{url_key}: {example}}}{extra}, "
                          f"got {value!r}")


def _offset(m: YMap, key: str, clock: ClockSpec, *, allow_zero: bool = True) -> timedelta:
    value = require(m, key, lambda v: parse_duration(v, allow_zero=allow_zero), expected=DURATION_EXPECTED)
    if value > clock.duration:
        raise m.error(key, f"{m[key]} is after the end of the run (clock.duration {clock.duration})")
    return value


def _selector(m: YMap, fleet: ScenarioFleet, *, single: str | None = None) -> Selector:
    """`gateways: [code|mac, ...]` and/or `group: NAME` (or `gateway: code|mac` when `single` names it)."""
    refs: list[str] = []
    by_code, by_mac = fleet.by_code(), fleet.by_mac()
    if single is not None:
        refs_node: list = [m[single]] if single in m else []
        key_for = single
    else:
        raw = m.get("gateways", [])
        refs_node = raw if isinstance(raw, list) else [raw]
        key_for = "gateways"
    for ref in refs_node:
        if not isinstance(ref, str):
            raise m.error(key_for, f"expected gateway codes or MACs, got {ref!r}")
        known = ref in by_code
        if not known:
            try:
                known = normalize_mac(ref) in by_mac
            except ValueError:
                known = False
        if not known:
            raise m.error(key_for, f"no gateway {ref!r} in the fleet{suggest(ref, list(by_code)) or ''}")
        refs.append(ref)
    groups: list[str] = []
    if "group" in m:
        g = m["group"]
        names = g if isinstance(g, list) else [g]
        for name in names:
            if name not in fleet.groups:
                known = ", ".join(sorted(fleet.groups)) or "none: set `group:` on gateways or groups"
                raise m.error("group", f"no gateway group {name!r} in the fleet (groups: {known})")
            groups.append(name)
    return Selector(tuple(refs), tuple(groups))


def _event(e: YMap, clock: ClockSpec, fleet: ScenarioFleet) -> Event:
    kinds = [k for k in e if k != "at"]
    if "at" not in e:
        raise e.error(None, "missing required key 'at' (when the event happens, e.g. at: 10m)")
    if len(kinds) != 1:
        allowed = ", ".join(sorted(_EVENT_KINDS))
        if not kinds:
            raise e.error(None, f"expected one event key besides 'at' ({allowed})")
        raise e.error(kinds[1], f"one event per timeline item, got {', '.join(map(str, kinds))}")
    check_keys(e, set(_EVENT_KINDS) | {"at"})
    kind = kinds[0]
    at = _offset(e, "at", clock)
    body = e[kind] if e[kind] is not None else YMap()
    if not isinstance(body, YMap):
        raise e.error(kind, f"expected a mapping of event settings, got {body!r}")
    if not body.path:  # an empty `kind:` gives None: give the placeholder a place for errors
        body.file, body.line, body.path, body._lines = e.file, e.line_of(kind), e.child_path(kind), {}
    check_keys(body, _EVENT_KINDS[kind])
    params: dict[str, Any] = {}
    duration = None
    hold = timedelta(seconds=2)
    target = Selector()

    def for_key(key: str, required: bool) -> timedelta | None:
        if key not in body:
            if required:
                raise body.error(None, f"missing required key {key!r} (how long, e.g. {key}: 5m)")
            return None
        value = require(body, key, parse_duration, expected=DURATION_EXPECTED)
        return value

    if kind == "modbus_fault":
        check_keys(body, _EVENT_KINDS[kind], required={"gateway", "slave_id", "kind"})
        target = _selector(body, fleet, single="gateway")
        params["slave_id"] = require_int(body, "slave_id", min=1, max=247)
        mac = target.macs(fleet)[0]
        slaves = {d.slave_id for d in fleet.by_mac()[mac].gateway.devices}
        if params["slave_id"] not in slaves:
            raise body.error("slave_id", f"gateway {target.gateways[0]} has no meter on slave "
                                         f"{params['slave_id']} (slaves: {sorted(slaves)})")
        params["kind"] = one_of(body, "kind", MODBUS_FAULTS)
        if "code" in body:
            params["code"] = require_int(body, "code", min=1, max=11)
        if "seconds" in body:
            params["seconds"] = require_float(body, "seconds", min=0.001, max=600)
        elif params["kind"] == "delay":
            raise body.error(None, "missing required key 'seconds' (a delay fault needs it)")
        if "probability" in body:
            params["probability"] = require_float(body, "probability", min=0.0001, max=1)
        duration = for_key("for", required=False)
    elif kind in ("power_loss", "reboot", "network_partition", "clock_drift"):
        target = _selector(body, fleet)
        if not target.gateways and not target.groups:
            raise body.error(None, "name the gateways: `gateways: [GW-001, ...]` and/or `group: NAME`")
        if kind in ("power_loss", "network_partition"):
            duration = for_key("for", required=False)
        if kind == "clock_drift":
            params["ppm"] = require_float(body, "ppm", min=-1e6, max=1e6)
    elif kind == "broker_restart":
        duration = for_key("down_for", required=False) or timedelta(0)
    elif kind == "consumer_kill":
        duration = for_key("restart_after", required=False) or timedelta(0)
    elif kind == "database_outage":
        duration = for_key("for", required=True)
    elif kind == "malformed_messages":
        check_keys(body, _EVENT_KINDS[kind], required={"gateway"})
        target = _selector(body, fleet, single="gateway")
        params["count"] = require_int(body, "count", min=1, max=100_000, default=10)
        kinds = require_list(body, "kinds", default=YList(MALFORMED_KINDS))
        for i, k in enumerate(kinds):
            if k not in MALFORMED_KINDS:
                    raise kinds.error(i, f"expected one of {', '.join(MALFORMED_KINDS)}, got {k!r}"
                                     f"{suggest(k, MALFORMED_KINDS)}")
        params["kinds"] = tuple(kinds)
    elif kind == "attack":
        params = _attack(body, fleet)
        target = Selector(tuple(params[k] for k in ("attacker", "victim", "gateway") if k in params))
    if kind in ("broker_restart", "consumer_kill", "database_outage") and "hold" in body:
        hold = require(body, "hold", lambda v: parse_duration(v, allow_zero=True), expected=DURATION_EXPECTED)
    return Event(kind, at, duration, target, params, hold, e.line)


def _expectations(lst: YList, clock: ClockSpec, fleet: ScenarioFleet,
                  parts: Parts) -> tuple[Expectation, ...]:
    out: list[Expectation] = []
    names: dict[str, int] = {}
    for i, item in enumerate(lst):
        if isinstance(item, str):
            body = YMap()
            body.file, body.line, body.path, body._lines = lst.file, lst.line_of(i), lst.child_path(i), {}
            kind = item
            holder: YMap | None = None
        elif isinstance(item, YMap) and len(item) == 1:
            kind = next(iter(item))
            holder = item
            raw = item[kind]
            if raw is None:
                body = YMap()
                body.file, body.line, body.path, body._lines = item.file, item.line, item.child_path(kind), {}
            elif isinstance(raw, YMap):
                body = raw
            elif kind == "attacks_refused" and raw == "all":
                body = YMap()
                body.file, body.line, body.path, body._lines = item.file, item.line, item.child_path(kind), {}
            else:
                hint = " (or `all`)" if kind == "attacks_refused" else ""
                raise item.error(kind, f"expected a mapping of settings{hint}, got {raw!r}")
        else:
            raise lst.error(i, "expected an expectation name or a one-key mapping like "
                               "{latency: {p95_ms: 500}}")
        if kind not in _EXPECTATION_KINDS:
            where = holder.error(kind, "") if holder else lst.error(i, "")
            raise ConfigError(f"unknown expectation {kind!r}{suggest(kind, _EXPECTATION_KINDS) or ''} "
                              f"(known: {', '.join(sorted(_EXPECTATION_KINDS))})",
                              file=where.file, line=where.line, field=lst.child_path(i))
        out.append(_expectation(kind, body, clock, fleet, parts, lst.line_of(i)))
    for exp in out:  # unique JUnit names: suffix repeats with their line
        names[exp.name] = names.get(exp.name, 0) + 1
    return tuple(
        Expectation(e.kind, f"{e.name}@line{e.line}" if names[e.name] > 1 else e.name, e.params, e.target,
                    e.line)
        for e in out
    )


def _expectation(kind: str, body: YMap, clock: ClockSpec, fleet: ScenarioFleet, parts: Parts,
                 line: int) -> Expectation:
    if kind == "dead_letters":
        # `dead_letters: {malformed_json: 3}` or `dead_letters: {counts: {...}, strict: false}`
        if "counts" in body:
            check_keys(body, _EXPECTATION_KINDS[kind], required={"counts"})
            counts_node, strict = require_map(body, "counts"), require_bool(body, "strict", default=True)
        else:
            counts_node, strict = body, True
        counts: dict[str, int] = {}
        at_least: dict[str, int] = {}
        for reason in counts_node:
            if reason not in REASONS:
                hint = suggest(reason, REASONS) or ""
                raise counts_node.error(reason, f"unknown dead-letter reason{hint}")
            value = counts_node[reason]
            if isinstance(value, str) and re.fullmatch(r"\d+\+", value.strip()):
                at_least[reason] = int(value.strip()[:-1])  # "1+": at least one (a count the run decides)
                continue
            counts[reason] = require_int(counts_node, reason, min=0)
        desc = ", ".join([f"{k}={v}" for k, v in counts.items()] + [f"{k}>={v}" for k, v in at_least.items()])
        return Expectation(kind, f"dead_letters[{desc or 'none'}]",
                           {"counts": counts, "strict": strict, "at_least": at_least}, line=line)
    check_keys(body, _EXPECTATION_KINDS[kind])
    target = _selector(body, fleet) if {"gateways", "group"} & set(body) else Selector()
    suffix = f"[{target.describe()}]" if target.gateways or target.groups else ""
    params: dict[str, Any] = {}
    if kind == "readings_stored_equal_produced":
        params["min_readings"] = require_int(body, "min_readings", min=0, default=1)
    elif kind == "gateway_online":
        check_keys(body, _EXPECTATION_KINDS[kind], required={"at", "online"})
        params["at"] = _offset(body, "at", clock)
        params["online"] = require_bool(body, "online")
        params["settle"] = require(body, "settle", parse_duration, expected=DURATION_EXPECTED,
                                   default=timedelta(seconds=15))
        suffix = f"[{target.describe()} {'online' if params['online'] else 'offline'} at {body['at']}]"
    elif kind == "attacks_refused":
        # one JUnit case per attack; `attacks: [name, ...]` limits it to some (names checked against the timeline)
        names = require_list(body, "attacks", default=YList())
        params["attacks"] = tuple(str(n) for n in names)
        params["line_of"] = {str(n): body.line for n in names}
        return Expectation(kind, kind, params, Selector(), line)
    elif kind == "latency":
        if parts.consumer != "in_process":
            raise body.error(None, "latency is measured from the in-process consumer's commits: "
                                   "it needs `parts: {consumer: in_process}`")
        for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
            if key in body:
                params[key] = require_float(body, key, min=0)
        if not params:
            raise body.error(None, "name at least one bound: p50_ms, p95_ms, p99_ms or max_ms")
        params["min_samples"] = require_int(body, "min_samples", min=1, default=1)
        suffix = "[" + ", ".join(f"{k}<={v:g}" for k, v in params.items() if k.endswith("_ms")) + "]"
    return Expectation(kind, kind + suffix, params, target, line)


# ------------------------------------------------------------------------------------------ attacks

def _gateway_ref(body: YMap, key: str, fleet: ScenarioFleet) -> str:
    """A gateway named by code or MAC -> its MAC."""
    return _selector(body, fleet, single=key).macs(fleet)[0]


def _attack(body: YMap, fleet: ScenarioFleet) -> dict[str, Any]:
    """`attack: {kind: ..., ...}` -> params (gateways as MACs)."""
    if "kind" not in body:
        raise body.error(None, f"missing required key 'kind' (one of {', '.join(ATTACKS)})")
    kind = one_of(body, "kind", tuple(ATTACKS))
    required, optional, _ = ATTACKS[kind]
    check_keys(body, required | optional | {"kind", "name"}, required=required)
    params: dict[str, Any] = {"attack": kind}
    if "name" in body:
        name = require_str(body, "name")
        if not _NAME.match(name):
            raise body.error("name", f"expected 1-64 characters of A-Z a-z 0-9 _ . -, got {name!r}")
        params["name"] = name
    for key in ("attacker", "victim", "gateway"):
        if key in body:
            params[key] = _gateway_ref(body, key, fleet)
    if "attacker" in params and params.get("victim") == params["attacker"]:
        raise body.error("victim", "the victim must be another gateway than the attacker")
    if kind == "bad_certificate":
        params["certificate"] = one_of(body, "certificate", BAD_CERTIFICATES)
    if "filters" in body:
        filters = require_list(body, "filters")
        for i, f in enumerate(filters):
            if not isinstance(f, str) or not f:
                raise filters.error(i, f"expected an MQTT topic filter, got {f!r}")
        params["filters"] = tuple(filters)
    if "messages" in body:
        params["messages"] = require_int(body, "messages", min=1, max=1000)
    for key in ("tenant", "other"):
        if key in body:
            code = require_str(body, key)
            tenants = sorted({g.tenant for g in fleet.gateways})
            if code not in tenants:
                raise body.error(key, f"no tenant {code!r} with gateways in the fleet (tenants: {', '.join(tenants)})")
            params[key] = code
    if kind == "tenant_isolation" and params["tenant"] == params["other"]:
        raise body.error("other", "name two different tenants")
    return params


def attack_name(params: dict[str, Any]) -> str:
    """Default verdict name: the kind, plus the certificate for bad_certificate."""
    if "name" in params:
        return params["name"]
    if params["attack"] == "bad_certificate":
        return f"bad_certificate:{params['certificate']}"
    return params["attack"]


def _name_attacks(timeline: tuple[Event, ...], parts: Parts, file: str | None) -> tuple[Event, ...]:
    """Give every attack a unique name (repeats get @lineN) and refuse certificate attacks without mTLS."""
    attacks = [e for e in timeline if e.kind == "attack"]
    counts: dict[str, int] = {}
    for e in attacks:
        counts[attack_name(e.params)] = counts.get(attack_name(e.params), 0) + 1
    out = []
    for e in timeline:
        if e.kind == "attack":
            kind = e.params["attack"]
            if ATTACKS[kind][2] and not parts.broker_tls:
                raise ConfigError(f"attack {kind} needs an mTLS broker: `parts: {{broker: {{kind: embedded, "
                                  "tls: true}}}}` (or mosquitto)", file=file, line=e.line,
                                  field="timeline")
            name = attack_name(e.params)
            name = f"{name}@line{e.line}" if counts[name] > 1 else name
            e = Event(e.kind, e.at, e.duration, e.target, {**e.params, "name": name}, e.hold, e.line)
        out.append(e)
    return tuple(out)


def _check_attack_expectations(expectations: tuple[Expectation, ...], timeline: tuple[Event, ...],
                               doc: YMap) -> None:
    names = [e.params["name"] for e in timeline if e.kind == "attack"]
    for exp in expectations:
        if exp.kind != "attacks_refused":
            continue
        if not names:
            raise ConfigError("attacks_refused: the timeline has no attack events", file=doc.file, line=exp.line,
                              field="expectations")
        for name in exp.params["attacks"]:
            if name not in names:
                raise ConfigError(f"attacks_refused.attacks: no attack named {name!r} in the timeline "
                                  f"(attacks: {', '.join(names)})", file=doc.file, line=exp.line,
                                  field="expectations")
