"""`tds bench ingest`: the end-to-end ingest benchmark as a `tds` subcommand (entry point tds.commands)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `tds bench ingest`."""
    from bench import ingest

    p = subparsers.add_parser("bench", help="benchmarks (ingest end to end, TDS vs the seed design)")
    sub = p.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    q = sub.add_parser("ingest", help=ingest.__doc__.splitlines()[0])
    ingest.add_arguments(q)
    q.set_defaults(handler=ingest.handle)
