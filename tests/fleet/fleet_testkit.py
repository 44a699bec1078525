"""Helpers for the fleet engine tests (fixtures are in conftest.py): a paho subscriber in its own thread
(outside the fleet's event loop, so it never holds virtual time back), fleet specs and a start in the past.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt

from simulators.fleet import GatewaySpec, MeterSpec


class Subscriber:
    """Records (topic, payload, retain) of everything on ``topics``; ``wait_for`` polls a predicate."""

    _n = 0

    def __init__(self, port: int, topics: tuple[str, ...] = ("tds_new/#", "telemetry/#")) -> None:
        Subscriber._n += 1
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fleet-test-sub-{Subscriber._n}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe([(t, 1) for t in topics])
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("subscriber: no SUBACK in 10 s")

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def snapshot(self) -> list[tuple[str, bytes, bool]]:
        """A copy of what arrived so far."""
        with self._lock:
            return list(self.messages)

    def telemetry(self) -> list[tuple[str, bytes]]:
        """Telemetry messages (v1 and legacy), live deliveries only."""
        return [(t, p) for t, p, r in self.snapshot()
                if (t.endswith("/telemetry") or t.startswith("telemetry/")) and not r]

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        """Block until ``predicate()`` (re-checked every 20 ms) or fail naming ``what``."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; got {len(self.snapshot())} messages")
            time.sleep(0.02)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


def make_specs(gateways: int, meters: int, *, legacy_every: int = 0, poll_interval_s: float = 300,
               prefix: str = "aa:bb:cc:01") -> list[GatewaySpec]:
    """``gateways`` specs with ``meters`` uint32 kWh energy meters each (every ``legacy_every``-th legacy)."""
    out = []
    for g in range(gateways):
        ms = tuple(MeterSpec(f"D{i + 1:02d}", i + 1, 0, "uint32", 0.01, "kWh", "energy",
                             {"base_kw": 0.5 + i, "initial": 100.0 * (i + 1)})
                   for i in range(meters))
        legacy = legacy_every and g % legacy_every == legacy_every - 1
        out.append(GatewaySpec(f"{prefix}:{g // 256:02x}:{g % 256:02x}", f"GW-T{g:04d}", "acme",
                               "legacy" if legacy else "v1", ms, poll_interval_s=poll_interval_s))
    return out


def past_start(duration: timedelta) -> datetime:
    """A start on a 5-minute boundary such that start + duration is in the past."""
    t = datetime.now(UTC) - duration - timedelta(minutes=5)
    return t.replace(minute=t.minute - t.minute % 5, second=0, microsecond=0)
