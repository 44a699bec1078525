"""Topic builders, parse_topic, normalize_mac."""

from __future__ import annotations

import pytest

from tds_core.protocol import (
    LEGACY_SUBSCRIPTION,
    STATUS_SUBSCRIPTION,
    V1_SUBSCRIPTION,
    Reason,
    Rejection,
    TopicInfo,
    command_topic,
    legacy_topic,
    normalize_mac,
    parse_topic,
    status_topic,
    v1_topic,
)


@pytest.mark.parametrize("raw", ["aa:bb:cc:dd:ee:ff", "AA:BB:CC:DD:EE:FF", "AA-BB-CC-DD-EE-FF", "aA-bB-cC-dD-eE-fF"])
def test_normalize_mac(raw: str) -> None:
    assert normalize_mac(raw) == "aa:bb:cc:dd:ee:ff"


@pytest.mark.parametrize(
    "raw",
    ["", "aabbccddeeff", "aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:ff:00", "aa:bb-cc:dd:ee:ff", "gg:bb:cc:dd:ee:ff",
     "aa:bb:cc:dd:ee:ff\n", " aa:bb:cc:dd:ee:ff", "aa.bb.cc.dd.ee.ff", "١١:bb:cc:dd:ee:ff", None, 5],
)  # fmt: skip
def test_normalize_mac_rejects(raw: object) -> None:
    with pytest.raises(ValueError, match="MAC"):
        normalize_mac(raw)  # type: ignore[arg-type]


def test_builders() -> None:
    assert v1_topic("AA-BB-CC-DD-EE-FF") == "tds_new/devices/aa:bb:cc:dd:ee:ff/telemetry"
    assert status_topic("aa:bb:cc:dd:ee:ff") == "tds_new/devices/aa:bb:cc:dd:ee:ff/status"
    assert command_topic("aa:bb:cc:dd:ee:ff", "ota") == "tds_new/devices/aa:bb:cc:dd:ee:ff/commands/ota"
    assert legacy_topic("GW-TEST-001", "D01") == "telemetry/GW-TEST-001/D01/data"
    assert (V1_SUBSCRIPTION, LEGACY_SUBSCRIPTION, STATUS_SUBSCRIPTION) == (
        "tds_new/devices/+/telemetry",
        "telemetry/+/+/data",
        "tds_new/devices/+/status",
    )


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: v1_topic("nope"), "MAC"),
        (lambda: command_topic("aa:bb:cc:dd:ee:ff", "format-disk"), "command"),
        (lambda: legacy_topic("GW/1", "D01"), "gateway code"),
        (lambda: legacy_topic("GW+", "D01"), "gateway code"),
        (lambda: legacy_topic("G" * 65, "D01"), "gateway code"),
        (lambda: legacy_topic("", "D01"), "gateway code"),
        (lambda: legacy_topic("GW", "D 01"), "device code"),
        (lambda: legacy_topic("GW", "D" * 33), "device code"),
    ],
)
def test_builders_validate(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    ("topic", "info"),
    [
        ("tds_new/devices/aa:bb:cc:dd:ee:ff/telemetry", TopicInfo("v1", "aa:bb:cc:dd:ee:ff", None, None)),
        ("tds_new/devices/AA-BB-CC-DD-EE-FF/telemetry", TopicInfo("v1", "aa:bb:cc:dd:ee:ff", None, None)),
        ("tds_new/devices/aa:bb:cc:dd:ee:ff/status", TopicInfo("status", "aa:bb:cc:dd:ee:ff", None, None)),
        (
            "tds_new/devices/aa:bb:cc:dd:ee:ff/commands/reboot",
            TopicInfo("command", "aa:bb:cc:dd:ee:ff", None, None, "reboot"),
        ),
        ("telemetry/GW-TEST-001/D01/data", TopicInfo("legacy", None, "GW-TEST-001", "D01")),
        ("telemetry/Gateway Ação 1/D.01_x-y/data", TopicInfo("legacy", None, "Gateway Ação 1", "D.01_x-y")),
    ],
)
def test_parse_topic(topic: str, info: TopicInfo) -> None:
    assert parse_topic(topic) == info
    assert parse_topic(topic).kind == info.kind  # cached second call: same answer


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("", Reason.BAD_TOPIC),
        ("/", Reason.BAD_TOPIC),
        ("tds_new/devices/aa:bb:cc:dd:ee:ff/telemetry/", Reason.BAD_TOPIC),
        ("/tds_new/devices/aa:bb:cc:dd:ee:ff/telemetry", Reason.BAD_TOPIC),
        ("tds_new/devices/aa:bb:cc:dd:ee:ff/commands/format", Reason.BAD_TOPIC),
        ("tds_new/devices/aa:bb:cc:dd:ee:ff/commands", Reason.BAD_TOPIC),
        ("tds_new/devices/+/telemetry", Reason.BAD_TOPIC),
        ("telemetry/+/+/data", Reason.BAD_TOPIC),
        ("telemetry/#", Reason.BAD_TOPIC),
        ("telemetry//D01/data", Reason.BAD_TOPIC),
        ("telemetry/" + "G" * 65 + "/D01/data", Reason.BAD_TOPIC),
        ("telemetry/GW/D01/data/extra", Reason.BAD_TOPIC),
        ("TELEMETRY/GW/D01/data", Reason.BAD_TOPIC),
        ("telemetry/GW/\x00/data", Reason.BAD_TOPIC),
        ("telemetry/GW\ud800/D01/data", Reason.BAD_TOPIC),
        ("telemetry/GW//data", Reason.BAD_DEVICE_CODE),
        ("telemetry/GW/D é/data", Reason.BAD_DEVICE_CODE),
        ("tds_new/devices/aa:bb:cc:dd:ee/telemetry", Reason.BAD_MAC),
        ("tds_new/devices//status", Reason.BAD_MAC),
    ],
)
def test_parse_topic_rejects(topic: str, reason: Reason) -> None:
    with pytest.raises(Rejection) as info:
        parse_topic(topic)
    assert info.value.reason is reason
    assert info.value.detail.startswith("topic ")
