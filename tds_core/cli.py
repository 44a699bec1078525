"""The `tds` command. Each package adds its own subcommands through `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from tds_core import __version__
from tds_core.logs import setup_logging

log = logging.getLogger("tds")

# Core modules that offer `register(subparsers)`.
COMMAND_MODULES = (
    "tds_core.storage.cli",
    "tds_core.registry.cli",
    "tds_core.ingest.cli",
    "tds_core.pki.cli",
    "tds_core.broker.cli",
    "tds_core.stack",
)
# The harness (scenarios, benchmarks) adds its commands through this entry-point group, so the core never
# imports it: `[project.entry-points."tds.commands"]` in pyproject.toml, each value a `register` function.
ENTRY_POINT_GROUP = "tds.commands"


class _Parser(argparse.ArgumentParser):
    """argparse that fails with one line (the reason) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every available subcommand."""
    parser = _Parser(prog="tds", description="TDS telemetry core and test harness")
    parser.add_argument("--version", action="version", version=f"tds {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR (default INFO)")
    parser.add_argument("--log-format", choices=("text", "json"), default="text", help="log line format")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a part not built into this install
        module.register(subparsers)
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            register = entry.load()
        except ModuleNotFoundError as exc:
            log.debug("tds %s unavailable: %s", entry.name, exc)  # that part is not installed
            continue
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tds` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    setup_logging(args.log_level, args.log_format)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, PermissionError) as exc:
        # Bad input from the user: one line, no traceback.
        print(f"tds {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
