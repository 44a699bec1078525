"""Report writers: `result.json`, `junit.xml` (one test case per expectation), `report.html` (inline SVG).

`write_reports(run_dir, result)` writes all three. `RunResult` is the whole verdict of one run.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

from . import svgplot
from .expectations import Outcome, percentile
from .observations import Observations


@dataclass
class RunResult:
    """A finished (or broken) run: what was asked, what happened, and the verdicts."""

    scenario: str
    source: str
    run_id: str
    started_at: datetime
    wall_seconds: float
    fleet_seconds: float
    clock_mode: str
    parts: dict[str, Any]
    outcomes: list[Outcome]
    observations: Observations
    events: list[dict[str, Any]] = field(default_factory=list)  # what the timeline did, when
    error: str | None = None  # the run broke (a part failed); expectations then carry errors
    description: str = ""

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.outcomes) and all(o.passed for o in self.outcomes)

    def summary(self) -> dict[str, Any]:
        obs = self.observations
        lat = obs.latencies_ms
        return {
            "gateways": len(obs.gateway_codes),
            "distinct_values_served": obs.served_count(),
            "readings_acked": obs.expected_count(),
            "rows_stored": obs.stored_count(),
            "messages_published": sum(obs.published.values()),
            "messages_acked": sum(obs.acked.values()),
            "messages_dropped": sum(obs.dropped.values()),
            "dead_letters": len(obs.dead_letters),
            "redelivered_rows": obs.redelivered_rows,
            "latency_ms": ({"p50": percentile(lat, 50), "p95": percentile(lat, 95), "p99": percentile(lat, 99),
                            "max": max(lat), "samples": len(lat)} if lat else None),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario, "source": self.source, "run": self.run_id,
            "description": self.description,
            "started_at": self.started_at.isoformat(), "wall_seconds": round(self.wall_seconds, 3),
            "fleet_seconds": self.fleet_seconds, "clock": self.clock_mode, "parts": self.parts,
            "passed": self.passed, "error": self.error, "summary": self.summary(),
            "expectations": [o.to_json() for o in self.outcomes], "events": self.events,
            "accounting": self.observations.accounting_snapshot,
        }


def write_reports(run_dir: Path, result: RunResult) -> dict[str, Path]:
    """Write result.json, junit.xml and report.html into `run_dir` (created); return their paths."""
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": run_dir / "result.json", "junit": run_dir / "junit.xml", "html": run_dir / "report.html"}
    paths["json"].write_text(json.dumps(result.to_json(), indent=2, default=str) + "\n", encoding="utf-8")
    paths["junit"].write_text(junit_xml(result), encoding="utf-8")
    paths["html"].write_text(html_report(result), encoding="utf-8")
    return paths


def junit_xml(result: RunResult) -> str:
    """JUnit XML: one testsuite (the scenario), one testcase per expectation."""
    failures = sum(1 for o in result.outcomes if not o.passed and not o.error)
    errors = sum(1 for o in result.outcomes if o.error)
    suite = ET.Element("testsuite", name=result.scenario, tests=str(len(result.outcomes)),
                       failures=str(failures), errors=str(errors), time=f"{result.wall_seconds:.3f}",
                       timestamp=result.started_at.isoformat())
    props = ET.SubElement(suite, "properties")
    for key, value in (("source", result.source), ("run", result.run_id), ("clock", result.clock_mode),
                       *((f"parts.{k}", str(v)) for k, v in result.parts.items())):
        ET.SubElement(props, "property", name=key, value=str(value))
    for o in result.outcomes:
        case = ET.SubElement(suite, "testcase", classname=f"scenario.{result.scenario}", name=o.name, time="0")
        if o.error:
            ET.SubElement(case, "error", message=o.message, type=o.kind).text = o.message
        elif not o.passed:
            ET.SubElement(case, "failure", message=o.message, type=o.kind).text = (
                o.message + "\n" + json.dumps(o.details, indent=2, default=str))
        else:
            ET.SubElement(case, "system-out").text = o.message
    if result.error:
        ET.SubElement(suite, "system-err").text = result.error
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


def _rate_points(obs: Observations, buckets: int = 120) -> list[tuple[float, float]]:
    if not obs.commits:
        return []
    end = max(t for t, _ in obs.commits) or 1.0
    width = max(end / buckets, 0.5)
    counts: dict[int, int] = {}
    for t, rows in obs.commits:
        counts[int(t / width)] = counts.get(int(t / width), 0) + rows
    last = int(end / width)
    return [(i * width, counts.get(i, 0) / width) for i in range(last + 1)]


def html_report(result: RunResult) -> str:
    """A self-contained HTML page: verdicts, summary, events, and three inline SVG charts."""
    obs = result.observations
    verdict = "PASSED" if result.passed else "FAILED"
    colour = "#2a7" if result.passed else "#c33"
    rows = []
    for o in result.outcomes:
        state = "pass" if o.passed else ("error" if o.error else "FAIL")
        rows.append(f"<tr class='{state.lower()}'><td>{state}</td><td>{escape(o.name)}</td>"
                    f"<td>{escape(o.message)}</td></tr>")
    summary = "".join(f"<tr><th>{escape(k)}</th><td>{escape(_human(v))}</td></tr>"
                      for k, v in result.summary().items())
    events = "".join(f"<tr><td>{escape(str(e.get('fleet_offset', '')))}</td><td>{escape(str(e.get('wall_s', '')))}"
                     f"</td><td>{escape(str(e.get('event', '')))}</td><td>{escape(str(e.get('detail', '')))}</td></tr>"
                     for e in result.events)
    macs = sorted(obs.gateway_codes, key=lambda m: obs.gateway_codes[m])
    expected, stored = obs.expected_per_gateway(), obs.stored_per_gateway()
    delivery = svgplot.bar_chart(
        [obs.gateway_codes[m] for m in macs],
        [("acked readings", [expected.get(m, 0) for m in macs], "#1f77b4"),
         ("stored rows", [stored.get(m, 0) for m in macs], "#ff7f0e")],
        title="Delivery per gateway", x_label="gateway", y_label="readings")
    rate = svgplot.line_chart(_rate_points(obs), title="Readings stored per second", x_label="wall seconds",
                              y_label="rows/s")
    latency = svgplot.histogram(obs.latencies_ms, title="Publish → stored latency", x_label="ms")
    error = f"<p class='err'>Run error: {escape(result.error)}</p>" if result.error else ""
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{escape(result.scenario)} {escape(result.run_id)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1100px; }}
h1 span {{ color: {colour}; }} table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; font-size: 13px; }}
tr.fail td:first-child, tr.error td:first-child {{ color: #c33; font-weight: bold; }}
tr.pass td:first-child {{ color: #2a7; }} .err {{ color: #c33; font-weight: bold; }}
</style></head><body>
<h1>{escape(result.scenario)} <span>{verdict}</span></h1>
<p>{escape(result.description)}</p>
<p>Run {escape(result.run_id)} from <code>{escape(result.source)}</code>: {result.clock_mode} clock,
{result.fleet_seconds:g} fleet seconds in {result.wall_seconds:.1f} wall seconds; parts
{escape(_human({k: v for k, v in result.parts.items() if v not in (None, False)}))}.</p>{error}
<h2>Expectations</h2><table><tr><th>verdict</th><th>expectation</th><th>detail</th></tr>{''.join(rows)}</table>
<h2>Summary</h2><table>{summary}</table>
<h2>Charts</h2>{rate}<br>{latency}<br>{delivery}
<h2>Timeline</h2><table><tr><th>fleet time</th><th>wall s</th><th>event</th><th>detail</th></tr>{events}</table>
</body></html>
"""


def _human(value: Any) -> str:
    """A summary value for people: numbers rounded, mappings as `key value, ...`, not raw JSON."""
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 1 else f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_human(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_human(v) for v in value)
    return str(value)
