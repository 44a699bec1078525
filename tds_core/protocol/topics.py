"""MQTT topic names: builders, subscriptions, and :func:`parse_topic`; also MAC and code syntax."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal, NamedTuple

from .errors import Reason, Rejection, show

__all__ = [
    "COMMAND_NAMES",
    "LEGACY_SUBSCRIPTION",
    "STATUS_OFFLINE",
    "STATUS_ONLINE",
    "STATUS_SUBSCRIPTION",
    "V1_SUBSCRIPTION",
    "TopicInfo",
    "command_topic",
    "is_device_code",
    "is_gateway_code",
    "legacy_topic",
    "normalize_mac",
    "parse_topic",
    "status_topic",
    "v1_topic",
]

V1_SUBSCRIPTION = "tds_new/devices/+/telemetry"
LEGACY_SUBSCRIPTION = "telemetry/+/+/data"
STATUS_SUBSCRIPTION = "tds_new/devices/+/status"
STATUS_ONLINE = b"online"  # retained on the status topic
STATUS_OFFLINE = b"offline"  # retained; also the Last Will
COMMAND_NAMES = frozenset({"config", "reboot", "ota"})

# One separator style per MAC ("aa:bb:.." or "AA-BB-.."); the backreference refuses mixtures.
_MAC_RE = re.compile(r"[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}")
_DEVICE_CODE_RE = re.compile(r"[A-Za-z0-9_.\-]{1,32}")
# Gateway codes are topic levels: no level separator, no wildcards, no NUL (forbidden by MQTT),
# no lone surrogates (not encodable, so never storable or comparable in PostgreSQL).
_GATEWAY_CODE_RE = re.compile(r"[^/+#\x00\ud800-\udfff]{1,64}")


def normalize_mac(mac: str) -> str:
    """Return ``mac`` as stored: lower-case hex pairs joined by colons.

    Accepts ':' or '-' separators in any case; raises ValueError for anything else.
    """
    if not isinstance(mac, str) or _MAC_RE.fullmatch(mac) is None:
        raise ValueError(f"invalid MAC address {show(mac)}: expected six hex pairs like aa:bb:cc:dd:ee:ff")
    return mac.lower().replace("-", ":")


def is_device_code(code: object) -> bool:
    """True if ``code`` is a valid device code: 1-32 chars of [A-Za-z0-9_.-]."""
    return isinstance(code, str) and _DEVICE_CODE_RE.fullmatch(code) is not None


def is_gateway_code(code: object) -> bool:
    """True if ``code`` is a valid gateway code: 1-64 chars, none of '/', '+', '#', NUL."""
    return isinstance(code, str) and _GATEWAY_CODE_RE.fullmatch(code) is not None


def _check_device_code(code: str) -> str:
    if not is_device_code(code):
        raise ValueError(f"invalid device code {show(code)}: expected 1-32 characters of A-Z a-z 0-9 _ . -")
    return code


def _check_gateway_code(code: str) -> str:
    if not is_gateway_code(code):
        raise ValueError(f"invalid gateway code {show(code)}: expected 1-64 characters without '/', '+', '#'")
    return code


def v1_topic(mac: str) -> str:
    """Telemetry topic of a v1 gateway: ``tds_new/devices/{mac}/telemetry`` (MAC normalized)."""
    return f"tds_new/devices/{normalize_mac(mac)}/telemetry"


def status_topic(mac: str) -> str:
    """Retained online/offline status topic of a gateway (payload ``b"online"`` / ``b"offline"``)."""
    return f"tds_new/devices/{normalize_mac(mac)}/status"


def command_topic(mac: str, name: str) -> str:
    """Command topic for a gateway; ``name`` is one of "config", "reboot", "ota"."""
    if name not in COMMAND_NAMES:
        raise ValueError(f"unknown command name {show(name)}: expected one of {sorted(COMMAND_NAMES)}")
    return f"tds_new/devices/{normalize_mac(mac)}/commands/{name}"


def legacy_topic(gateway_code: str, device_code: str) -> str:
    """Telemetry topic of a legacy gateway: ``telemetry/{gateway_code}/{device_code}/data``."""
    return f"telemetry/{_check_gateway_code(gateway_code)}/{_check_device_code(device_code)}/data"


class TopicInfo(NamedTuple):
    """What a topic says: its kind and the identities it names (None where the kind has none).

    ``command`` is the command name for ``kind == "command"`` (an addition to the brief's contract).
    """

    kind: Literal["v1", "legacy", "status", "command"]
    mac: str | None
    gateway_code: str | None
    device_code: str | None
    command: str | None = None


_EXPECTED = (
    f"expected {V1_SUBSCRIPTION}, {LEGACY_SUBSCRIPTION}, {STATUS_SUBSCRIPTION} "
    "or tds_new/devices/+/commands/{config|reboot|ota}"
)


def parse_topic(topic: str) -> TopicInfo:
    """Classify a topic. Raises :class:`Rejection`: ``bad_topic`` for an unknown shape,
    ``bad_mac`` / ``bad_device_code`` when the shape is right but the identity in it is not.
    """
    if not isinstance(topic, str):
        raise Rejection(Reason.BAD_TOPIC, f"topic: expected a string, got {show(topic)}")
    return _parse_topic(topic)


@lru_cache(maxsize=16384)  # topics repeat per gateway: the hot path hits the cache
def _parse_topic(topic: str) -> TopicInfo:
    if "+" in topic or "#" in topic or "\x00" in topic:
        raise Rejection(
            Reason.BAD_TOPIC, f"topic {show(topic)}: wildcards ('+', '#') and NUL are not allowed in a topic name"
        )
    parts = topic.split("/")
    n = len(parts)
    if n in (4, 5) and parts[0] == "tds_new" and parts[1] == "devices":
        if n == 4 and parts[3] in ("telemetry", "status"):
            kind = "v1" if parts[3] == "telemetry" else "status"
            return TopicInfo(kind, _topic_mac(topic, parts[2]), None, None)
        if n == 5 and parts[3] == "commands" and parts[4] in COMMAND_NAMES:
            return TopicInfo("command", _topic_mac(topic, parts[2]), None, None, parts[4])
    elif n == 4 and parts[0] == "telemetry" and parts[3] == "data":
        gateway_code, device_code = parts[1], parts[2]
        if not is_gateway_code(gateway_code):
            raise Rejection(
                Reason.BAD_TOPIC,
                f"topic {show(topic)}: gateway code {show(gateway_code)} is not 1-64 characters without '+', '#'",
            )
        if not is_device_code(device_code):
            raise Rejection(
                Reason.BAD_DEVICE_CODE,
                f"topic {show(topic)}: device code {show(device_code)} is not 1-32 characters of A-Z a-z 0-9 _ . -",
            )
        return TopicInfo("legacy", None, gateway_code, device_code)
    raise Rejection(Reason.BAD_TOPIC, f"topic {show(topic)}: unknown topic; {_EXPECTED}")


def _topic_mac(topic: str, level: str) -> str:
    try:
        return normalize_mac(level)
    except ValueError:
        raise Rejection(
            Reason.BAD_MAC,
            f"topic {show(topic)}: MAC level {show(level)} is not six hex pairs like aa:bb:cc:dd:ee:ff",
        ) from None
