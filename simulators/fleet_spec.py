"""What a fleet is made of: gateway and meter specs (validated), and the TLS material for mqtts brokers.

Re-exported by :mod:`simulators.fleet` (the contract's home for them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware.registers import DATA_TYPES, WORD_ORDERS
from tds_core.protocol import KNOWN_UNITS, normalize_mac

__all__ = ["KINDS", "MODELS", "GatewaySpec", "MeterSpec", "TlsMaterial"]

KINDS = ("energy", "water", "temperature", "other")
MODELS = ("energy", "water", "temperature")


@dataclass(frozen=True)
class MeterSpec:
    """One meter behind a gateway: how the gateway reads it and how the simulator models it.

    ``params`` go to the meter model (``simulators.meters.meter_from_spec``), plus three keys of ours:
    ``model`` (energy|water|temperature; default from ``kind``, ``other`` -> energy), ``overflow``
    (error|wrap, how a value too big for the register is served) and ``seed`` (else derived from the fleet
    seed, MAC and code). Counters start at the fleet's start unless ``origin`` is given.
    ``word_order`` is an addition to the contract (default big, as the registry's).
    """

    code: str
    slave_id: int
    register: int
    data_type: str
    scale: float
    unit: str
    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)
    word_order: str = "big"

    def __post_init__(self) -> None:
        where = f"meter {self.code!r}"
        if not isinstance(self.code, str) or not self.code:
            raise ValueError(f"meter code={self.code!r}: expected a non-empty string")
        if type(self.slave_id) is not int or not 1 <= self.slave_id <= 247:
            raise ValueError(f"{where}: slave_id={self.slave_id!r}: expected an integer 1..247")
        if type(self.register) is not int or not 0 <= self.register <= 65535:
            raise ValueError(f"{where}: register={self.register!r}: expected an integer 0..65535")
        if self.data_type not in DATA_TYPES:
            raise ValueError(f"{where}: data_type={self.data_type!r}: expected one of {', '.join(DATA_TYPES)}")
        if self.word_order not in WORD_ORDERS:
            raise ValueError(f"{where}: word_order={self.word_order!r}: expected big or little")
        if not isinstance(self.scale, int | float) or not self.scale:
            raise ValueError(f"{where}: scale={self.scale!r}: expected a non-zero number")
        if self.unit not in KNOWN_UNITS:
            raise ValueError(f"{where}: unit={self.unit!r}: expected one of {', '.join(sorted(KNOWN_UNITS))}")
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind={self.kind!r}: expected one of {', '.join(KINDS)}")
        model = self.params.get("model", self.model)
        if model not in MODELS:
            raise ValueError(f"{where}: params.model={model!r}: expected one of {', '.join(MODELS)}")
        if self.params.get("overflow", "error") not in ("error", "wrap"):
            raise ValueError(f"{where}: params.overflow={self.params['overflow']!r}: expected error or wrap")

    @property
    def model(self) -> str:
        """The simulator model kind."""
        model = self.params.get("model")
        if model is not None:
            return str(model)
        return self.kind if self.kind in MODELS else "energy"


@dataclass(frozen=True)
class GatewaySpec:
    """One gateway. ``mac`` is normalised (lower-case, colons); ``code`` is the legacy gateway code."""

    mac: str
    code: str
    tenant: str
    payload_format: str
    meters: tuple[MeterSpec, ...]
    poll_interval_s: float = 300
    group: str | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "mac", normalize_mac(self.mac))
        except (ValueError, TypeError):
            raise ValueError(f"gateway mac={self.mac!r}: expected six hex pairs like aa:bb:cc:dd:ee:ff") from None
        if self.payload_format not in ("v1", "legacy"):
            raise ValueError(f"gateway {self.mac}: payload_format={self.payload_format!r}: expected v1 or legacy")
        if not isinstance(self.code, str) or not self.code:
            raise ValueError(f"gateway {self.mac}: code={self.code!r}: expected a non-empty string")
        object.__setattr__(self, "meters", tuple(self.meters))
        if not 1 <= len(self.meters) <= 8:
            raise ValueError(f"gateway {self.mac}: expected 1..8 meters, got {len(self.meters)}")
        codes = [m.code for m in self.meters]
        slaves = [m.slave_id for m in self.meters]
        if len(set(codes)) != len(codes):
            raise ValueError(f"gateway {self.mac}: duplicate meter codes in {codes}")
        if len(set(slaves)) != len(slaves):
            raise ValueError(f"gateway {self.mac}: duplicate slave ids in {slaves} (one meter per slave id)")
        if not (isinstance(self.poll_interval_s, int | float) and 0 < self.poll_interval_s <= 86400):
            raise ValueError(f"gateway {self.mac}: poll_interval_s={self.poll_interval_s!r}: expected 0 < s <= 86400")


@dataclass(frozen=True)
class TlsMaterial:
    """Files for mTLS: the CA, and each gateway's certificate and key (CN = MAC).

    ``pki_dir``: a ``tds pki`` directory (certificate ``certs/<mac>.crt``, key ``private/<mac>.key``, ':'
    written as '-'); or ``cert_pattern`` / ``key_pattern`` with ``{mac}`` (colons) or ``{mac_dashed}``.
    """

    ca: str
    pki_dir: str | None = None
    cert_pattern: str | None = None
    key_pattern: str | None = None

    def files_for(self, mac: str) -> tuple[str, str, str]:
        """(ca, cert, key) paths for gateway ``mac``."""
        if self.pki_dir is not None:
            from tds_core.pki.store import PkiPaths

            paths = PkiPaths(Path(self.pki_dir))
            return self.ca, str(paths.cert(mac)), str(paths.key(mac))
        if self.cert_pattern is None or self.key_pattern is None:
            raise ValueError("TlsMaterial: give pki_dir, or both cert_pattern and key_pattern")
        fill = {"mac": mac, "mac_dashed": mac.replace(":", "-")}
        return self.ca, self.cert_pattern.format(**fill), self.key_pattern.format(**fill)
