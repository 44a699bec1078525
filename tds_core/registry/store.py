"""Registry SQL (psycopg 3, sync): provisioning a fleet, revocation, listing.

`apply_fleet` diffs the file against the database and writes only what differs, in one transaction:
loading the same file twice writes nothing (so fires no NOTIFY and reloads no cache). Gateways and
devices missing from the file are kept unless `prune=True`; tenants are never deleted. Revocation is only
ever added by a load (`revoked: true`), never undone: `reinstate_gateway` is the one way back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg
from psycopg import errors

from tds_core.protocol import normalize_mac
from tds_core.registry.fleet import FleetSpec
from tds_core.registry.model import Device, GatewayRecord

log = logging.getLogger(__name__)

_PROVISION_LOCK = 0x7D5_0002  # concurrent loads serialize instead of racing on the diff


class UnknownGateway(LookupError):
    """No gateway with that MAC."""

    def __init__(self, mac: str) -> None:
        super().__init__(f"no gateway with MAC {mac} in the registry")
        self.mac = mac


@dataclass
class TableCounts:
    """What a load did to one table. `absent`: rows not in the file, kept (no --prune)."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    absent: int = 0

    def __str__(self) -> str:
        parts = [f"{self.created} created", f"{self.updated} updated", f"{self.unchanged} unchanged"]
        if self.deleted:
            parts.append(f"{self.deleted} deleted")
        if self.absent:
            parts.append(f"{self.absent} not in file (kept)")
        return ", ".join(parts)


@dataclass
class ProvisionReport:
    """Counts per table, plus gateways revoked by this load."""

    tenants: TableCounts = field(default_factory=TableCounts)
    gateways: TableCounts = field(default_factory=TableCounts)
    devices: TableCounts = field(default_factory=TableCounts)
    revoked: int = 0

    @property
    def changed(self) -> bool:
        return self.revoked > 0 or any(
            c.created or c.updated or c.deleted for c in (self.tenants, self.gateways, self.devices)
        )

    def __str__(self) -> str:
        lines = [f"tenants:  {self.tenants}", f"gateways: {self.gateways}", f"devices:  {self.devices}"]
        if self.revoked:
            lines.append(f"revoked:  {self.revoked}")
        return "\n".join(lines)


def _device_row(d: Device) -> tuple:
    return (d.slave_id, d.register, d.data_type, d.word_order, d.scale, d.unit, d.kind)


def apply_fleet(conn: psycopg.Connection, spec: FleetSpec, *, prune: bool = False) -> ProvisionReport:
    """Make the database match `spec` (idempotent upsert in one transaction); return what changed.

    Raises ValueError when the database holds something the file conflicts with (e.g. a gateway code used by
    a gateway with another MAC), or when pruning hits rows that other tables still reference.
    """
    report = ProvisionReport()
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PROVISION_LOCK,))
            tenant_ids = _apply_tenants(conn, spec, report)
            gateway_ids = _apply_gateways(conn, spec, tenant_ids, report, prune)
            _apply_devices(conn, spec, gateway_ids, report, prune)
    except errors.UniqueViolation as exc:
        raise ValueError(f"{spec.source}: conflicts with the registry: {_detail(exc)}") from None
    except errors.ForeignKeyViolation as exc:
        raise ValueError(f"{spec.source}: cannot delete, still referenced: {_detail(exc)} "
                         "(revoke the gateway instead of pruning it)") from None
    log.info("fleet %s applied: %s", spec.source, str(report).replace("\n", "; "))
    return report


def _detail(exc: psycopg.Error) -> str:
    return exc.diag.message_detail or exc.diag.message_primary or str(exc)


def _apply_tenants(conn: psycopg.Connection, spec: FleetSpec, report: ProvisionReport) -> dict[str, int]:
    existing = {code: (tid, name) for tid, code, name in conn.execute("SELECT id, code, name FROM tenants")}
    ids: dict[str, int] = {}
    for t in spec.tenants:
        if t.code not in existing:
            row = conn.execute(
                "INSERT INTO tenants (code, name) VALUES (%s, %s) RETURNING id", (t.code, t.name)
            ).fetchone()
            ids[t.code] = row[0]
            report.tenants.created += 1
            continue
        tid, name = existing[t.code]
        ids[t.code] = tid
        if name != t.name:
            conn.execute("UPDATE tenants SET name = %s WHERE id = %s", (t.name, tid))
            report.tenants.updated += 1
        else:
            report.tenants.unchanged += 1
    report.tenants.absent = len(set(existing) - ids.keys())
    return ids


def _apply_gateways(conn: psycopg.Connection, spec: FleetSpec, tenant_ids: dict[str, int],
                    report: ProvisionReport, prune: bool) -> dict[str, int]:
    existing = {
        mac: (gid, tenant_id, code, fmt, status)
        for gid, mac, tenant_id, code, fmt, status in conn.execute(
            "SELECT id, mac, tenant_id, code, payload_format, status FROM gateways"
        )
    }
    code_owner = {row[2]: mac for mac, row in existing.items()}
    wanted = {g.mac for g in spec.gateways}
    to_insert: list[tuple] = []
    for g in spec.gateways:
        owner = code_owner.get(g.code)
        if owner is not None and owner != g.mac and owner not in wanted:
            raise ValueError(f"{spec.source}: gateway code {g.code} (MAC {g.mac}) is already used by gateway "
                             f"{owner} in the registry")
        tenant_id = tenant_ids[g.tenant_code]
        status = "revoked" if g.revoke else "active"
        if g.mac not in existing:
            to_insert.append((tenant_id, g.mac, g.code, g.payload_format, status, status))
            report.gateways.created += 1
            report.revoked += g.revoke
            continue
        gid, cur_tenant, cur_code, cur_fmt, cur_status = existing[g.mac]
        if (cur_tenant, cur_code, cur_fmt) != (tenant_id, g.code, g.payload_format):
            conn.execute(
                "UPDATE gateways SET tenant_id = %s, code = %s, payload_format = %s WHERE id = %s",
                (tenant_id, g.code, g.payload_format, gid),
            )
            report.gateways.updated += 1
        else:
            report.gateways.unchanged += 1
        if g.revoke and cur_status == "active":
            conn.execute("UPDATE gateways SET status = 'revoked', revoked_at = now() WHERE id = %s", (gid,))
            report.revoked += 1
    if to_insert:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO gateways (tenant_id, mac, code, payload_format, status, revoked_at)"
                " VALUES (%s, %s, %s, %s, %s, CASE WHEN %s = 'revoked' THEN now() END)",
                to_insert,
            )
    absent = [row[0] for mac, row in existing.items() if mac not in wanted]
    if absent and prune:
        conn.execute("DELETE FROM gateways WHERE id = ANY(%s)", (absent,))
        report.gateways.deleted = len(absent)
    else:
        report.gateways.absent = len(absent)
    rows = conn.execute("SELECT mac, id FROM gateways WHERE mac = ANY(%s)", (list(wanted),)).fetchall()
    return dict(rows)


def _apply_devices(conn: psycopg.Connection, spec: FleetSpec, gateway_ids: dict[str, int],
                   report: ProvisionReport, prune: bool) -> None:
    existing: dict[tuple[int, str], tuple[int, tuple]] = {}
    for did, gid, code, *rest in conn.execute(
        "SELECT id, gateway_id, code, slave_id, register, data_type, word_order, scale, unit, kind"
        " FROM devices WHERE gateway_id = ANY(%s)", (list(gateway_ids.values()),)
    ):
        existing[(gid, code)] = (did, tuple(rest))
    seen: set[tuple[int, str]] = set()
    inserts: list[tuple] = []
    updates: list[tuple] = []
    for g in spec.gateways:
        gid = gateway_ids[g.mac]
        for d in g.devices:
            key = (gid, d.code)
            seen.add(key)
            row = _device_row(d)
            if key not in existing:
                inserts.append((gid, d.code, *row))
            elif existing[key][1] != row:
                updates.append((*row, existing[key][0]))
            else:
                report.devices.unchanged += 1
    absent = [did for key, (did, _) in existing.items() if key not in seen]
    if absent and prune:
        # before inserts: a new device may take the slave/register a removed one had
        conn.execute("DELETE FROM devices WHERE id = ANY(%s)", (absent,))
        report.devices.deleted = len(absent)
    else:
        report.devices.absent = len(absent)
    with conn.cursor() as cur:
        if updates:
            cur.executemany(
                "UPDATE devices SET slave_id = %s, register = %s, data_type = %s, word_order = %s, scale = %s,"
                " unit = %s, kind = %s WHERE id = %s",
                updates,
            )
        if inserts:
            cur.executemany(
                "INSERT INTO devices (gateway_id, code, slave_id, register, data_type, word_order, scale, unit,"
                " kind) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                inserts,
            )
    report.devices.created, report.devices.updated = len(inserts), len(updates)


def revoke_gateway(conn: psycopg.Connection, mac: str) -> bool:
    """Mark a gateway revoked (ingest dead-letters its messages). True if it changed, False if already revoked.

    This is the registry half of revocation; the certificate half (CRL) belongs to tds_core.pki.
    """
    return _set_status(conn, mac, revoke=True)


def reinstate_gateway(conn: psycopg.Connection, mac: str) -> bool:
    """Undo a revocation. True if it changed, False if the gateway was already active."""
    return _set_status(conn, mac, revoke=False)


def _set_status(conn: psycopg.Connection, mac: str, *, revoke: bool) -> bool:
    mac = normalize_mac(mac)
    with conn.transaction():
        if revoke:
            sql = "UPDATE gateways SET status = 'revoked', revoked_at = now() WHERE mac = %s AND status = 'active'"
        else:
            sql = "UPDATE gateways SET status = 'active', revoked_at = NULL WHERE mac = %s AND status = 'revoked'"
        changed = conn.execute(sql, (mac,)).rowcount == 1
        if not changed and conn.execute("SELECT 1 FROM gateways WHERE mac = %s", (mac,)).fetchone() is None:
            raise UnknownGateway(mac)
    if changed:
        log.info("gateway %s %s", mac, "revoked" if revoke else "reinstated")
    return changed


_GATEWAY_SQL = """
SELECT g.id, t.code, g.mac, g.code, g.status, g.revoked_at, g.payload_format, g.last_seen, g.online
FROM gateways g JOIN tenants t ON t.id = g.tenant_id
"""


def list_gateways(conn: psycopg.Connection, tenant_code: str | None = None) -> list[GatewayRecord]:
    """All gateways (of one tenant if given), ordered by tenant and code, with their devices."""
    if tenant_code is None:
        rows = conn.execute(_GATEWAY_SQL + " ORDER BY t.code, g.code").fetchall()
    else:
        rows = conn.execute(_GATEWAY_SQL + " WHERE t.code = %s ORDER BY g.code", (tenant_code,)).fetchall()
    return _with_devices(conn, rows)


def get_gateway(conn: psycopg.Connection, mac: str) -> GatewayRecord | None:
    """One gateway by MAC (any separator/case), or None."""
    rows = conn.execute(_GATEWAY_SQL + " WHERE g.mac = %s", (normalize_mac(mac),)).fetchall()
    found = _with_devices(conn, rows)
    return found[0] if found else None


def _with_devices(conn: psycopg.Connection, rows: Iterable[tuple]) -> list[GatewayRecord]:
    rows = list(rows)
    devices: dict[int, list[Device]] = {}
    if rows:
        for gid, code, slave, register, data_type, word_order, scale, unit, kind in conn.execute(
            "SELECT gateway_id, code, slave_id, register, data_type, word_order, scale, unit, kind FROM devices"
            " WHERE gateway_id = ANY(%s) ORDER BY gateway_id, code", ([r[0] for r in rows],)
        ):
            devices.setdefault(gid, []).append(Device(code, slave, register, unit, data_type, scale, kind, word_order))
    return [GatewayRecord(*row, devices=tuple(devices.get(row[0], ()))) for row in rows]
