"""Meter models: monotonic counters following profiles, daily temperature cycle, determinism, resets."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import pytest

from simulators.meters import DEFAULT_ORIGIN, EnergyMeter, TemperatureSensor, WaterMeter, meter_from_spec

T0 = DEFAULT_ORIGIN


def steps(start: datetime, days: float, minutes: int = 5):
    return [start + timedelta(minutes=minutes * i) for i in range(int(days * 24 * 60 / minutes) + 1)]


@pytest.mark.parametrize("profile", ["residential", "commercial", "industrial", "flat"])
def test_energy_counter_is_monotonic(profile):
    meter = EnergyMeter("D01", 11, base_kw=1.5, profile=profile, origin=T0 + timedelta(hours=7, minutes=13))
    values = [meter.value_at(t) for t in steps(T0, 9)]
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert values[-1] > values[0]


def test_flat_profile_integrates_exactly_per_day():
    meter = EnergyMeter("D01", 3, base_kw=2.0, profile="flat", variation=0.3)
    for day in (0, 1, 5, 400):
        start = T0 + timedelta(days=day)
        assert meter.value_at(start + timedelta(days=1)) - meter.value_at(start) == pytest.approx(48.0)


def test_weekly_average_is_base_rate():
    meter = EnergyMeter("D01", 5, base_kw=1.0, profile="commercial")
    week = meter.value_at(T0 + timedelta(days=14)) - meter.value_at(T0 + timedelta(days=7))
    assert week == pytest.approx(24 * 7)
    # commercial: Wednesday noon draws far more than Sunday 3am
    wednesday = T0 + timedelta(days=6)  # 2026-01-07 is a Wednesday
    assert wednesday.weekday() == 2
    assert meter.rate_at(wednesday + timedelta(hours=12)) > 3 * meter.rate_at(wednesday + timedelta(days=4, hours=3))


def test_residential_evening_peak():
    meter = EnergyMeter("D01", 1, base_kw=1.0, profile="residential", variation=0.0)
    day = T0 + timedelta(days=3)
    assert meter.rate_at(day + timedelta(hours=19, minutes=30)) > 2 * meter.rate_at(day + timedelta(hours=3))


def test_same_seed_same_values_any_order_other_seed_differs():
    times = steps(T0, 2, minutes=37)
    a = [EnergyMeter("D01", 42, base_kw=1.0).value_at(t) for t in times]
    fresh = EnergyMeter("D01", 42, base_kw=1.0)
    b = [fresh.value_at(t) for t in reversed(times)][::-1]
    assert a == b
    c = [EnergyMeter("D01", 43, base_kw=1.0).value_at(t) for t in times]
    assert a != c


def test_counter_reset_restarts_from_zero():
    meter = EnergyMeter("D01", 9, base_kw=1.0, initial=500.0)
    reset_at = T0 + timedelta(days=2, hours=5)
    before = meter.value_at(reset_at - timedelta(minutes=5))
    meter.add_reset(reset_at)
    assert meter.value_at(reset_at - timedelta(minutes=5)) == before > 500
    assert meter.value_at(reset_at) == 0.0
    after = [meter.value_at(t) for t in steps(reset_at, 1)]
    assert after[-1] > 0 and all(b >= a for a, b in itertools.pairwise(after))
    assert after[-1] < 48  # one day at ~1 kW, not the previous total
    assert meter.resets == (reset_at,)


def test_initial_and_before_origin():
    meter = EnergyMeter("D01", 1, base_kw=1.0, initial=123.45, origin=T0 + timedelta(days=1))
    assert meter.value_at(T0) == 123.45
    assert meter.value_at(T0 + timedelta(days=1)) == 123.45


def test_water_meter_daily_volume():
    meter = WaterMeter("W01", 2, base_m3_per_day=0.6)
    assert meter.unit == "m³" and meter.kind == "water"
    week = meter.value_at(T0 + timedelta(days=7)) - meter.value_at(T0)
    assert week == pytest.approx(0.6 * 7)
    # nobody showers at 3am
    day = T0 + timedelta(days=1)
    assert meter.rate_at(day + timedelta(hours=7)) > 5 * meter.rate_at(day + timedelta(hours=3))


def test_temperature_daily_cycle_noise_and_determinism():
    sensor = TemperatureSensor("T01", 5, mean=24.0, amplitude=4.0, noise_sd=0.3)
    afternoon = [sensor.value_at(T0 + timedelta(days=d, hours=15)) for d in range(20)]
    dawn = [sensor.value_at(T0 + timedelta(days=d, hours=3)) for d in range(20)]
    assert sum(afternoon) / 20 - sum(dawn) / 20 > 5  # 2 × amplitude × cos(π/2 · ...) ≈ 8
    day = [sensor.value_at(t) for t in steps(T0 + timedelta(days=3), 1, minutes=10)]
    assert 20 < sum(day) / len(day) < 28
    assert len({round(v, 6) for v in day}) > 100  # noisy, not a pure sine
    t = T0 + timedelta(days=2, hours=1, seconds=17)
    assert TemperatureSensor("T01", 5).value_at(t) == TemperatureSensor("T01", 5).value_at(t)
    assert TemperatureSensor("T01", 5).value_at(t) != TemperatureSensor("T01", 6).value_at(t)
    assert abs(sensor.value_at(t + timedelta(seconds=1)) - sensor.value_at(t)) < 0.05  # continuous


def test_utc_offset_moves_the_cycle():
    brt = TemperatureSensor("T01", 1, noise_sd=0, day_sd=0, utc_offset_hours=-3)
    utc = TemperatureSensor("T01", 1, noise_sd=0, day_sd=0)
    t = T0 + timedelta(hours=18)  # 15:00 in Brasília
    assert brt.value_at(t) == pytest.approx(28.0)
    assert utc.value_at(t - timedelta(hours=3)) == pytest.approx(28.0)


def test_naive_datetime_is_rejected():
    with pytest.raises(ValueError, match="naive"):
        EnergyMeter("D01", 1).value_at(datetime(2026, 1, 2))


def test_meter_from_spec():
    assert meter_from_spec("energy", "D01", 1, base_kw=2.0, profile="industrial").unit == "kWh"
    assert meter_from_spec("water", "W01", 1, base_m3_per_day=1.0).unit == "m³"
    assert meter_from_spec("temperature", "T01", 1, mean=18).unit == "°C"
    with pytest.raises(ValueError, match="kind='gas'"):
        meter_from_spec("gas", "G01", 1)
    with pytest.raises(ValueError, match="bad parameters"):
        meter_from_spec("energy", "D01", 1, base_watts=3)
    with pytest.raises(ValueError, match="profile='office'"):
        meter_from_spec("energy", "D01", 1, profile="office")
    with pytest.raises(ValueError, match="variation"):
        EnergyMeter("D01", 1, variation=0.7)

