"""`tds registry ...`: load a fleet file, list, show, revoke and reinstate gateways."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg import errors

from tds_core import settings
from tds_core.registry.fleet import load_fleet
from tds_core.registry.model import GatewayRecord
from tds_core.registry.store import (
    UnknownGateway,
    apply_fleet,
    get_gateway,
    list_gateways,
    reinstate_gateway,
    revoke_gateway,
)

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `tds registry` and its subcommands."""
    p = subparsers.add_parser("registry", help="tenants, gateways and devices: provisioning and revocation")
    sub = p.add_subparsers(dest="registry_command", metavar="SUBCOMMAND", required=True)

    def add(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("--dsn", "--database-url", dest="dsn",
                        help="PostgreSQL DSN (default $TDS_DATABASE_URL, else the embedded one)")
        sp.set_defaults(handler=handler)
        return sp

    sp = add("load", _load, "provision tenants, gateways and devices from a fleet YAML file (idempotent)")
    sp.add_argument("fleet", metavar="FLEET.yaml")
    sp.add_argument("--prune", action="store_true", help="delete gateways and devices that are not in the file")
    sp.add_argument("--check", action="store_true", help="validate the file only; do not touch the database")
    sp = add("list", _list, "list gateways with status and liveness")
    sp.add_argument("--tenant", metavar="CODE", help="only this tenant's gateways")
    sp = add("show", _show, "show one gateway and its devices")
    sp.add_argument("mac", metavar="MAC")
    sp = add("revoke", _revoke, "revoke a gateway: ingest dead-letters its messages from now on; with a PKI, its "
             "certificates are revoked and the CRL republished (brokers run by `tds broker run` reload it)")
    sp.add_argument("mac", metavar="MAC")
    sp.add_argument("--pki", type=Path, help="PKI directory (default $TDS_PKI_DIR or .tds/pki, when it exists)")
    sp = add("reinstate", _reinstate, "undo a revocation")
    sp.add_argument("mac", metavar="MAC")


def _connect(args: argparse.Namespace) -> psycopg.Connection:
    return psycopg.connect(settings.database_url(args.dsn), autocommit=True)


def _fail(message: str, code: int = 1) -> int:
    print(f"tds registry: error: {message}", file=sys.stderr)
    return code


def _run(args: argparse.Namespace, body: Callable[[psycopg.Connection], int]) -> int:
    try:
        with _connect(args) as conn:
            return body(conn)
    except UnknownGateway as exc:
        return _fail(str(exc))
    except errors.UndefinedTable:
        return _fail("the registry tables do not exist: run `tds db migrate` first")
    except psycopg.OperationalError as exc:
        return _fail(f"cannot reach the database: {str(exc).strip()}")


def _load(args: argparse.Namespace) -> int:
    spec = load_fleet(args.fleet)  # ConfigError is a ValueError: `tds` prints its one line and exits 2
    if args.check:
        print(f"{args.fleet}: OK ({len(spec.tenants)} tenants, {len(spec.gateways)} gateways, "
              f"{spec.device_count} devices)")
        return 0

    def body(conn: psycopg.Connection) -> int:
        report = apply_fleet(conn, spec, prune=args.prune)
        print(f"{args.fleet}: {'applied' if report.changed else 'no changes'}")
        print(report)
        return 0

    return _run(args, body)


def _when(ts: datetime | None) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%SZ") if ts else "never"


def _list(args: argparse.Namespace) -> int:
    def body(conn: psycopg.Connection) -> int:
        gws = list_gateways(conn, tenant_code=args.tenant)
        print(f"{'TENANT':<12} {'CODE':<16} {'MAC':<17} {'FORMAT':<6} {'STATUS':<7} {'ONLINE':<6} "
              f"{'DEV':>3}  LAST SEEN")
        for g in gws:
            print(f"{g.tenant_code:<12} {g.code:<16} {g.mac:<17} {g.payload_format:<6} {g.status:<7} "
                  f"{'yes' if g.online else 'no':<6} {len(g.devices):>3}  {_when(g.last_seen)}")
        print(f"{len(gws)} gateways")
        return 0

    return _run(args, body)


def _print_gateway(g: GatewayRecord) -> None:
    print(f"gateway  {g.code}  {g.mac}")
    print(f"tenant   {g.tenant_code}")
    print(f"format   {g.payload_format}")
    print(f"status   {g.status}" + (f" since {_when(g.revoked_at)}" if g.revoked_at else ""))
    print(f"online   {'yes' if g.online else 'no'} (last seen {_when(g.last_seen)})")
    print(f"devices  {len(g.devices)}")
    for d in g.devices:
        print(f"  {d.code:<8} slave {d.slave_id:<3} reg {d.register:<5} {d.data_type:<7} {d.word_order:<6} "
              f"x{d.scale:<8g} {d.unit:<5} {d.kind}")


def _show(args: argparse.Namespace) -> int:
    def body(conn: psycopg.Connection) -> int:
        gw = get_gateway(conn, args.mac)
        if gw is None:
            raise UnknownGateway(args.mac)
        _print_gateway(gw)
        return 0

    return _run(args, body)


def _set_status(args: argparse.Namespace, action: Callable[[psycopg.Connection, str], bool], done: str) -> int:
    def body(conn: psycopg.Connection) -> int:
        changed = action(conn, args.mac)
        gw = get_gateway(conn, args.mac)
        if gw is None:  # deleted between the two statements
            raise UnknownGateway(args.mac)
        print(f"{gw.mac} ({gw.code}): {done if changed else 'already ' + gw.status}")
        return 0

    return _run(args, body)


def _revoke(args: argparse.Namespace) -> int:
    code = _set_status(args, revoke_gateway, "revoked")
    if code == 0:
        code = _revoke_certificates(args.mac, args.pki)
    return code


def _revoke_certificates(mac: str, pki_dir: Path | None) -> int:
    """Revoke the gateway's device certificates too, so the broker refuses its next connection."""
    from tds_core.pki import Pki
    from tds_core.pki.cli import default_pki_dir

    directory = pki_dir or default_pki_dir()
    if not (directory / "index.json").exists():
        if pki_dir is not None:
            return _fail(f"--pki {directory}: no PKI there (tds pki init)", 2)
        print(f"no PKI at {directory}: certificates unchanged (ingest refuses the gateway regardless)",
              file=sys.stderr)
        return 0
    try:
        revoked = Pki(directory).revoke(cn=mac, reason="cessation_of_operation")
    except ValueError as exc:  # no valid certificate for that CN: nothing to do, but say so
        print(f"certificates: {exc}", file=sys.stderr)
        return 0
    serials = ", ".join(str(e.serial) for e in revoked)
    print(f"revoked certificate(s) {serials}; CRL republished at {directory / 'crl.pem'}")
    return 0


def _reinstate(args: argparse.Namespace) -> int:
    return _set_status(args, reinstate_gateway, "reinstated")
