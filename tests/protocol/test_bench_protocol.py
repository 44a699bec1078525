"""Hot-path benchmarks (pytest-benchmark). They report numbers and never assert on time.

Run: python -m pytest tests/protocol/test_bench_protocol.py -q --benchmark-only
"""

from __future__ import annotations

from datetime import timedelta, timezone

import pytest
from _protocol_samples import MAC, NOW

from tds_core.protocol import Reading, Rejection, decode, encode_legacy, encode_v1

# A typical gateway message: 8 meters, as in the field (see seeds: "8 dispositivos").
READINGS = [Reading(f"D{i:02d}", 1234.5 + i, "kWh") for i in range(1, 9)]
V1_TOPIC, V1_PAYLOAD = encode_v1(MAC, NOW, READINGS)
LEGACY_TOPIC, LEGACY_PAYLOAD = encode_legacy(
    "GW-TEST-001", "D01", NOW.astimezone(timezone(timedelta(hours=-3))), Reading("D01", 123.45, "kWh", "energia")
)
BAD_PAYLOAD = V1_PAYLOAD.replace(b'"kWh"}]', b'"KWH"}]')  # last reading has an unknown unit


def test_bench_decode_v1_8_readings(benchmark) -> None:
    benchmark.extra_info["payload_bytes"] = len(V1_PAYLOAD)
    result = benchmark(decode, V1_TOPIC, V1_PAYLOAD, now=NOW)
    assert len(result.readings) == 8


def test_bench_decode_v1_default_clock(benchmark) -> None:
    # now=None: the decoder reads the clock itself, as ingest does
    result = benchmark(decode, V1_TOPIC, V1_PAYLOAD.replace(b"2026-02-18T14:30:00Z", b"2026-02-18T00:00:00Z"))
    assert result.readings


def test_bench_decode_legacy(benchmark) -> None:
    benchmark.extra_info["payload_bytes"] = len(LEGACY_PAYLOAD)
    assert benchmark(decode, LEGACY_TOPIC, LEGACY_PAYLOAD, now=NOW).gateway_code == "GW-TEST-001"


def test_bench_decode_rejection(benchmark) -> None:
    def run() -> str:
        try:
            decode(V1_TOPIC, BAD_PAYLOAD, now=NOW)
        except Rejection as rej:
            return rej.reason
        pytest.fail("expected a rejection")

    assert benchmark(run) == "unknown_unit"


def test_bench_encode_v1_8_readings(benchmark) -> None:
    assert benchmark(encode_v1, MAC, NOW, READINGS) == (V1_TOPIC, V1_PAYLOAD)
