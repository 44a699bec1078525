"""Malformed telemetry a gateway can be made to send, each kind with the reason the core must give.

Every payload is distinct (it carries its index), because dead letters are unique by digest: two identical
bad messages would be filed once.
"""

from __future__ import annotations

import json
from datetime import datetime

from tds_core.protocol import v1_topic

from .schema import MALFORMED_KINDS


def malformed(kind: str, mac: str, device_code: str, unit: str, index: int, at: datetime) -> tuple[str, bytes]:
    """(topic, payload) of bad message number `index` of `kind`, sent as gateway `mac`."""
    if kind not in MALFORMED_KINDS:
        raise ValueError(f"malformed kind {kind!r}: expected one of {', '.join(MALFORMED_KINDS)}")
    ts = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    good = {"gateway_mac": mac, "timestamp": ts,
            "leituras": [{"dispositivo_codigo": device_code, "valor": float(index), "unidade": unit}]}
    if kind == "malformed_json":
        payload = f'{{"gateway_mac": "{mac}", "n": {index}, '.encode()  # cut short
    elif kind == "not_an_object":
        payload = json.dumps([index, mac]).encode()
    elif kind == "missing_field":
        del good["leituras"]
        good["n"] = index
        payload = json.dumps(good).encode()
    elif kind == "wrong_type":
        good["leituras"][0]["valor"] = f"bad-{index}"
        payload = json.dumps(good).encode()
    elif kind == "bad_timestamp":
        good["timestamp"] = f"yesterday-{index}"
        payload = json.dumps(good).encode()
    elif kind == "unknown_unit":
        good["leituras"][0]["unidade"] = "furlong"
        good["leituras"][0]["valor"] = float(index)
        payload = json.dumps(good).encode()
    elif kind == "mac_mismatch":
        good["gateway_mac"] = "02:ff:ff:ff:ff:fe"
        payload = json.dumps(good).encode()
    else:  # unknown_device: well-formed, but the registry has no such device on this gateway
        good["leituras"][0]["dispositivo_codigo"] = f"NOPE{index}"
        payload = json.dumps(good).encode()
    return v1_topic(mac), payload
