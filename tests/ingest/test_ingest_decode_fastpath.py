"""decode()'s orjson fast path against its stdlib path: the same Telemetry, or the same Rejection.

The fast path may only ever accept what the stdlib path accepts, identically; everything else must fall
through to the stdlib path (same reason, same detail). Payloads are mutations of a valid v1 message.
"""

from __future__ import annotations

import importlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tds_core.protocol import Rejection, decode

decode_module = importlib.import_module("tds_core.protocol.decode")  # the package re-exports the function

MAC = "aa:bb:cc:dd:ee:ff"
TOPIC = f"tds_new/devices/{MAC}/telemetry"
NOW = datetime(2026, 2, 18, 14, 30, tzinfo=UTC)
BOUNDED = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

pytestmark = pytest.mark.skipif(decode_module._fast_loads is None, reason="orjson not installed: pip install orjson")


def _outcome(topic: str, payload: bytes, *, fast: bool) -> Any:
    saved = decode_module._fast_loads
    if not fast:
        decode_module._fast_loads = None
    try:
        return decode(topic, payload, now=NOW)
    except Rejection as rejection:
        return ("rejected", rejection.reason, rejection.detail)
    finally:
        decode_module._fast_loads = saved


def _assert_same(topic: str, payload: bytes) -> None:
    assert _outcome(topic, payload, fast=True) == _outcome(topic, payload, fast=False)


def _doc(n: int = 3) -> dict[str, Any]:
    return {
        "gateway_mac": MAC,
        "timestamp": "2026-02-18T14:29:00Z",
        "leituras": [{"dispositivo_codigo": f"D{i:02d}", "valor": 1.5 + i, "unidade": "kWh"} for i in range(n)],
    }


values = (
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30) | st.floats()
    | st.text(max_size=8) | st.sampled_from(["kWh", "D01", MAC, "AA-BB-CC-DD-EE-FF", "2026-02-18T14:29:00-03:00"])
)
fields = st.sampled_from(["gateway_mac", "timestamp", "leituras", "dispositivo_codigo", "valor", "unidade", "x"])


@BOUNDED
@given(st.lists(st.tuples(st.integers(0, 4), fields, values), max_size=3), st.integers(1, 4))
def test_mutated_v1_messages_get_the_same_verdict(edits: list, n: int) -> None:
    doc = _doc(n)
    readings = doc["leituras"]  # edited through this reference even if a top-level edit replaces it
    for where, name, value in edits:
        target = doc if where == 0 or where > n else readings[where - 1]
        target[name] = value
    _assert_same(TOPIC, json.dumps(doc).encode())  # NaN/Infinity written as literals, like a sloppy encoder


@pytest.mark.parametrize(
    "payload",
    [
        b'{"gateway_mac":"aa:bb:cc:dd:ee:ff","timestamp":"2026-02-18T14:29:00Z","leituras":[{"dispositivo_codigo":'
        b'"D01","valor":' + b"9" * 400 + b',"unidade":"kWh"}]}',  # an integer beyond a float
        b'{"gateway_mac":"aa:bb:cc:dd:ee:ff","timestamp":"2026-02-18T14:29:00Z","leituras":[{"dispositivo_codigo":'
        b'"D01","valor":123456789012345678901234567890,"unidade":"kWh"}]}',  # beyond 64 bits
        b'{"gateway_mac":"aa:bb:cc:dd:ee:ff","timestamp":"2026-02-18T14:29:00Z","leituras":[{"dispositivo_codigo":'
        b'"D01","valor":1e999,"unidade":"kWh"}]}',
        b'{"gateway_mac":"aa:bb:cc:dd:ee:ff","timestamp":"2026-02-18T14:29:00Z","x":' + b"[" * 1010 + b"]" * 1010
        + b',"leituras":[{"dispositivo_codigo":"D01","valor":1.0,"unidade":"kWh"}]}',  # deep nesting
        b'{"gateway_mac":"aa:bb:cc:dd:ee:ff","timestamp":"2026-02-18T14:29:00Z","leituras":[{"dispositivo_codigo":'
        b'"D\\ud800","valor":1.0,"unidade":"kWh"}]}',  # lone surrogate
        b'\xef\xbb\xbf{"gateway_mac":"aa:bb:cc:dd:ee:ff"}',
        b'{"gateway_mac":"aa:bb:cc:dd:ee:ff","gateway_mac":"AA-BB-CC-DD-EE-FF","timestamp":"2026-02-18T14:29:00Z",'
        b'"leituras":[{"dispositivo_codigo":"D01","valor":1.0,"unidade":"kWh"}]}',  # duplicate key: last wins
        b'{"gateway_mac":"aa:bb:cc:dd:ee:ff","timestamp":"2026-02-18T14:29:00Z","leituras":[{"valor":NaN}]}',
        b"\xff\xfe",
    ],
)
def test_edge_payloads_get_the_same_verdict(payload: bytes) -> None:
    _assert_same(TOPIC, payload)
    _assert_same("telemetry/GW-TEST-001/D01/data", payload)
