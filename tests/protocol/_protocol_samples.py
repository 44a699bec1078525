"""Sample messages shared by the protocol tests (a helper module, not a test file)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

MAC = "aa:bb:cc:dd:ee:ff"
V1_TOPIC = f"tds_new/devices/{MAC}/telemetry"
LEGACY_TOPIC = "telemetry/GW-TEST-001/D01/data"
NOW = datetime(2026, 2, 18, 14, 30, tzinfo=UTC)


def v1_doc() -> dict[str, Any]:
    """A valid v1 document (three readings) at NOW, fresh on every call so tests can mutate it."""
    return {
        "gateway_mac": MAC,
        "timestamp": "2026-02-18T14:30:00Z",
        "leituras": [
            {"dispositivo_codigo": "D01", "valor": 123.45, "unidade": "kWh"},
            {"dispositivo_codigo": "D02", "valor": 7, "unidade": "m³"},
            {"dispositivo_codigo": "D03", "valor": -3.5, "unidade": "°C"},
        ],
    }


def legacy_doc() -> dict[str, Any]:
    """A valid legacy document at NOW (11:30-03:00 is 14:30Z), fresh on every call."""
    return {
        "gateway_code": "GW-TEST-001",
        "device_code": "D01",
        "timestamp": "2026-02-18T11:30:00-03:00",
        "leituras": [{"tipo": "energia", "valor": 123.45, "unidade": "kWh"}],
    }


def dumps(doc: Any) -> bytes:
    """Compact UTF-8 JSON, as gateways send it."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
