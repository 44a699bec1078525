"""The test fleet for ingest tests, provisioned with plain SQL (independent of the registry code)."""

from __future__ import annotations

import psycopg

TENANTS = {"acme": ["aa:bb:cc:00:00:01", "aa:bb:cc:00:00:02"], "globex": ["aa:bb:cc:00:01:01"]}
LEGACY_GATEWAY = ("aa:bb:cc:00:02:01", "GW-LEGACY-1")
DEVICES = [("D01", "kWh", "energy"), ("D02", "m³", "water"), ("D03", "°C", "temperature")]


def provision(dsn: str) -> None:
    """Two tenants, three v1 gateways and one legacy gateway, three devices each (plain SQL: no registry code)."""
    with psycopg.connect(dsn) as conn:
        gateways = [(tenant, mac, f"GW-{mac[-5:].replace(':', '')}", "v1")
                    for tenant, macs in TENANTS.items() for mac in macs]
        gateways.append(("acme", LEGACY_GATEWAY[0], LEGACY_GATEWAY[1], "legacy"))
        for code in TENANTS:
            conn.execute("INSERT INTO tenants (code, name) VALUES (%s, %s)", (code, code.title()))
        for tenant, mac, code, fmt in gateways:
            (gw_id,) = conn.execute(
                "INSERT INTO gateways (tenant_id, mac, code, payload_format) "
                "SELECT id, %s, %s, %s FROM tenants WHERE code = %s RETURNING id",
                (mac, code, fmt, tenant),
            ).fetchone()
            for slave, (dev, unit, kind) in enumerate(DEVICES, start=1):
                conn.execute(
                    "INSERT INTO devices (gateway_id, code, slave_id, register, unit, kind) VALUES (%s,%s,%s,0,%s,%s)",
                    (gw_id, dev, slave, unit, kind),
                )
