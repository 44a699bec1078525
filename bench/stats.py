"""Small measurement helpers: percentiles, payload timestamps, per-process CPU."""

from __future__ import annotations

import calendar
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import psutil

_TS_KEY = b'"timestamp":"'


def payload_timestamp(payload: bytes) -> bytes:
    """The `timestamp` text of a v1 payload (cheap: a find and a slice, no JSON parse)."""
    i = payload.find(_TS_KEY) + len(_TS_KEY)
    return payload[i : payload.find(b'"', i)]


class TimestampParser:
    """ISO-8601 UTC text ('...T..:..:..[.ffffff]Z') -> epoch seconds (float); whole seconds cached."""

    def __init__(self) -> None:
        self._cache: dict[bytes, int] = {}

    def __call__(self, text: bytes | str) -> float:
        raw = text.encode() if isinstance(text, str) else text
        head = raw[:19]
        sec = self._cache.get(head)
        if sec is None:
            sec = calendar.timegm(time.strptime(head.decode(), "%Y-%m-%dT%H:%M:%S"))
            self._cache[head] = sec
        frac = raw[20:-1] if len(raw) > 20 and raw[19:20] == b"." else b""
        return sec + (int(frac.ljust(6, b"0")) / 1e6 if frac else 0.0)


def percentiles(values: Sequence[float], qs: Iterable[float] = (0.5, 0.95, 0.99)) -> dict[str, float | None]:
    """Nearest-rank percentiles keyed 'p50', 'p95', ... plus 'max'; None for an empty sample."""
    ordered = sorted(values)
    out: dict[str, float | None] = {}
    for q in qs:
        out[f"p{round(q * 100)}"] = ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None
    out["max"] = ordered[-1] if ordered else None
    return out


@dataclass
class CpuMeter:
    """CPU seconds of named process groups between `start()` and `stop()`, as % of one core."""

    groups: dict[str, list[int]] = field(default_factory=dict)  # name -> root pids (children included)
    _t0: float = 0.0
    _c0: dict[str, dict[int, float]] = field(default_factory=dict)
    result: dict[str, float] = field(default_factory=dict)
    threads: dict[str, float] = field(default_factory=dict)  # this process, by thread name
    _th0: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def _sample(pids: list[int]) -> dict[int, float]:
        out: dict[int, float] = {}
        for pid in pids:
            try:
                root = psutil.Process(pid)
                procs = [root, *root.children(recursive=True)] if pid != os.getpid() else [root]
            except psutil.Error:
                continue
            for proc in procs:
                try:
                    t = proc.cpu_times()
                    out[proc.pid] = t.user + t.system
                except psutil.Error:
                    continue
        return out

    @staticmethod
    def _threads() -> dict[str, float]:
        """CPU seconds of this process's threads, by thread name (where the consumer's time goes)."""
        import threading

        names = {t.native_id: t.name for t in threading.enumerate()}
        out: dict[str, float] = {}
        for th in psutil.Process().threads():
            name = names.get(th.id, "other")
            out[name] = out.get(name, 0.0) + th.user_time + th.system_time
        return out

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._c0 = {name: self._sample(pids) for name, pids in self.groups.items()}
        self._th0 = self._threads()

    def stop(self) -> dict[str, float]:
        wall = max(1e-9, time.monotonic() - self._t0)
        for name, pids in self.groups.items():
            now = self._sample(pids)
            before = self._c0.get(name, {})
            # Processes born during the window count from zero; ones that died are lost (rare: backends).
            used = sum(now[p] - before.get(p, 0.0) for p in now)
            self.result[name] = round(100.0 * used / wall, 1)
        th1 = self._threads()
        self.threads = {n: round(100.0 * (v - self._th0.get(n, 0.0)) / wall, 1) for n, v in th1.items()}
        return self.result
