"""Accounting independent of the core: what meters served, what gateways published and got PUBACKed.

Fed from three harness-side taps, never from ``tds_core``: the banks' served reads (``ModbusBank.on_read``),
the MQTT sessions of the virtual gateways (publish / PUBACK of every telemetry message, parsed here with
``json`` - not with ``tds_core.protocol``, so a decoder bug cannot hide) and the virtual flash (a queue entry
deleted without a PUBACK is a dropped message; a write cut by a power loss is a lost one).

Storage is compact (``array`` of epoch microseconds and values per meter) so a month of a 200-gateway fleet
(~14M readings) costs a few hundred MB; the contract's dict views (``produced``, ``publish_times``) are built
on access, and :meth:`expected_rows` builds the whole set - for big runs prefer :meth:`expected_count` and
:meth:`iter_expected_rows`.
"""

from __future__ import annotations

import json
import logging
import time
from array import array
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from .modbus_bank import OK, ServedRead

__all__ = ["Accounting", "parse_telemetry"]

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _to_us(at: datetime) -> int:
    return (at - _EPOCH) // _US


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def parse_telemetry(topic: str, payload: bytes) -> tuple[int, list[tuple[str, float]]]:
    """(timestamp in epoch µs, [(device code, value)]) of a v1 or legacy message. Raises ValueError."""
    try:
        doc = json.loads(payload)
        ts = datetime.fromisoformat(doc["timestamp"])
        if ts.tzinfo is None:
            raise ValueError("naive timestamp")
        leituras = doc["leituras"]
        if topic.startswith("telemetry/"):  # legacy: one reading, the device code is a top-level field
            rows = [(str(doc["device_code"]), float(leituras[0]["valor"]))]
        else:
            rows = [(str(r["dispositivo_codigo"]), float(r["valor"])) for r in leituras]
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"telemetry on {topic!r} is not parseable: {exc!r}") from None
    return _to_us(ts), rows


class _Series:
    """Times (epoch µs) and values, appended in arrival order."""

    __slots__ = ("times", "values")

    def __init__(self) -> None:
        self.times = array("q")
        self.values = array("d")

    def add(self, us: int, value: float) -> None:
        self.times.append(us)
        self.values.append(value)

    def pairs(self) -> list[tuple[datetime, float]]:
        return [(_from_us(t), v) for t, v in zip(self.times, self.values, strict=True)]


class _ProducedView(Mapping[tuple[str, str], list[tuple[datetime, float]]]):
    def __init__(self, series: dict[tuple[str, str], _Series]) -> None:
        self._s = series

    def __getitem__(self, key: tuple[str, str]) -> list[tuple[datetime, float]]:
        return self._s[key].pairs()

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._s)

    def __len__(self) -> int:
        return len(self._s)


class _PublishTimesView(Mapping[tuple[str, datetime], float]):
    def __init__(self, times: dict[str, dict[int, float]]) -> None:
        self._t = times

    def __getitem__(self, key: tuple[str, datetime]) -> float:
        mac, at = key
        return self._t[mac][_to_us(at)]

    def __iter__(self) -> Iterator[tuple[str, datetime]]:
        for mac, per in self._t.items():
            for us in per:
                yield mac, _from_us(us)

    def __len__(self) -> int:
        return sum(len(p) for p in self._t.values())


class Accounting:
    """Tallies per gateway (``mac``) and meter (``(mac, device_code)``).

    Message counts (telemetry only): ``published`` (publish attempts, replays included), ``acked`` (PUBACKs),
    ``dropped`` (queue entries removed without a PUBACK: queue overflow, corrupt entry, plus queue writes cut
    by a power loss), ``lost_on_power_loss`` (the last part alone), ``raw_published`` (injected messages).
    ``failed_polls``: meter readings that failed every attempt (from the firmware counters, summed over
    power cycles). ``failed_attempts``: Modbus requests without a valid answer, seen by the virtual bus.
    """

    def __init__(self) -> None:
        self._produced: dict[tuple[str, str], _Series] = {}
        self._acked: dict[tuple[str, str], _Series] = {}
        self._ack_order: dict[str, array] = {}
        self._publish_times: dict[str, dict[int, float]] = {}
        self.published: dict[str, int] = {}
        self.acked: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.lost_on_power_loss: dict[str, int] = {}
        self.resurrected: dict[str, int] = {}
        self.raw_published: dict[str, int] = {}
        self.failed_attempts: dict[tuple[str, int], int] = {}
        self.unparseable: dict[str, int] = {}
        self.served_not_ok: dict[str, int] = {}
        self._acked_payloads: dict[str, set[bytes]] = {}
        self._failure_sources: dict[str, Callable[[], Mapping[str, int]]] = {}
        self.record_publish_times = True
        self.now_wall: Callable[[], float] = time.time

    # -- taps -----------------------------------------------------------------------------------------------
    def on_served(self, mac: str, read: ServedRead) -> None:
        """A bank served a request (``ModbusBank.on_read``): keep every valid whole-point value."""
        if read.outcome == OK and read.value is not None:
            key = (mac, read.meter_code)
            series = self._produced.get(key)
            if series is None:
                series = self._produced[key] = _Series()
            series.add(_to_us(read.at), read.value)
        elif read.outcome != OK:
            self.served_not_ok[mac] = self.served_not_ok.get(mac, 0) + 1

    def on_publish(self, mac: str, topic: str, payload: bytes) -> Any:
        """A telemetry publish starts (first attempt's wall time is kept per message). Returns a token."""
        self.published[mac] = self.published.get(mac, 0) + 1
        try:
            parsed = parse_telemetry(topic, payload)
        except ValueError as exc:
            self.unparseable[mac] = self.unparseable.get(mac, 0) + 1
            log.error("event=accounting_unparseable mac=%s %s", mac, exc)
            return None
        if self.record_publish_times:
            per = self._publish_times.get(mac)
            if per is None:
                per = self._publish_times[mac] = {}
            per.setdefault(parsed[0], self.now_wall())
        return parsed

    def on_ack(self, mac: str, token: Any, payload: bytes) -> None:
        """The PUBACK of a telemetry publish arrived."""
        self.acked[mac] = self.acked.get(mac, 0) + 1
        acked = self._acked_payloads.get(mac)
        if acked is None:
            acked = self._acked_payloads[mac] = set()
        acked.add(bytes(payload))
        if token is None:
            return
        us, rows = token
        for code, value in rows:
            key = (mac, code)
            series = self._acked.get(key)
            if series is None:
                series = self._acked[key] = _Series()
            series.add(us, value)
        order = self._ack_order.get(mac)
        if order is None:
            order = self._ack_order[mac] = array("q")
        order.append(us)

    def on_flash_delete(self, mac: str, name: str, blob: bytes) -> None:
        """A flash entry was deleted: a queue message without a PUBACK was dropped."""
        if not name.startswith("queue/"):
            return
        parts = blob.split(b"\n", 2)  # firmware.store format: header, topic, payload
        payload = parts[2] if len(parts) == 3 else None
        acked = self._acked_payloads.get(mac)
        if payload is not None and acked is not None and payload in acked:
            acked.discard(payload)
            return
        self.dropped[mac] = self.dropped.get(mac, 0) + 1

    def on_power_loss(self, mac: str, lost_queue_writes: int, resurrected: int) -> None:
        """A power loss cut ``lost_queue_writes`` queue writes and undid ``resurrected`` deletes."""
        if lost_queue_writes:
            self.lost_on_power_loss[mac] = self.lost_on_power_loss.get(mac, 0) + lost_queue_writes
            self.dropped[mac] = self.dropped.get(mac, 0) + lost_queue_writes
        if resurrected:
            self.resurrected[mac] = self.resurrected.get(mac, 0) + resurrected

    def on_raw_publish(self, mac: str) -> None:
        """An injected (non-firmware) message was published as ``mac``."""
        self.raw_published[mac] = self.raw_published.get(mac, 0) + 1

    def on_failed_attempt(self, mac: str, slave_id: int) -> None:
        """A Modbus request of ``mac`` to ``slave_id`` got no valid answer."""
        key = (mac, slave_id)
        self.failed_attempts[key] = self.failed_attempts.get(key, 0) + 1

    def register_failure_source(self, mac: str, source: Callable[[], Mapping[str, int]]) -> None:
        """Where ``failed_polls`` of ``mac`` come from (meter code -> failed readings)."""
        self._failure_sources[mac] = source

    # -- views ------------------------------------------------------------------------------------------------
    @property
    def produced(self) -> Mapping[tuple[str, str], list[tuple[datetime, float]]]:
        """(mac, device_code) -> [(fleet time served, value)] of every valid value a meter served."""
        return _ProducedView(self._produced)

    @property
    def publish_times(self) -> Mapping[tuple[str, datetime], float]:
        """(mac, message timestamp) -> wall ``time.time()`` of the message's first publish attempt."""
        return _PublishTimesView(self._publish_times)

    @property
    def failed_polls(self) -> dict[tuple[str, str], int]:
        """(mac, device_code) -> readings that failed every attempt (never published)."""
        out: dict[tuple[str, str], int] = {}
        for mac, source in self._failure_sources.items():
            for code, n in source().items():
                if n:
                    out[(mac, code)] = n
        return out

    def acked_readings(self, mac: str, device_code: str) -> list[tuple[datetime, float]]:
        """(message timestamp, value) of every acknowledged reading of one meter, in PUBACK order."""
        series = self._acked.get((mac, device_code))
        return series.pairs() if series is not None else []

    def acked_order(self, mac: str) -> list[datetime]:
        """Timestamps of ``mac``'s acknowledged telemetry messages in PUBACK order (replays included)."""
        return [_from_us(us) for us in self._ack_order.get(mac, ())]

    def iter_expected_rows(self) -> Iterator[tuple[str, str, datetime]]:
        """Distinct (mac, device_code, timestamp) rows the database must hold, one meter at a time."""
        for (mac, code), series in self._acked.items():
            for us in sorted(set(series.times)):
                yield mac, code, _from_us(us)

    def expected_rows(self) -> set[tuple[str, str, datetime]]:
        """Every (mac, device_code, timestamp) acknowledged by the broker: what the database must hold."""
        return set(self.iter_expected_rows())

    def expected_count(self) -> int:
        """``len(expected_rows())`` without building the set of tuples."""
        return sum(len(set(s.times)) for s in self._acked.values())

    def produced_count(self) -> int:
        """Valid values served by all meters."""
        return sum(len(s.times) for s in self._produced.values())

    def snapshot(self) -> dict[str, Any]:
        """JSON-able summary (totals and per-gateway counts)."""
        macs = sorted(set(self.published) | set(self.acked) | set(self.dropped) | {m for m, _ in self._produced})
        failed = self.failed_polls

        def total(d: Mapping[Any, int]) -> int:
            return sum(d.values())

        per_gw = {
            mac: {
                "produced": sum(len(s.times) for (m, _), s in self._produced.items() if m == mac),
                "published": self.published.get(mac, 0),
                "acked": self.acked.get(mac, 0),
                "dropped": self.dropped.get(mac, 0),
                "lost_on_power_loss": self.lost_on_power_loss.get(mac, 0),
                "resurrected": self.resurrected.get(mac, 0),
                "raw_published": self.raw_published.get(mac, 0),
                "failed_polls": sum(n for (m, _), n in failed.items() if m == mac),
            }
            for mac in macs
        }
        return {
            "gateways": len(macs),
            "produced": self.produced_count(),
            "published": total(self.published),
            "acked": total(self.acked),
            "expected_rows": self.expected_count(),
            "dropped": total(self.dropped),
            "lost_on_power_loss": total(self.lost_on_power_loss),
            "resurrected": total(self.resurrected),
            "raw_published": total(self.raw_published),
            "failed_polls": total(failed),
            "failed_attempts": total(self.failed_attempts),
            "unparseable": total(self.unparseable),
            "per_gateway": per_gw,
        }
