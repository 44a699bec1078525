"""`tds pki ...`: create the CA, issue/renew/revoke certificates, publish and refresh the CRL."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

from tds_core.pki.authority import DEFAULT_CONSUMER_CN, DEVICE_DAYS, SERVICE_DAYS, Pki
from tds_core.pki.crl import DEFAULT_CRL_DAYS, CrlState, crl_status, publish_crl, refresh_crl

__all__ = ["default_pki_dir", "register"]


def default_pki_dir() -> Path:
    """$TDS_PKI_DIR, else {state dir}/pki ($TDS_STATE_DIR or ./.tds)."""
    if env := os.environ.get("TDS_PKI_DIR"):
        return Path(env)
    return Path(os.environ.get("TDS_STATE_DIR", ".tds")) / "pki"


def _out(line: str) -> None:
    print(line, flush=True)


def _parse_serial(text: str) -> int:
    try:
        return int(text.removeprefix("0x").replace(":", ""), 16)
    except ValueError:
        raise ValueError(f"--serial: {text!r} is not a hex serial number (as printed by `tds pki list`)") \
            from None


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a positive number of days")
    return value


def _cmd_init(args: argparse.Namespace) -> int:
    pki = Pki.init(args.dir, ca_cn=args.ca_cn, days=args.days, crl_days=args.crl_days)
    _out(f"CA {args.ca_cn!r} created in {pki.paths.root} (key {pki.paths.ca_key}, mode 0600)")
    return 0


def _print_issued(issued) -> None:  # type: ignore[no-untyped-def]
    e = issued.entry
    _out(f"{e.kind} CN={e.cn} serial={e.serial} until {e.not_after}")
    _out(f"  certificate: {issued.cert_path}")
    if issued.key_path:
        _out(f"  key:         {issued.key_path} (0600)")


def _cmd_issue(args: argparse.Namespace) -> int:
    pki = Pki(args.dir)
    if args.kind == "broker":
        issued = pki.issue_broker(args.name, cn=args.cn or "tds-broker", days=args.days or SERVICE_DAYS)
    elif args.kind == "consumer":
        issued = pki.issue_consumer(args.cn or DEFAULT_CONSUMER_CN, days=args.days or SERVICE_DAYS)
    else:
        csr = Path(args.csr).read_bytes() if args.csr else None
        issued = pki.issue_device(args.mac, days=args.days or DEVICE_DAYS, csr_pem=csr)
    _print_issued(issued)
    return 0


def _cmd_renew(args: argparse.Namespace) -> int:
    pki = Pki(args.dir)
    issued = pki.renew(Path(args.csr).read_bytes(), days=args.days, revoke_old=args.revoke_old)
    _print_issued(issued)
    if args.out:
        Path(args.out).write_bytes(issued.cert_path.read_bytes())
        _out(f"  copied to:   {args.out}")
    if args.revoke_old:
        _out("previous certificate(s) revoked; reload the brokers (SIGHUP) to apply the new CRL")
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    if not args.serial and not args.cn:
        raise ValueError("give --serial or --cn")
    pki = Pki(args.dir)
    revoked = pki.revoke(serials=[_parse_serial(s) for s in args.serial], cn=args.cn, reason=args.reason)
    for e in revoked:
        _out(f"revoked {e.kind} CN={e.cn} serial={e.serial}")
    if not revoked:
        _out("nothing new to revoke (already revoked); CRL re-published")
    _out(f"CRL published: {pki.paths.crl}; reload the brokers (SIGHUP / `tds broker reload`) to apply it")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    index = Pki(args.dir).load_index()
    if args.json:
        _out(json.dumps([asdict(e) for e in index.certs], indent=2))
        return 0
    for e in index.certs:
        state = f"revoked {e.revoked_at} ({e.revocation_reason})" if e.revoked_at else "valid"
        _out(f"{e.serial:>40}  {e.kind:<8}  {e.cn:<20}  until {e.not_after}  {state}")
    return 0


def _cmd_crl_publish(args: argparse.Namespace) -> int:
    status = publish_crl(Pki(args.dir), days=args.days)
    _out(status.describe())
    return 0


def _cmd_crl_refresh(args: argparse.Namespace) -> int:
    published, status = refresh_crl(Pki(args.dir), if_due=args.if_due, days=args.days,
                                    margin=timedelta(days=args.margin_days))
    _out(("published " if published else "not due, unchanged: ") + status.describe())
    return 0


def _cmd_crl_status(args: argparse.Namespace) -> int:
    status = crl_status(Pki(args.dir), margin=timedelta(days=args.margin_days))
    line = status.describe()
    if status.state is CrlState.OK:
        _out(line)
        return 0
    print(f"warning: {line}", file=sys.stderr)
    return 1 if status.state is CrlState.DUE else 2


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `pki` command tree to the `tds` parser."""
    pki = subparsers.add_parser("pki", help="certificate authority: certificates, revocation, CRL")
    pki.set_defaults(handler=lambda _a: (pki.print_help(), 2)[1])
    sub = pki.add_subparsers(dest="pki_command", metavar="PKI_COMMAND")

    def cmd(name: str, handler, help_text: str, parent=sub) -> argparse.ArgumentParser:  # type: ignore[no-untyped-def]
        p = parent.add_parser(name, help=help_text)
        p.add_argument("--dir", type=Path, default=default_pki_dir(),
                       help="PKI directory (default $TDS_PKI_DIR or .tds/pki)")
        p.set_defaults(handler=handler)
        return p

    p = cmd("init", _cmd_init, "create the CA, the index and a first CRL")
    p.add_argument("--ca-cn", default="TDS-New-CA")
    p.add_argument("--days", type=_positive, default=7300, help="CA validity (default 7300)")
    p.add_argument("--crl-days", type=_positive, default=DEFAULT_CRL_DAYS)

    p = cmd("issue", _cmd_issue, "issue a broker, consumer or device certificate")
    p.add_argument("kind", choices=("broker", "consumer", "device"))
    p.add_argument("--cn", help="CN for broker (default tds-broker) or consumer (default tds-consumer)")
    p.add_argument("--mac", help="device MAC (the device CN)")
    p.add_argument("--name", action="append", default=[], help="extra broker SAN (host name or IP), repeatable")
    p.add_argument("--csr", help="device: sign this CSR instead of generating a key here")
    p.add_argument("--days", type=_positive, help=f"validity (device {DEVICE_DAYS}, others {SERVICE_DAYS})")

    p = cmd("renew", _cmd_renew, "renew a certificate from a CSR (the key stays on the device)")
    p.add_argument("--csr", required=True)
    p.add_argument("--out", help="also write the new certificate here")
    p.add_argument("--days", type=_positive)
    p.add_argument("--revoke-old", action="store_true", help="revoke the previous certificate(s) of that CN")

    p = cmd("revoke", _cmd_revoke, "revoke by serial or CN and publish a new CRL")
    p.add_argument("--serial", action="append", default=[], help="hex serial, repeatable")
    p.add_argument("--cn", help="revoke every certificate with this CN (a MAC in any spelling)")
    p.add_argument("--reason", default="unspecified",
                   choices=("unspecified", "key_compromise", "affiliation_changed", "superseded",
                            "cessation_of_operation"))

    p = cmd("list", _cmd_list, "list issued certificates")
    p.add_argument("--json", action="store_true")

    crl = sub.add_parser("crl", help="publish, refresh or check the CRL")
    crl.set_defaults(handler=lambda _a: (crl.print_help(), 2)[1])
    crl_sub = crl.add_subparsers(dest="crl_command", metavar="CRL_COMMAND")
    p = cmd("publish", _cmd_crl_publish, "sign and write a new CRL", crl_sub)
    p.add_argument("--days", type=_positive, default=DEFAULT_CRL_DAYS, help="until nextUpdate (default 7)")
    p = cmd("refresh", _cmd_crl_refresh, "re-sign the CRL; with --if-due only when it is close to lapsing",
            crl_sub)
    p.add_argument("--if-due", action="store_true", help="do nothing unless less than --margin-days is left")
    p.add_argument("--days", type=_positive, default=DEFAULT_CRL_DAYS)
    p.add_argument("--margin-days", type=float, default=3.0)
    p = cmd("status", _cmd_crl_status, "exit 0 ok, 1 due for refresh, 2 expired or missing", crl_sub)
    p.add_argument("--margin-days", type=float, default=3.0)
