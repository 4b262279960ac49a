"""Physics of the simulated devices: hydrograph shape, cover lift, lamp electrics, truck stream."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_sim.physics import (
    GROSS_LIMIT_KG,
    CoverLift,
    Hydrograph,
    TruckStream,
    TruckStreamCache,
    cover_state,
    gauge_depth_m,
    gross_limit_kg,
    is_night,
    lamp_electrical,
    make_vehicle,
    unit_noise,
)


def test_hydrograph_shape_dry_rise_peak_recession() -> None:
    h = Hydrograph(peak_m=0.32, start_s=100, lag_s=200, rise_s=900)
    assert h.depth_m(0) == 0.0 and h.depth_m(300) == 0.0  # dry road until onset
    ts = [300 + i * 10.0 for i in range(0, 91)]
    rising = [h.depth_m(t) for t in ts]
    assert all(b > a for a, b in itertools.pairwise(rising))  # strictly rising to the peak
    assert h.depth_m(h.peak_time_s) == pytest.approx(0.32)
    falling = [h.depth_m(h.peak_time_s + i * 60.0) for i in range(0, 200)]
    assert all(b < a for a, b in itertools.pairwise(falling))  # recession
    assert max(falling) == pytest.approx(0.32)
    assert h.depth_m(h.peak_time_s + 20 * 900) < 0.01  # dries out again
    # recession is slower than the rise (long urban-runoff tail)
    first, last = h.time_above_s(0.16) or (0.0, 0.0)
    assert h.peak_time_s - first < last - h.peak_time_s


@given(
    peak=st.floats(0.01, 2.0),
    lag=st.floats(0, 3600),
    rise=st.floats(60, 7200),
    t=st.floats(-1000, 50000),
)
def test_hydrograph_bounded(peak: float, lag: float, rise: float, t: float) -> None:
    h = Hydrograph(peak, 0.0, lag, rise)
    assert 0.0 <= h.depth_m(t) <= peak + 1e-12


def test_threshold_crossings() -> None:
    h = Hydrograph(0.3, 0, 0, 600)
    assert h.time_above_s(0.40) is None
    first, last = h.time_above_s(0.25) or (0.0, 0.0)
    assert 0 < first < 600 < last
    assert h.depth_m(first) == pytest.approx(0.25, abs=1e-6)


def test_noise_is_deterministic_and_bounded() -> None:
    assert unit_noise(1, "wl-1", 5) == unit_noise(1, "wl-1", 5)
    assert unit_noise(1, "wl-1", 5) != unit_noise(2, "wl-1", 5)
    values = [unit_noise(7, "k", i) for i in range(2000)]
    assert all(-1.0 <= v < 1.0 for v in values)
    assert abs(sum(values) / len(values)) < 0.05
    h = Hydrograph(0.0)
    assert all(gauge_depth_m(h, t, 1, "wl") >= 0.0 for t in range(100))  # a dry gauge never reads negative


def test_cover_lift_and_reseat() -> None:
    lift = CoverLift(lift_s=100, reseat_s=400, tilt_deg=25)
    before = cover_state(1.0, -0.8, lift, 50, 1, "mh")
    during = cover_state(1.0, -0.8, lift, 200, 1, "mh")
    after = cover_state(1.0, -0.8, lift, 500, 1, "mh")
    assert 1.0 < before.background_deg < 2.0
    assert before.tilt_deg < 0.2 and not before.cover_open
    assert during.tilt_deg > 10.0 and during.cover_open
    assert after.tilt_deg < 1.0 and not after.cover_open
    flipped = cover_state(1.0, -0.8, CoverLift(0, None, tilt_deg=120), 10, 1, "mh")
    assert flipped.tilt_deg > 90.0


def test_lamp_electrics() -> None:
    full = lamp_electrical(225.0, True, 100.0, 120.0, True)
    half = lamp_electrical(225.0, True, 50.0, 120.0, True)
    off = lamp_electrical(225.0, False, 100.0, 120.0, True)
    burnt = lamp_electrical(225.0, True, 100.0, 120.0, False)
    outage = lamp_electrical(0.0, True, 100.0, 120.0, True)
    assert full.power_w == pytest.approx(120.0) and full.lit
    assert half.power_w == pytest.approx(60.0) and half.power_factor < full.power_factor
    assert full.current_a == pytest.approx(120.0 / (225.0 * full.power_factor))
    assert off.current_a == 0.0 and off.power_w == 0.0 and off.voltage_v == 225.0
    assert burnt.current_a < 0.02 and not burnt.lit
    assert outage.voltage_v == 0.0 and outage.current_a == 0.0


def test_schedule() -> None:
    assert is_night(20.0) and is_night(3.0) and not is_night(12.0)
    assert is_night(18.0) and not is_night(6.0)


def test_vehicle_limits_are_gb1589_2016() -> None:
    assert GROSS_LIMIT_KG == {2: 18000, 3: 25000, 4: 31000, 5: 43000, 6: 49000}
    assert gross_limit_kg(7) == 49000
    with pytest.raises(ValueError):
        gross_limit_kg(1)


def test_vehicles_are_plausible() -> None:
    rng = random.Random(3)
    for seq in range(1, 500):
        v = make_vehicle(rng, seq, float(seq), 1, 0.2)
        assert 2 <= v.axles <= 6
        assert len(v.spacing_m) == v.axles - 1
        assert all(1.2 <= s <= 8.0 for s in v.spacing_m)
        assert all(a % 10 == 0 and 1000 <= a <= 20000 for a in v.axle_kg)
        assert v.gross_kg == sum(v.axle_kg)
        assert 35.0 <= v.speed_kmh <= 75.0
        assert v.overloaded == (v.gross_kg > GROSS_LIMIT_KG[v.axles])
        assert v.axle_kg[0] < max(v.axle_kg[1:])  # the steer axle is the lighter one
        body = v.body()
        assert body["axles"] == v.axles and body["gross_kg"] == v.gross_kg


def test_overload_fraction_and_determinism() -> None:
    stream = TruckStream(seed=11, key="wim-0001", lane=2, mean_headway_s=10.0, overload_fraction=0.2)
    vehicles = TruckStreamCache(stream).until(30000.0)
    assert 2500 < len(vehicles) < 3500  # Poisson, mean 3000
    frac = sum(v.overloaded for v in vehicles) / len(vehicles)
    assert 0.17 < frac < 0.23
    assert {v.axles for v in vehicles} == {2, 3, 4, 5, 6}
    assert all(v.lane == 2 for v in vehicles)
    again = TruckStreamCache(stream)
    assert again.until(30000.0) == vehicles  # same seed, same trucks
    other = TruckStreamCache(TruckStream(seed=12, key="wim-0001"))
    assert other.until(3000.0) != vehicles[: len(other.until(3000.0))]


def test_truck_stream_counting_is_consistent() -> None:
    cache = TruckStreamCache(TruckStream(seed=1, key="w", mean_headway_s=5.0))
    assert cache.vehicle(10).seq == 10
    n = cache.count_until(100.0)
    assert [v.seq for v in cache.until(100.0)] == list(range(1, n + 1))
    assert all(v.t <= 100.0 for v in cache.until(100.0))
    assert cache.vehicle(n + 1).t > 100.0
