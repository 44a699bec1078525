"""Detect what the database can do, so TimescaleDB features are used only where they exist."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import psycopg

Backend = Literal["postgres", "timescale"]


@dataclass(frozen=True)
class Capabilities:
    """What a server offers: its version, and whether TimescaleDB is installed or installable."""

    server_version: int
    timescale_installed: bool
    timescale_available: bool
    timescale_preloaded: bool

    @property
    def timescale_usable(self) -> bool:
        """TimescaleDB can be used: installed, or available and preloaded (CREATE EXTENSION would work).

        `CREATE EXTENSION timescaledb` on a server that did not preload it kills the connection
        (FIELD-NOTES), so availability alone is not enough.
        """
        return self.timescale_installed or (self.timescale_available and self.timescale_preloaded)

    def choose_backend(self, wanted: str = "auto") -> Backend:
        """Resolve 'auto' | 'postgres' | 'timescale' into the backend to use, or raise ValueError."""
        if wanted == "auto":
            return "timescale" if self.timescale_usable else "postgres"
        if wanted == "timescale" and not self.timescale_usable:
            raise ValueError(
                "backend 'timescale' requested but this server has no usable TimescaleDB "
                f"(available={self.timescale_available}, preloaded={self.timescale_preloaded})"
            )
        if wanted not in ("postgres", "timescale"):
            raise ValueError(f"backend: expected auto, postgres or timescale, got {wanted!r}")
        return wanted  # type: ignore[return-value]


def detect(conn: psycopg.Connection) -> Capabilities:
    """Read the server's capabilities without changing anything."""
    row = conn.execute(
        """
        SELECT current_setting('server_version_num')::int,
               EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'),
               EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),
               coalesce(current_setting('shared_preload_libraries', true), '') LIKE '%timescaledb%'
        """
    ).fetchone()
    assert row is not None
    return Capabilities(
        server_version=row[0], timescale_installed=row[1], timescale_available=row[2], timescale_preloaded=row[3]
    )
