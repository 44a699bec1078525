"""TDS wire protocol: MQTT topics and the v1 / legacy telemetry payloads.

Offers pure functions, no I/O: :func:`decode` (bytes + topic -> :class:`Telemetry`, or a
:class:`Rejection` with a stable :class:`Reason` code and a detail naming field, value and expectation),
:func:`encode_v1` / :func:`encode_legacy` (validated inputs -> topic + compact JSON), topic builders and
:func:`parse_topic`, :func:`normalize_mac`, and the unit list. Firmware imports this package, so it
imports nothing else from ``tds_core``.
"""

from .decode import decode
from .encode import encode_legacy, encode_v1
from .errors import Reason, Rejection
from .model import DEFAULT_LIMITS, Limits, Reading, Telemetry
from .timestamps import format_offset, format_utc, parse_timestamp
from .topics import (
    COMMAND_NAMES,
    LEGACY_SUBSCRIPTION,
    STATUS_OFFLINE,
    STATUS_ONLINE,
    STATUS_SUBSCRIPTION,
    V1_SUBSCRIPTION,
    TopicInfo,
    command_topic,
    is_device_code,
    is_gateway_code,
    legacy_topic,
    normalize_mac,
    parse_topic,
    status_topic,
    v1_topic,
)
from .units import KNOWN_UNITS

__all__ = [
    "COMMAND_NAMES",
    "DEFAULT_LIMITS",
    "KNOWN_UNITS",
    "LEGACY_SUBSCRIPTION",
    "STATUS_OFFLINE",
    "STATUS_ONLINE",
    "STATUS_SUBSCRIPTION",
    "V1_SUBSCRIPTION",
    "Limits",
    "Reading",
    "Reason",
    "Rejection",
    "Telemetry",
    "TopicInfo",
    "command_topic",
    "decode",
    "encode_legacy",
    "encode_v1",
    "format_offset",
    "format_utc",
    "is_device_code",
    "is_gateway_code",
    "legacy_topic",
    "normalize_mac",
    "parse_timestamp",
    "parse_topic",
    "status_topic",
    "v1_topic",
]
