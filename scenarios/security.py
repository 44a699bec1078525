"""mTLS material for one scenario run: a throwaway PKI in the run's directory.

`ScenarioPki.create(dir, fleet)` makes a CA, the broker certificate, the consumer's certificate, a second
consumer identity (the *commander*: what attacks use to act with consumer rights without touching the real
consumer's session) and one device certificate per simulated gateway (EC P-256 keys: milliseconds each).
It hands each part what it needs: the embedded broker's arguments (`--tls-dir`, consumers, legacy
MAC=code pairs for the ACL), the Mosquitto ACL inputs, the consumer's `TlsFiles`, the fleet's
`TlsMaterial` and `ClientTLS` for probe clients. Keys stay in the run directory (never committed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tds_core.broker.probe import ClientTLS
from tds_core.pki import Pki

from .fleetdef import ScenarioFleet

log = logging.getLogger(__name__)

CONSUMER_CN = "tds-scenario-consumer"
COMMANDER_CN = "tds-scenario-commander"


@dataclass
class ScenarioPki:
    """A run's CA and the certificates of every part; see the module docstring."""

    root: Path
    pki: Pki
    device_macs: tuple[str, ...]
    legacy: dict[str, list[str]] = field(default_factory=dict)  # mac -> legacy gateway codes (ACL)
    consumer_cn: str = CONSUMER_CN
    commander_cn: str = COMMANDER_CN

    @classmethod
    def create(cls, directory: Path, fleet: ScenarioFleet) -> ScenarioPki:
        """A fresh CA in `directory` with broker, consumer, commander and one device certificate per gateway."""
        pki = Pki.init(directory)
        pki.issue_broker()
        pki.issue_consumer(CONSUMER_CN)
        pki.issue_consumer(COMMANDER_CN)
        macs = tuple(g.mac for g in fleet.gateways)
        for mac in macs:
            pki.issue_device(mac)
        legacy = {g.mac: [g.code] for g in fleet.gateways if g.gateway.payload_format == "legacy"}
        log.info("scenario PKI in %s: %d device certificates", directory, len(macs))
        return cls(Path(directory), pki, macs, legacy)

    @property
    def ca_file(self) -> Path:
        return self.pki.paths.ca_cert

    @property
    def consumer_cns(self) -> tuple[str, str]:
        return (self.consumer_cn, self.commander_cn)

    def embedded_args(self) -> list[str]:
        """Arguments of `python -m tds_core.broker.embedded` for mTLS with this run's ACL."""
        args = ["--tls-dir", str(self.root)]
        for cn in self.consumer_cns:
            args += ["--consumer", cn]
        for mac, codes in sorted(self.legacy.items()):
            args += [f"--legacy={mac}={code}" for code in codes]
        return args

    def client_tls(self, cn: str) -> ClientTLS:
        """Probe-client material for an identity issued here (a MAC or a consumer CN)."""
        return ClientTLS(self.ca_file, self.pki.paths.cert(cn), self.pki.paths.key(cn))

    def consumer_tls(self) -> Any:
        """The consumer's `tds_core.ingest.config.TlsFiles`."""
        from tds_core.ingest.config import TlsFiles

        return TlsFiles(str(self.ca_file), str(self.pki.paths.cert(self.consumer_cn)),
                        str(self.pki.paths.key(self.consumer_cn)))

    def fleet_tls(self) -> Any:
        """The fleet engine's `TlsMaterial` (each virtual gateway gets its own certificate and key)."""
        try:
            from simulators.fleet import TlsMaterial
        except ImportError:
            from simulators.fleet_spec import TlsMaterial
        return TlsMaterial(ca=str(self.ca_file), pki_dir=str(self.root))
