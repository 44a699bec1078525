"""Shared pieces of the storage tests (a module of its own: `from conftest import` resolves to whichever
conftest was imported first when several test folders are collected together)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class Registry:
    """Ids of the seeded registry: tenants A and B, one gateway each, devices by code."""

    tenant_a: int
    tenant_b: int
    gw_a: int
    gw_b: int
    devices: dict[str, int]  # "A-E1" energy kWh, "A-T1" temperature, "B-E1" energy kWh


def seed_registry(conn: psycopg.Connection) -> Registry:
    """Insert two tenants with a gateway and devices each; commit; return their ids."""
    with conn.transaction():
        ta = conn.execute(
            "INSERT INTO tenants (code, name) VALUES ('ta', 'Tenant A') RETURNING id"
        ).fetchone()[0]
        tb = conn.execute(
            "INSERT INTO tenants (code, name) VALUES ('tb', 'Tenant B') RETURNING id"
        ).fetchone()[0]
        gw_sql = "INSERT INTO gateways (tenant_id, mac, code) VALUES (%s, %s, %s) RETURNING id"
        ga = conn.execute(gw_sql, (ta, "aa:bb:cc:dd:ee:01", "GW-A")).fetchone()[0]
        gb = conn.execute(gw_sql, (tb, "aa:bb:cc:dd:ee:02", "GW-B")).fetchone()[0]
        dev_sql = """INSERT INTO devices (gateway_id, code, slave_id, register, unit, kind)
                     VALUES (%s, %s, %s, 0, %s, %s) RETURNING id"""
        devices = {
            "A-E1": conn.execute(dev_sql, (ga, "E1", 1, "kWh", "energy")).fetchone()[0],
            "A-T1": conn.execute(dev_sql, (ga, "T1", 2, "°C", "temperature")).fetchone()[0],
            "B-E1": conn.execute(dev_sql, (gb, "E1", 1, "kWh", "energy")).fetchone()[0],
        }
    return Registry(ta, tb, ga, gb, devices)


@dataclass
class Store:
    """A migrated database of one backend with the seeded registry, and an open connection to it."""

    backend: str
    dsn: str
    conn: psycopg.Connection
    reg: Registry


def count(conn: psycopg.Connection, query: str, *params: object) -> int:
    """First column of the first row of `query`, ending the implicit transaction it opened."""
    row = conn.execute(query, params or None).fetchone()  # type: ignore[arg-type]
    conn.commit()
    assert row is not None
    return int(row[0])
