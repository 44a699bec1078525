"""Expectation checkers: each turns (expectation, observations) into an Outcome with a clear message.

Pure functions over :class:`~scenarios.observations.Observations`, so tests feed them synthetic data and
watch them fail. A failure message says what was expected, what was found, and the first few differing rows.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .fleetdef import ScenarioFleet
from .observations import (
    EXAMPLES,
    MISSING,
    NEVER_SERVED,
    NOT_PRODUCED,
    WRONG_VALUE,
    Observations,
    RowExample,
    RowKey,
)
from .schema import Expectation

SHOW = 5  # differing rows shown in a message
assert SHOW <= EXAMPLES  # the comparison keeps EXAMPLES per gateway and kind


@dataclass
class Outcome:
    """The verdict on one expectation: one JUnit test case."""

    name: str
    kind: str
    passed: bool
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    error: bool = False  # the check could not run (the run broke before it): JUnit <error>, not <failure>

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "passed": self.passed, "error": self.error,
                "message": self.message, "details": self.details}


def check_all(expectations: Iterable[Expectation], obs: Observations, fleet: ScenarioFleet) -> list[Outcome]:
    """Check every expectation; a checker that raises becomes an errored outcome, never a crash."""
    out: list[Outcome] = []
    for exp in expectations:
        try:
            result = CHECKERS[exp.kind](exp, obs, fleet)
            out.extend(result if isinstance(result, list) else [result])  # attacks_refused: one per attack
        except Exception as exc:  # a checker bug must show up in the report, not hide the others
            out.append(Outcome(exp.name, exp.kind, False, f"checker failed: {type(exc).__name__}: {exc}",
                               error=True))
    return out


def _row(key: RowKey, codes: dict[str, str]) -> str:
    mac, device, at = key
    return f"{codes.get(mac, mac)}/{device}@{at.isoformat()}"


def _rows(examples: Iterable[RowExample], codes: dict[str, str]) -> str:
    return ", ".join(_row(e.key, codes) for e in examples)


def _macs(exp: Expectation, fleet: ScenarioFleet) -> set[str]:
    return set(exp.target.macs(fleet))


def check_stored_equal_produced(exp: Expectation, obs: Observations, fleet: ScenarioFleet) -> Outcome:
    """Every acked reading is stored once with the value the gateway published (and the meter served);
    nothing is stored that no meter served."""
    macs = _macs(exp, fleet)
    cmp = obs.comparison()
    n = {attr: cmp.total(attr, macs) for attr in ("expected", "stored", "missing", "not_produced", "wrong_value",
                                                  "value_never_served", "stored_but_not_acked")}
    details = {"expected": n["expected"], "stored": n["stored"], "missing": n["missing"],
               "not_produced": n["not_produced"], "wrong_value": n["wrong_value"],
               "value_never_served": n["value_never_served"], "stored_but_not_acked": n["stored_but_not_acked"]}
    codes = obs.gateway_codes
    problems = []
    if n["missing"]:
        problems.append(f"{n['missing']} acked readings missing from the database (first: "
                        f"{_rows(cmp.first(MISSING, macs, SHOW), codes)})")
    if n["not_produced"]:
        problems.append(f"{n['not_produced']} stored rows no meter produced (first: "
                        f"{_rows(cmp.first(NOT_PRODUCED, macs, SHOW), codes)})")
    if n["wrong_value"]:
        shown = ", ".join(f"{_row(e.key, codes)} stored {e.stored!r} published {e.published!r}"
                          for e in cmp.first(WRONG_VALUE, macs, SHOW))
        problems.append(f"{n['wrong_value']} stored values differ from the published ones ({shown})")
    if n["value_never_served"]:
        problems.append(f"{n['value_never_served']} stored values were never served by their meter (first: "
                        f"{_rows(cmp.first(NEVER_SERVED, macs, SHOW), codes)})")
    minimum = exp.params.get("min_readings", 1)
    if n["expected"] < minimum:
        problems.append(f"only {n['expected']} readings were acked, expected at least {minimum} "
                        "(the fleet did not produce enough to prove anything)")
    if problems:
        return Outcome(exp.name, exp.kind, False, "; ".join(problems), details)
    extra_unacked = n["stored_but_not_acked"]
    return Outcome(exp.name, exp.kind, True,
                   f"{n['expected']} acked readings all stored once with their values"
                   + (f" ({extra_unacked} more stored whose PUBACK never reached the gateway)"
                      if extra_unacked else ""), details)


def check_no_duplicates(exp: Expectation, obs: Observations, fleet: ScenarioFleet) -> Outcome:
    """No reading stored twice, nothing stored that was not produced, and the accounting is consistent.

    The unique key (device, time) makes a second row impossible, so a duplicate shows up elsewhere: as a
    stored row that no meter served (a redelivery rewritten with another time or value), or as a gateway
    whose acked + dropped messages exceed what it ever published.
    """
    cmp = obs.comparison()
    phantom, stored = cmp.total("not_produced"), cmp.total("stored")
    unbalanced = {}
    for mac in set(obs.published) | set(obs.acked) | set(obs.dropped):
        # every acked or dropped message was published at least once (queue writes cut by a power loss
        # count as dropped without ever being published)
        settled = obs.acked.get(mac, 0) + obs.dropped.get(mac, 0) - obs.lost_on_power_loss.get(mac, 0)
        if settled > obs.published.get(mac, 0):
            unbalanced[mac] = (obs.published.get(mac, 0), settled)
    details = {"stored": stored, "not_produced": phantom, "unbalanced_gateways": len(unbalanced),
               "redelivered_rows_skipped": obs.redelivered_rows}
    problems = []
    if phantom:
        problems.append(f"{phantom} stored rows were never produced (first: "
                        f"{_rows(cmp.first(NOT_PRODUCED, None, SHOW), obs.gateway_codes)})")
    if unbalanced:
        first = sorted(unbalanced)[:SHOW]
        shown = ", ".join(f"{obs.gateway_codes.get(m, m)} acked+dropped {unbalanced[m][1]} > published "
                          f"{unbalanced[m][0]}" for m in first)
        problems.append(f"{len(unbalanced)} gateways' accounting does not balance ({shown})")
    if problems:
        return Outcome(exp.name, exp.kind, False, "; ".join(problems), details)
    return Outcome(exp.name, exp.kind, True,
                   f"{stored} rows, each produced once; {obs.redelivered_rows} redelivered rows "
                   "were skipped by the unique key", details)


def check_all_published_acked(exp: Expectation, obs: Observations, fleet: ScenarioFleet) -> Outcome:
    """After the drain, no gateway still holds or has dropped a message: everything published was acked.

    A queue write cut by a power loss never became a message (it was never published): it is reported, not
    counted as a drop. Dropping a message that existed (queue overflow, corrupt entry) fails the check.
    """
    macs = _macs(exp, fleet)

    def dropped(mac: str) -> int:
        return obs.dropped.get(mac, 0) - obs.lost_on_power_loss.get(mac, 0)

    bad = {m: (obs.published.get(m, 0), obs.acked.get(m, 0), dropped(m), obs.queued.get(m, 0))
           for m in sorted(macs) if dropped(m) or obs.queued.get(m, 0)
           or obs.published.get(m, 0) < obs.acked.get(m, 0) or not obs.acked.get(m, 0)}
    total = sum(obs.published.get(m, 0) for m in macs)
    lost = sum(obs.lost_on_power_loss.get(m, 0) for m in macs)
    details = {"gateways": len(macs), "published": total, "acked": sum(obs.acked.get(m, 0) for m in macs),
               "gateways_not_clean": len(bad), "lost_on_power_loss": lost}
    if not obs.drained:
        return Outcome(exp.name, exp.kind, False, "gateway queues were not empty after the drain timeout",
                       details)
    if bad:
        shown = ", ".join(f"{obs.gateway_codes.get(m, m)} published {p} acked {a} dropped {d} queued {q}"
                          for m, (p, a, d, q) in list(bad.items())[:SHOW])
        return Outcome(exp.name, exp.kind, False, f"{len(bad)} gateways did not get everything acked ({shown})",
                       details)
    if total == 0:
        return Outcome(exp.name, exp.kind, False, "no gateway published anything", details)
    note = f"; {lost} queue writes lost with the power (never published)" if lost else ""
    return Outcome(exp.name, exp.kind, True,
                   f"{total} messages published by {len(macs)} gateways, all acked{note}", details)


def check_in_order(exp: Expectation, obs: Observations, fleet: ScenarioFleet) -> Outcome:
    """Per gateway and device, stored times equal the acked sequence and were committed in time order.

    Order of storage comes from the database itself: the id of the transaction that wrote each row
    (xmin). Along increasing reading time, that id must never go down.
    """
    macs = _macs(exp, fleet)
    cmp = obs.comparison()
    problems = []
    for p in sorted((p for p in cmp.series_problems if p.mac in macs), key=lambda p: (p.mac, p.code)):
        name = f"{obs.gateway_codes.get(p.mac, p.mac)}/{p.code}"
        if p.missing and p.first_missing is not None:
            problems.append(f"{name}: {p.missing} acked readings not stored (first {p.first_missing.isoformat()})")
        if p.inversion is not None:
            t0, t1, x0, x1 = p.inversion
            problems.append(f"{name}: reading {t1.isoformat()} was committed before the earlier {t0.isoformat()} "
                            f"(xid {x1} < {x0})")
    series = cmp.total("series", macs)
    details = {"series": series, "problems": len(problems)}
    if problems:
        return Outcome(exp.name, exp.kind, False,
                       f"{len(problems)} series out of order or incomplete: " + "; ".join(problems[:SHOW]), details)
    if not cmp.total("stored", macs):
        return Outcome(exp.name, exp.kind, False, "nothing stored for the selected gateways", details)
    return Outcome(exp.name, exp.kind, True,
                   f"{series} series stored complete and in time order", details)


def check_dead_letters(exp: Expectation, obs: Observations, fleet: ScenarioFleet) -> Outcome:
    """Dead-letter counts by reason equal the expected ones (and, when strict, no other reason occurs)."""
    want: dict[str, int] = exp.params["counts"]
    at_least: dict[str, int] = exp.params.get("at_least", {})  # "N+" in the file: the run decides how many
    got = Counter(d.reason for d in obs.dead_letters)
    reasons = (set(want) | (set(got) if exp.params.get("strict", True) else set())) - set(at_least)
    diffs: dict[str, tuple[Any, int]] = {r: (want.get(r, 0), got.get(r, 0)) for r in sorted(reasons)
                                         if want.get(r, 0) != got.get(r, 0)}
    diffs.update({r: (f"at least {n}", got.get(r, 0)) for r, n in at_least.items() if got.get(r, 0) < n})
    details = {"expected": {**want, **{r: f">={n}" for r, n in at_least.items()}}, "actual": dict(got),
               "injected": dict(obs.malformed_sent)}
    if diffs:
        shown = ", ".join(f"{r}: expected {w}, got {g}" for r, (w, g) in diffs.items())
        samples = [f"{d.reason} on {d.topic}: {d.detail}" for d in obs.dead_letters
                   if d.reason in diffs][:SHOW]
        more = f" (e.g. {'; '.join(samples)})" if samples else ""
        return Outcome(exp.name, exp.kind, False, f"dead letters differ: {shown}{more}", details)
    total = sum(got.values())
    return Outcome(exp.name, exp.kind, True, f"{total} dead letters, as expected by reason", details)


def check_gateway_online(exp: Expectation, obs: Observations, fleet: ScenarioFleet) -> Outcome:
    """At the given fleet time, the database showed the selected gateways online (or offline)."""
    sample = next((s for s in obs.online_samples if s.expectation == exp.name), None)
    want = exp.params["online"]
    state = "online" if want else "offline"
    if sample is None:
        return Outcome(exp.name, exp.kind, False, "the run ended before this time was reached", error=True)
    wrong = {m: v for m, v in sample.observed.items() if v is not want}
    details = {"at_s": sample.at_s, "gateways": len(sample.observed), "wrong": len(wrong),
               "waited_s": round(sample.waited_s, 3)}
    if wrong:
        shown = ", ".join(f"{obs.gateway_codes.get(m, m)}={'unknown' if v is None else ('online' if v else 'offline')}"
                          for m, v in sorted(wrong.items())[:SHOW])
        return Outcome(exp.name, exp.kind, False,
                       f"{len(wrong)} of {len(sample.observed)} gateways not {state} "
                       f"{exp.params.get('settle')} after the time ({shown})", details)
    return Outcome(exp.name, exp.kind, True, f"{len(sample.observed)} gateways {state}", details)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def check_latency(exp: Expectation, obs: Observations, fleet: ScenarioFleet) -> Outcome:
    """Publish -> committed latency percentiles (wall time) under the given bounds."""
    values = obs.latencies_ms
    need = exp.params.get("min_samples", 1)
    if len(values) < need:
        return Outcome(exp.name, exp.kind, False,
                       f"{len(values)} latency samples, expected at least {need}", {"samples": len(values)})
    measured = {"p50_ms": percentile(values, 50), "p95_ms": percentile(values, 95),
                "p99_ms": percentile(values, 99), "max_ms": max(values)}
    details = {"samples": len(values), **{k: round(v, 2) for k, v in measured.items()}}
    over = [f"{k} {measured[k]:.1f} > {exp.params[k]:g}" for k in measured if k in exp.params
            and measured[k] > exp.params[k]]
    summary = ", ".join(f"{k} {v:.1f}" for k, v in measured.items())
    if over:
        return Outcome(exp.name, exp.kind, False, f"latency over bound: {'; '.join(over)} ({summary})", details)
    return Outcome(exp.name, exp.kind, True, f"{len(values)} samples: {summary}", details)


def check_attacks_refused(exp: Expectation, obs: Observations, fleet: ScenarioFleet) -> list[Outcome]:
    """One outcome per attack (JUnit case `attack[NAME]`): passed when the observed outcome is the expected one.

    A verdict that is a known limitation (e.g. Mosquitto's $share hole) is still a failure, saying so.
    """
    verdicts = list(getattr(obs, "verdicts", []))
    wanted = exp.params.get("attacks") or ()
    if wanted:
        verdicts = [v for v in verdicts if v.name in wanted]
    out = []
    for v in verdicts:
        message = f"expected {v.expected}, observed {v.observed}: {v.evidence}"
        out.append(Outcome(f"attack[{v.name}]", exp.kind, v.passed, message, v.to_json()))
    ran = {v.name for v in verdicts}
    for name in wanted:
        if name not in ran:
            out.append(Outcome(f"attack[{name}]", exp.kind, False, "the attack did not run (the run ended before "
                               "it)", error=True))
    if not out:
        out.append(Outcome(exp.name, exp.kind, False, "no attack ran", error=True))
    return out


CHECKERS: dict[str, Callable[[Expectation, Observations, ScenarioFleet], Any]] = {
    "readings_stored_equal_produced": check_stored_equal_produced,
    "no_duplicates": check_no_duplicates,
    "all_published_acked": check_all_published_acked,
    "in_order": check_in_order,
    "dead_letters": check_dead_letters,
    "gateway_online": check_gateway_online,
    "latency": check_latency,
    "attacks_refused": check_attacks_refused,
}
