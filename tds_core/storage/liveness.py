"""Gateway liveness outside the batch path: status messages (online/offline, LWT) and silence timeouts."""

from __future__ import annotations

import logging
from datetime import timedelta

import psycopg

log = logging.getLogger(__name__)


def mark_silent_gateways_offline(conn: psycopg.Connection, silence: timedelta) -> list[str]:
    """Set online=false for gateways marked online but not seen for `silence`; return their MACs (sorted).

    Commits its own short transaction; the connection must be idle. Rows are locked in id order, as the
    batch writer locks them, so a sweep and a concurrent batch wait for each other instead of deadlocking;
    a gateway heard from meanwhile fails the re-checked condition and stays online.
    """
    if silence <= timedelta(0):
        raise ValueError(f"silence: expected a positive duration, got {silence}")
    with conn.transaction():
        rows = conn.execute(
            """
            UPDATE gateways SET online = false
            WHERE id IN (
                SELECT id FROM gateways WHERE online AND (last_seen IS NULL OR last_seen < now() - %s)
                ORDER BY id FOR NO KEY UPDATE
            )
            AND online AND (last_seen IS NULL OR last_seen < now() - %s)
            RETURNING mac
            """,
            (silence, silence),
        ).fetchall()
    macs = sorted(r[0] for r in rows)
    if macs:
        log.info("marked %d silent gateways offline", len(macs))
    return macs


def set_gateway_online(conn: psycopg.Connection, mac: str, online: bool) -> bool:
    """Record a gateway's status message (b"online" / b"offline", including its LWT); False if MAC unknown.

    last_seen is not touched: a retained "online" replayed by the broker says nothing about now.
    """
    with conn.transaction():
        cur = conn.execute(
            "UPDATE gateways SET online = %s WHERE mac = %s AND online IS DISTINCT FROM %s",
            (online, mac.lower(), online),
        )
        if cur.rowcount:
            return True
        exists = conn.execute("SELECT 1 FROM gateways WHERE mac = %s", (mac.lower(),)).fetchone()
    return exists is not None
