"""Meter models: deterministic pure functions of (seed, time).

No model reads the wall clock: the caller passes a tz-aware ``datetime`` (the bank's clock, real or virtual),
so simulated days can pass in minutes and any poll can be recomputed later by the harness.

* :class:`EnergyMeter` - kWh counter integrating a daily/weekly load profile (monotonic between resets).
* :class:`WaterMeter` - m³ counter, same integrator with a water-use profile.
* :class:`TemperatureSensor` - °C, daily sine + smooth seeded noise.

Counters are computed in closed form: per-15-minute variations are normalised to a zero weighted mean inside
each day, so whole days integrate to a weekday-only total and ``value_at`` costs O(1) at any distance from the
origin (one 96-slot table per day, cached for the latest day).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

DEFAULT_ORIGIN = datetime(2026, 1, 1, tzinfo=UTC)
SLOT_SECONDS = 900  # 15-minute slots, the usual metering interval
SLOTS_PER_DAY = 86400 // SLOT_SECONDS
_MASK64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    """splitmix64 finaliser: a fast, well-spread integer hash (deterministic across runs, unlike hash())."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _unit(seed: int, stream: int, index: int) -> float:
    """Deterministic uniform number in [-1, 1) for (seed, stream, index)."""
    h = _mix64(_mix64(_mix64(seed & _MASK64) ^ stream) ^ (index & _MASK64))
    return (h >> 11) * (2.0 / (1 << 53)) - 1.0


def _epoch_seconds(at: datetime, field: str = "at") -> float:
    if not isinstance(at, datetime):
        raise TypeError(f"{field}={at!r} must be a datetime")
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{field}={at.isoformat()} is naive; meter models need tz-aware datetimes")
    return at.timestamp()


@dataclass(frozen=True)
class LoadProfile:
    """Relative consumption per local hour (24 weights) and per weekday (7 weights, Monday first).

    Weights are normalised so the weekly mean is 1: ``base`` rates are average rates over a week.
    """

    name: str
    hourly: tuple[float, ...]
    weekly: tuple[float, ...] = (1.0,) * 7

    def __post_init__(self) -> None:
        if len(self.hourly) != 24 or any(not math.isfinite(w) or w < 0 for w in self.hourly):
            raise ValueError(f"profile {self.name!r}: hourly must be 24 finite weights >= 0, got {self.hourly!r}")
        if len(self.weekly) != 7 or any(not math.isfinite(w) or w < 0 for w in self.weekly):
            raise ValueError(f"profile {self.name!r}: weekly must be 7 finite weights >= 0, got {self.weekly!r}")
        total = sum(self.hourly) * sum(self.weekly)
        if total <= 0:
            raise ValueError(f"profile {self.name!r}: all weights are zero")
        norm = 24 * 7 / total
        object.__setattr__(self, "hourly", tuple(w * norm for w in self.hourly))
        object.__setattr__(self, "weekly", tuple(float(w) for w in self.weekly))


PROFILES: dict[str, LoadProfile] = {
    "flat": LoadProfile("flat", (1.0,) * 24),
    "residential": LoadProfile(
        "residential",
        (0.4, 0.35, 0.3, 0.3, 0.3, 0.4, 0.7, 1.1, 1.0, 0.8, 0.7, 0.7,
         0.8, 0.7, 0.6, 0.6, 0.7, 0.9, 1.4, 1.8, 1.9, 1.7, 1.2, 0.7),
        (1.0, 1.0, 1.0, 1.0, 1.0, 1.15, 1.2),
    ),
    "commercial": LoadProfile(
        "commercial",
        (0.2, 0.2, 0.2, 0.2, 0.2, 0.3, 0.5, 0.9, 1.4, 1.6, 1.7, 1.7,
         1.6, 1.7, 1.7, 1.6, 1.5, 1.3, 0.9, 0.5, 0.3, 0.25, 0.2, 0.2),
        (1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.3),
    ),
    "industrial": LoadProfile(
        "industrial",
        (0.6, 0.6, 0.6, 0.6, 0.6, 0.8, 1.1, 1.2, 1.2, 1.2, 1.2, 1.1,
         1.1, 1.2, 1.2, 1.2, 1.2, 1.1, 1.0, 0.9, 0.8, 0.7, 0.7, 0.6),
        (1.0, 1.0, 1.0, 1.0, 1.0, 0.8, 0.6),
    ),
    "water": LoadProfile(
        "water",
        (0.1, 0.05, 0.05, 0.05, 0.1, 0.4, 1.6, 2.2, 1.6, 1.0, 0.8, 0.9,
         1.2, 1.0, 0.7, 0.6, 0.7, 1.0, 1.6, 2.0, 1.7, 1.2, 0.6, 0.2),
    ),
}


def get_profile(profile: str | LoadProfile | Sequence[float]) -> LoadProfile:
    """Resolve a profile given by name, as a :class:`LoadProfile` or as 24 hourly weights."""
    if isinstance(profile, LoadProfile):
        return profile
    if isinstance(profile, str):
        try:
            return PROFILES[profile]
        except KeyError:
            raise ValueError(f"profile={profile!r} is unknown; expected one of {sorted(PROFILES)}") from None
    return LoadProfile("custom", tuple(float(w) for w in profile))


@runtime_checkable
class Meter(Protocol):
    """What a bank needs from a meter model."""

    code: str
    kind: str
    unit: str

    def value_at(self, at: datetime) -> float:
        """Value the meter shows at ``at`` (tz-aware)."""
        ...


class ProfileCounter:
    """A monotonic counter whose rate follows a :class:`LoadProfile` with seeded 15-minute variations.

    ``rate_per_hour`` is the weekly-average rate (kW for energy, m³/h for water). ``initial`` is the reading at
    ``origin``; before the origin the counter shows ``initial``. ``add_reset(at)`` makes the counter restart at
    0 from ``at`` on (a meter swap or a firmware reset), which is the only way it ever goes down.
    """

    kind = "counter"
    unit = ""

    def __init__(
        self,
        code: str,
        seed: int,
        rate_per_hour: float,
        profile: str | LoadProfile | Sequence[float] = "flat",
        *,
        variation: float = 0.15,
        initial: float = 0.0,
        origin: datetime = DEFAULT_ORIGIN,
        utc_offset_hours: float = 0.0,
        resets: Sequence[datetime] = (),
    ) -> None:
        if not isinstance(code, str) or not code:
            raise ValueError(f"code={code!r} must be a non-empty string")
        if not isinstance(seed, int):
            raise TypeError(f"seed={seed!r} must be an int")
        if not math.isfinite(rate_per_hour) or rate_per_hour < 0:
            raise ValueError(f"{code}: rate={rate_per_hour!r} must be a finite number >= 0")
        if not 0 <= variation < 0.5:
            raise ValueError(f"{code}: variation={variation!r} must be in [0, 0.5) to keep the rate >= 0")
        if not math.isfinite(initial) or initial < 0:
            raise ValueError(f"{code}: initial={initial!r} must be a finite number >= 0")
        if not -14 <= utc_offset_hours <= 14:
            raise ValueError(f"{code}: utc_offset_hours={utc_offset_hours!r} must be within [-14, 14]")
        self.code = code
        self.seed = seed
        self.rate = float(rate_per_hour)
        self.profile = get_profile(profile)
        self.variation = float(variation)
        self.initial = float(initial)
        self.origin = origin
        self._origin_s = _epoch_seconds(origin, "origin")
        self._offset_s = utc_offset_hours * 3600.0
        self._resets: list[float] = []
        self._reset_bases: list[float] = []
        self._day_cache: tuple[int, list[float]] | None = None
        # consumption of one whole local day per weekday (Monday first), and of a whole week
        day_hours = sum(self.profile.hourly)
        self._day_total = [self.rate * day_hours * w for w in self.profile.weekly]
        self._week_total = sum(self._day_total)
        # the origin's local day and the consumption in it before the origin: constant, computed once
        local0 = self._origin_s + self._offset_s
        day0 = int(local0 // 86400)
        self._origin_day = (day0, self._within_day(day0, local0 - day0 * 86400))
        for at in resets:
            self.add_reset(at)

    # -- integration ------------------------------------------------------------------------------------------
    def _slot_table(self, day: int) -> list[float]:
        """Cumulative consumption at each 15-minute slot boundary of local day ``day`` (97 entries)."""
        if self._day_cache is not None and self._day_cache[0] == day:
            return self._day_cache[1]
        hourly = self.profile.hourly
        weights = [hourly[i // 4] for i in range(SLOTS_PER_DAY)]
        noise = [_unit(self.seed, 1, day * SLOTS_PER_DAY + i) for i in range(SLOTS_PER_DAY)]
        wsum = sum(weights)
        wmean = sum(w * u for w, u in zip(weights, noise, strict=True)) / wsum
        # 1970-01-01 (day 0) was a Thursday: weekday index (day + 3) % 7, Monday = 0
        scale = self.rate * self.profile.weekly[(day + 3) % 7] * SLOT_SECONDS / 3600.0
        table = [0.0]
        acc = 0.0
        for w, u in zip(weights, noise, strict=True):
            acc += scale * w * (1.0 + self.variation * (u - wmean))
            table.append(acc)
        self._day_cache = (day, table)
        return table

    def _days_total(self, day0: int, day1: int) -> float:
        """Consumption of whole local days day0 .. day1-1 (closed form over weekdays)."""
        if day1 <= day0:
            return 0.0
        n = day1 - day0
        weeks, rest = divmod(n, 7)
        total = weeks * self._week_total
        for d in range(day0, day0 + rest):
            total += self._day_total[(d + 3) % 7]
        return total

    def _consumed(self, seconds: float) -> float:
        """Consumption from the origin up to epoch ``seconds`` (0 before the origin)."""
        if seconds <= self._origin_s:
            return 0.0
        day0, origin_partial = self._origin_day
        local1 = seconds + self._offset_s
        day1 = int(local1 // 86400)
        consumed = self._days_total(day0, day1) - origin_partial
        consumed += self._within_day(day1, local1 - day1 * 86400)
        return max(consumed, 0.0)

    def _within_day(self, day: int, second_of_day: float) -> float:
        table = self._slot_table(day)
        slot, frac = divmod(second_of_day / SLOT_SECONDS, 1.0)
        i = min(int(slot), SLOTS_PER_DAY - 1)
        return table[i] + (table[i + 1] - table[i]) * frac

    # -- public -----------------------------------------------------------------------------------------------
    def add_reset(self, at: datetime) -> None:
        """Make the counter restart from 0 at ``at`` (kept sorted; idempotent for the same instant)."""
        s = _epoch_seconds(at, "reset at")
        i = bisect.bisect_left(self._resets, s)
        if i < len(self._resets) and self._resets[i] == s:
            return
        self._resets.insert(i, s)
        self._reset_bases.insert(i, self._consumed(s))

    @property
    def resets(self) -> tuple[datetime, ...]:
        """Reset instants, oldest first."""
        return tuple(datetime.fromtimestamp(s, UTC) for s in self._resets)

    def value_at(self, at: datetime) -> float:
        """Counter reading at ``at``: initial + consumption since origin, or consumption since the last reset."""
        s = _epoch_seconds(at)
        consumed = self._consumed(s)
        i = bisect.bisect_right(self._resets, s)
        if i:
            return max(consumed - self._reset_bases[i - 1], 0.0)
        return self.initial + consumed

    def rate_at(self, at: datetime) -> float:
        """Instantaneous rate (per hour) at ``at`` - e.g. kW for an energy meter."""
        s = _epoch_seconds(at)
        if s < self._origin_s:
            return 0.0
        local = s + self._offset_s
        day = int(local // 86400)
        table = self._slot_table(day)
        i = min(int((local - day * 86400) // SLOT_SECONDS), SLOTS_PER_DAY - 1)
        return (table[i + 1] - table[i]) * 3600.0 / SLOT_SECONDS

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, seed={self.seed}, rate={self.rate}, "
            f"profile={self.profile.name!r})"
        )


class EnergyMeter(ProfileCounter):
    """Active-energy counter in kWh; ``base_kw`` is the weekly-average load."""

    kind = "energy"
    unit = "kWh"

    def __init__(
        self,
        code: str,
        seed: int,
        base_kw: float = 1.0,
        profile: str | LoadProfile | Sequence[float] = "residential",
        **kwargs,
    ) -> None:
        super().__init__(code, seed, base_kw, profile, **kwargs)


class WaterMeter(ProfileCounter):
    """Water volume counter in m³; ``base_m3_per_day`` is the average daily consumption."""

    kind = "water"
    unit = "m³"

    def __init__(
        self,
        code: str,
        seed: int,
        base_m3_per_day: float = 0.5,
        profile: str | LoadProfile | Sequence[float] = "water",
        **kwargs,
    ) -> None:
        super().__init__(code, seed, base_m3_per_day / 24.0, profile, **kwargs)


class TemperatureSensor:
    """Temperature in °C: ``mean + amplitude * cos(2π (hour - peak_hour) / 24)`` plus smooth seeded noise.

    Noise is value noise: seeded normal-ish samples every ``noise_period_s`` seconds, linearly interpolated, so
    the signal is continuous and identical for the same (seed, time). ``day_sd`` adds a per-day offset
    (interpolated between local midnights) so days differ.
    """

    kind = "temperature"
    unit = "°C"

    def __init__(
        self,
        code: str,
        seed: int,
        mean: float = 24.0,
        amplitude: float = 4.0,
        *,
        peak_hour: float = 15.0,
        noise_sd: float = 0.3,
        noise_period_s: float = 600.0,
        day_sd: float = 1.0,
        utc_offset_hours: float = 0.0,
    ) -> None:
        if not isinstance(code, str) or not code:
            raise ValueError(f"code={code!r} must be a non-empty string")
        for name, v in (("mean", mean), ("amplitude", amplitude), ("noise_sd", noise_sd), ("day_sd", day_sd)):
            if not math.isfinite(v):
                raise ValueError(f"{code}: {name}={v!r} must be finite")
        if amplitude < 0 or noise_sd < 0 or day_sd < 0:
            raise ValueError(f"{code}: amplitude, noise_sd and day_sd must be >= 0")
        if not noise_period_s > 0:
            raise ValueError(f"{code}: noise_period_s={noise_period_s!r} must be > 0")
        self.code = code
        self.seed = seed
        self.mean = float(mean)
        self.amplitude = float(amplitude)
        self.peak_hour = float(peak_hour)
        self.noise_sd = float(noise_sd)
        self.noise_period_s = float(noise_period_s)
        self.day_sd = float(day_sd)
        self._offset_s = utc_offset_hours * 3600.0

    def _normal(self, stream: int, index: int) -> float:
        # sum of 3 uniforms on [-1,1): variance 1, close enough to normal and cheap
        return sum(_unit(self.seed, stream, index * 3 + k) for k in range(3))

    def _smooth(self, stream: int, position: float) -> float:
        i = math.floor(position)
        frac = position - i
        a, b = self._normal(stream, i), self._normal(stream, i + 1)
        return a + (b - a) * frac

    def value_at(self, at: datetime) -> float:
        """Temperature at ``at``."""
        local = _epoch_seconds(at) + self._offset_s
        hour = (local % 86400) / 3600.0
        value = self.mean + self.amplitude * math.cos(2 * math.pi * (hour - self.peak_hour) / 24.0)
        if self.day_sd:
            value += self.day_sd * self._smooth(2, local / 86400.0)
        if self.noise_sd:
            value += self.noise_sd * self._smooth(3, local / self.noise_period_s)
        return value

    def __repr__(self) -> str:
        return f"TemperatureSensor(code={self.code!r}, seed={self.seed}, mean={self.mean}, amplitude={self.amplitude})"


METER_KINDS = ("energy", "water", "temperature")


def meter_from_spec(kind: str, code: str, seed: int, **params) -> Meter:
    """Build a meter model from a kind name and keyword parameters (e.g. from a scenario YAML).

    ``energy``: base_kw, profile, variation, initial, origin, utc_offset_hours, resets;
    ``water``: base_m3_per_day, same options; ``temperature``: mean, amplitude, peak_hour, noise_sd, ...
    """
    factories = {"energy": EnergyMeter, "water": WaterMeter, "temperature": TemperatureSensor}
    try:
        factory = factories[kind]
    except KeyError:
        raise ValueError(f"meter kind={kind!r} is unknown; expected one of {METER_KINDS}") from None
    try:
        return factory(code, seed, **params)
    except TypeError as exc:
        raise ValueError(f"meter {code!r} ({kind}): bad parameters {sorted(params)}: {exc}") from None
