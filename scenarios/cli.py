"""`tds run SCENARIO.yaml [...]`: run scenarios, write reports, exit 0 only when every expectation holds.

Exit codes: 0 all expectations hold; 1 an expectation failed or the run broke (reports still written);
2 a scenario file is invalid (one line: `file:line: field: problem`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from tds_core.yamlconf import ConfigError

from .durations import format_duration


class ProgressLine:
    """A one-line progress bar on a terminal (rewritten in place), or a line per 10% elsewhere (CI logs)."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.stream, self.width = stream, width
        self.tty = stream.isatty()
        self._last_decile = -1

    def __call__(self, p) -> None:
        from datetime import timedelta

        frac = p.fleet_s / p.fleet_total_s if p.fleet_total_s else 1.0
        done = int(frac * self.width)
        text = (f"[{p.scenario}] |{'#' * done}{'.' * (self.width - done)}| {frac:4.0%} "
                f"fleet {format_duration(timedelta(seconds=int(p.fleet_s)))}"
                f"/{format_duration(timedelta(seconds=int(p.fleet_total_s)))} wall {p.wall_s:5.1f}s "
                f"{p.phase} published {p.published} acked {p.acked} stored {p.stored}")
        if self.tty:
            self.stream.write("\r" + text[:200].ljust(120))
            self.stream.flush()
        elif int(frac * 10) != self._last_decile:
            self._last_decile = int(frac * 10)
            self.stream.write(text + "\n")
            self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _handle(args: argparse.Namespace) -> int:
    from .runner import RunOptions, run_scenario
    from .schema import load_scenario

    try:
        scenarios = [load_scenario(path) for path in args.scenario]
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if args.check:
        for sc in scenarios:
            print(f"{sc.source}: ok ({len(sc.fleet.gateways)} gateways, {len(sc.timeline)} events, "
                  f"{len(sc.expectations)} expectations)")
        return 0
    worst = 0
    for sc in scenarios:
        progress = None if args.no_progress else ProgressLine()
        result = run_scenario(sc, RunOptions(reports_dir=args.reports, keep_database=args.keep_database,
                                             progress=progress))
        if progress:
            progress.done()
        for o in result.outcomes:
            state = "PASS" if o.passed else ("ERROR" if o.error else "FAIL")
            print(f"  {state:5} {o.name}: {o.message}")
        if result.error:
            print(f"  run error: {result.error}")
        verdict = "passed" if result.passed else "FAILED"
        print(f"{sc.name}: {verdict} in {result.wall_seconds:.1f}s; reports in "
              f"{args.reports / sc.name / result.run_id}")
        worst = max(worst, 0 if result.passed else 1)
    return worst


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `tds run`."""
    p = subparsers.add_parser("run", help="run scenario files (fleet, faults, expectations) and write reports")
    p.add_argument("scenario", nargs="+", type=Path, help="scenario YAML file(s), e.g. scenarios/suite/quickstart.yaml")
    p.add_argument("--reports", type=Path, default=Path("reports"),
                   help="reports go to REPORTS/<scenario>/<YYYYmmdd-HHMMSS>/ (default reports)")
    p.add_argument("--check", action="store_true", help="only validate the files")
    p.add_argument("--no-progress", action="store_true", help="no progress line")
    p.add_argument("--keep-database", action="store_true", help="keep the run's database for inspection")
    p.set_defaults(handler=_handle)
