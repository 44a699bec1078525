"""Topic access rules shared by the embedded broker and the Mosquitto ACL generator.

One identity per client: a gateway (username = certificate CN = its MAC) or a consumer (a CN listed
as a consumer). A gateway writes only its own telemetry and status and reads only its own commands;
legacy gateways also write ``telemetry/{gateway_code}/+/data`` for their own gateway codes. A consumer
reads all telemetry and status and writes commands, but never writes telemetry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "CONSUMER_READ",
    "CONSUMER_WRITE",
    "DEVICE_READ",
    "DEVICE_WRITE",
    "Acl",
    "filter_within",
    "split_shared",
    "topic_matches",
]

# Patterns; "{u}" is replaced by the username (the MAC), as Mosquitto's %u.
DEVICE_WRITE = ("tds_new/devices/{u}/telemetry", "tds_new/devices/{u}/status")
DEVICE_READ = ("tds_new/devices/{u}/commands/#",)
LEGACY_WRITE = "telemetry/{gw}/+/data"
CONSUMER_READ = ("tds_new/devices/+/telemetry", "tds_new/devices/+/status", "telemetry/+/+/data")
CONSUMER_WRITE = ("tds_new/devices/+/commands/#",)


def split_shared(topic_filter: str) -> tuple[str | None, str]:
    """Split ``$share/{group}/{filter}`` into (group, filter); (None, filter) for a plain filter."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        if len(parts) == 3 and parts[1] and parts[2]:
            return parts[1], parts[2]
    return None, topic_filter


def topic_matches(topic: str, pattern: str) -> bool:
    """True when the concrete ``topic`` matches the filter ``pattern`` (MQTT wildcard rules)."""
    if topic.startswith("$") and pattern[:1] in ("+", "#"):
        return False
    t_levels = topic.split("/")
    p_levels = pattern.split("/")
    for i, level in enumerate(p_levels):
        if level == "#":
            return i == len(p_levels) - 1
        if i >= len(t_levels):
            return False
        if level != "+" and level != t_levels[i]:
            return False
    return len(t_levels) == len(p_levels)


def filter_within(topic_filter: str, pattern: str) -> bool:
    """True when every topic the subscription ``topic_filter`` can match is matched by ``pattern``.

    This is what makes a subscription to ``#`` or ``tds_new/#`` by a gateway fail: the filter is wider
    than what the gateway may read.
    """
    f_levels = topic_filter.split("/")
    p_levels = pattern.split("/")
    for i, p in enumerate(p_levels):
        if p == "#":
            return True
        if i >= len(f_levels):
            return False
        f = f_levels[i]
        if f == "#":
            return False  # the filter reaches further than a non-# pattern
        if p == "+":
            continue
        if f != p:  # also catches f == "+" against a literal level
            return False
    return len(f_levels) == len(p_levels)


def _valid_level(name: str) -> bool:
    return bool(name) and not any(c in name for c in "/+#\x00")


@dataclass(frozen=True)
class Acl:
    """Access rules: who may publish, subscribe to and receive which topics.

    consumer_cns: identities with consumer rights (read all telemetry/status, write commands).
    legacy_gateways: MAC (the username) -> gateway codes it may publish legacy telemetry for.
    Any other authenticated username is treated as a gateway whose MAC is the username.
    """

    consumer_cns: frozenset[str] = frozenset()
    legacy_gateways: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        consumer_cns: Iterable[str],
        legacy_gateways: Mapping[str, Iterable[str]] | Iterable[tuple[str, str]] = (),
    ) -> Acl:
        """Build from plain iterables; ``legacy_gateways`` is a mapping or (mac, gateway_code) pairs."""
        consumers = frozenset(consumer_cns)
        for cn in consumers:
            if not _valid_level(cn):
                raise ValueError(f"consumer_cns: {cn!r} is not a valid username (no '/', '+', '#', empty)")
        pairs = legacy_gateways.items() if isinstance(legacy_gateways, Mapping) else legacy_gateways
        legacy: dict[str, set[str]] = {}
        for mac, codes in pairs:
            for code in [codes] if isinstance(codes, str) else codes:
                if not _valid_level(code):
                    raise ValueError(
                        f"legacy_gateways[{mac!r}]: gateway code {code!r} is not a valid topic level")
                legacy.setdefault(mac, set()).add(code)
        return cls(consumers, {m: frozenset(c) for m, c in legacy.items()})

    def is_consumer(self, username: str | None) -> bool:
        """True when ``username`` has consumer rights."""
        return username in self.consumer_cns

    def _write_patterns(self, username: str) -> list[str]:
        if self.is_consumer(username):
            return list(CONSUMER_WRITE)
        if not _valid_level(username):
            return []
        patterns = [p.format(u=username) for p in DEVICE_WRITE]
        patterns += [LEGACY_WRITE.format(gw=gw) for gw in sorted(self.legacy_gateways.get(username, ()))]
        return patterns

    def _read_patterns(self, username: str) -> list[str]:
        if self.is_consumer(username):
            return list(CONSUMER_READ)
        if not _valid_level(username):
            return []
        return [p.format(u=username) for p in DEVICE_READ]

    def can_publish(self, username: str | None, topic: str) -> bool:
        """May ``username`` publish to the concrete ``topic``?"""
        if not username or not topic or "+" in topic or "#" in topic:
            return False
        return any(topic_matches(topic, p) for p in self._write_patterns(username))

    def can_subscribe(self, username: str | None, topic_filter: str) -> bool:
        """May ``username`` subscribe to ``topic_filter`` (``$share/{group}/`` forms included)?"""
        if not username or not topic_filter:
            return False
        _, inner = split_shared(topic_filter)
        return any(filter_within(inner, p) for p in self._read_patterns(username))

    def can_receive(self, username: str | None, topic: str) -> bool:
        """May ``username`` be sent a message published on ``topic``? Checked per message."""
        if not username:
            return False
        return any(topic_matches(topic, p) for p in self._read_patterns(username))
