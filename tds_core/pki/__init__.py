"""TDS certificate authority: CA, broker/consumer/device certificates, CSR renewal, revocation, CRL.

``Pki.init(dir)`` / ``Pki(dir)``; ``issue_broker``, ``issue_consumer``, ``issue_device``, ``renew``,
``revoke``; ``publish_crl``, ``crl_status``, ``refresh_crl``. CLI: ``tds pki ...`` (tds_core.pki.cli).
"""

from tds_core.pki.authority import DEFAULT_CONSUMER_CN, DEVICE_DAYS, Issued, Pki, normalize_device_cn
from tds_core.pki.crl import CrlState, CrlStatus, crl_status, publish_crl, refresh_crl
from tds_core.pki.store import IndexEntry, PkiIndex, PkiPaths

__all__ = [
    "DEFAULT_CONSUMER_CN",
    "DEVICE_DAYS",
    "CrlState",
    "CrlStatus",
    "IndexEntry",
    "Issued",
    "Pki",
    "PkiIndex",
    "PkiPaths",
    "crl_status",
    "normalize_device_cn",
    "publish_crl",
    "refresh_crl",
]
