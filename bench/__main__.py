"""`python -m bench <command>`: ingest (end to end, TDS vs the seed design) or writer (batch writer alone)."""

from __future__ import annotations

import logging
import sys


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a bench's own argument parser."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m bench {ingest,writer} [options]   (python -m bench ingest --help)")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if command == "ingest":
        from bench.ingest import main as ingest_main

        return ingest_main(rest)
    if command == "writer":
        from bench.bench_writer import main as writer_main

        return writer_main(rest)
    print(f"python -m bench: unknown command {command!r}; expected ingest or writer", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
