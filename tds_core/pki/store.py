"""PKI directory layout, the JSON index of issued certificates, and private-file writing (0600).

Layout of a PKI directory::

    ca.crt                 CA certificate (public)
    crl.pem                current CRL
    index.json             issued certificates: serial, CN, kind, not_after, revoked_at, ...
    certs/{name}.crt       issued certificates (name = CN with ':' replaced by '-')
    private/ca.key         CA key, 0600 (directory 0700)
    private/{name}.key     keys generated here, 0600 (never for CSR-based certificates)
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["KINDS", "IndexEntry", "PkiIndex", "PkiPaths", "file_name", "write_private", "write_public"]

KINDS = ("broker", "consumer", "device")


def file_name(cn: str) -> str:
    """File-system name for a CN: ':' (MACs) becomes '-', anything else unsafe becomes '_'."""
    name = cn.replace(":", "-")
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).lstrip(".") or "_"


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)  # set before any byte is written: a key is never readable by others
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_private(path: Path, data: bytes) -> None:
    """Write a secret (private key) with mode 0600, atomically; its directory gets 0700."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    _atomic_write(path, data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    """Write a public file (certificate, CRL, index) with mode 0644, atomically."""
    _atomic_write(path, data, 0o644)


@dataclass(frozen=True)
class PkiPaths:
    """Where everything lives in a PKI directory."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "private" / "ca.key"

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    @property
    def index(self) -> Path:
        return self.root / "index.json"

    def cert(self, cn: str) -> Path:
        """Certificate path for a CN."""
        return self.root / "certs" / f"{file_name(cn)}.crt"

    def key(self, cn: str) -> Path:
        """Private key path for a CN (only for keys generated here)."""
        return self.root / "private" / f"{file_name(cn)}.key"


@dataclass
class IndexEntry:
    """One issued certificate."""

    serial: str                 # lower-case hex, no 0x
    cn: str
    kind: str                   # broker | consumer | device
    not_before: str             # ISO 8601 UTC
    not_after: str
    cert_file: str              # relative to the PKI directory
    key_file: str | None = None  # None when the key stayed with its owner (CSR)
    revoked_at: str | None = None
    revocation_reason: str | None = None
    renewed_from: str | None = None

    @property
    def serial_int(self) -> int:
        return int(self.serial, 16)

    @property
    def not_after_dt(self) -> datetime:
        return datetime.fromisoformat(self.not_after)


@dataclass
class PkiIndex:
    """The whole index file."""

    certs: list[IndexEntry] = field(default_factory=list)
    crl_number: int = 0
    crl_last_update: str | None = None
    crl_next_update: str | None = None

    @classmethod
    def load(cls, path: Path) -> PkiIndex:
        """Read index.json; ValueError naming the file and field when it is malformed."""
        try:
            raw: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no PKI index here; run `tds pki init` first") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
        try:
            certs = [IndexEntry(**c) for c in raw.get("certs", [])]
        except TypeError as exc:
            raise ValueError(f"{path}: certs[]: {exc}") from exc
        return cls(certs, int(raw.get("crl_number", 0)), raw.get("crl_last_update"),
                   raw.get("crl_next_update"))

    def save(self, path: Path) -> None:
        """Write index.json atomically."""
        data = {"certs": [asdict(c) for c in self.certs], "crl_number": self.crl_number,
                "crl_last_update": self.crl_last_update, "crl_next_update": self.crl_next_update}
        write_public(path, (json.dumps(data, indent=2) + "\n").encode())

    def by_cn(self, cn: str) -> list[IndexEntry]:
        """Entries with this CN, oldest first."""
        return [c for c in self.certs if c.cn == cn]

    def by_serial(self, serial: int) -> IndexEntry | None:
        """The entry with this serial, if any."""
        return next((c for c in self.certs if c.serial_int == serial), None)
