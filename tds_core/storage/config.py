"""Storage settings kept in the database (`tds_storage_settings`, one row): retention and partitions ahead."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import psycopg


@dataclass(frozen=True)
class StorageSettings:
    """How long raw readings are kept, and how many days of partitions are created ahead (plain backend)."""

    retention: timedelta
    partitions_ahead: int


def get_settings(conn: psycopg.Connection) -> StorageSettings:
    """Read the settings row written by migration 0002 (and `tds db migrate --retention`)."""
    row = conn.execute("SELECT retention, partitions_ahead FROM tds_storage_settings").fetchone()
    if row is None:
        raise RuntimeError("tds_storage_settings is empty: run `tds db migrate`")
    return StorageSettings(retention=row[0], partitions_ahead=row[1])


def set_retention(conn: psycopg.Connection, keep: timedelta) -> None:
    """Store the retention period (applied by the next maintenance run, or apply_retention())."""
    if keep <= timedelta(0):
        raise ValueError(f"retention: expected a positive duration, got {keep}")
    with conn.transaction():
        conn.execute("UPDATE tds_storage_settings SET retention = %s", (keep,))
