"""The physics behind the simulated devices: pure functions of parameters and simulated time.

Everything here is deterministic: randomness comes from :func:`unit_noise`, a hash of
(seed, key, step), so the same seed and time always give the same value, whatever order
or how often a value is asked for. No clocks, no I/O.
"""

from __future__ import annotations

import hashlib
import math
import random
import struct
from dataclasses import dataclass

# ---------------------------------------------------------------- deterministic noise


def unit_noise(seed: int, key: str, step: int) -> float:
    """A reproducible uniform number in [-1, 1) for (seed, key, step)."""
    digest = hashlib.blake2b(f"{seed}|{key}|{step}".encode(), digest_size=8).digest()
    value: int = struct.unpack(">Q", digest)[0]
    return (value / 2**64) * 2.0 - 1.0


def unit_uniform(seed: int, key: str) -> float:
    """A reproducible uniform number in [0, 1) for (seed, key): per-device constants."""
    return (unit_noise(seed, key, 0) + 1.0) / 2.0


# ---------------------------------------------------------------- rainstorm hydrograph


@dataclass(frozen=True, slots=True)
class Hydrograph:
    """Road-water depth at one gauge during a storm.

    Depth is zero until ``start_s + lag_s``, rises smoothly to ``peak_m`` after ``rise_s`` and
    recedes; the shape is a gamma-type unit hydrograph ``(x·e^(1-x))^k`` with x = time since
    onset / rise time, the classic "fast rise, long tail" of urban runoff. ``k`` sets how sharp
    it is (larger: steeper, shorter recession).
    """

    peak_m: float
    start_s: float = 0.0
    lag_s: float = 0.0
    rise_s: float = 1800.0
    k: float = 3.0

    @property
    def onset_s(self) -> float:
        return self.start_s + self.lag_s

    @property
    def peak_time_s(self) -> float:
        return self.onset_s + self.rise_s

    def depth_m(self, t: float) -> float:
        if self.peak_m <= 0 or t <= self.onset_s:
            return 0.0
        x = (t - self.onset_s) / self.rise_s
        return float(self.peak_m * (x * math.exp(1.0 - x)) ** self.k)

    def time_above_s(self, level_m: float) -> tuple[float, float] | None:
        """(first, last) time the depth is above ``level_m``, or None if it never is (bisection)."""
        if level_m >= self.peak_m:
            return None
        tp = self.peak_time_s

        def cross(lo: float, hi: float, rising: bool) -> float:
            for _ in range(80):
                mid = (lo + hi) / 2
                above = self.depth_m(mid) > level_m
                if above == rising:
                    hi = mid
                else:
                    lo = mid
            return (lo + hi) / 2

        end = tp + self.rise_s
        while self.depth_m(end) > level_m:
            end += self.rise_s
        return cross(self.onset_s, tp, True), cross(tp, end, False)


def storm_depth_m(h: Hydrograph, t: float, repeat_s: float | None = None) -> float:
    """The hydrograph, or with ``repeat_s`` a storm every ``repeat_s`` (the last one's tail added)."""
    if repeat_s is None or t < repeat_s:
        return h.depth_m(t)
    phase = t % repeat_s
    return h.depth_m(phase) + h.depth_m(phase + repeat_s)


def gauge_depth_m(  # noqa: PLR0917 - all are physics inputs
    h: Hydrograph, t: float, seed: int, key: str, noise_m: float = 0.002, repeat_s: float | None = None
) -> float:
    """Measured depth: the hydrograph plus sensor noise (radar ±2 mm), never negative.

    Noise changes once per simulated second, so repeated reads inside a second agree.
    """
    true = storm_depth_m(h, t, repeat_s)
    noisy = true + noise_m * unit_noise(seed, key + "/depth", math.floor(t))
    return max(0.0, noisy)


def battery_v(t: float, start_v: float = 3.6, drain_v_per_day: float = 0.0005) -> float:
    """A lithium cell sagging slowly: enough to trend, never enough to alarm in a demo."""
    return start_v - drain_v_per_day * t / 86400.0


# ---------------------------------------------------------------- manhole cover


@dataclass(frozen=True, slots=True)
class CoverLift:
    """The cover is lifted at ``lift_s`` to ``tilt_deg`` and re-seated at ``reseat_s`` (None: stays open)."""

    lift_s: float
    reseat_s: float | None
    tilt_deg: float = 25.0
    azimuth_deg: float = 40.0
    residual_deg: float = 0.3  # a re-seated cover rarely sits exactly as before

    def is_open(self, t: float) -> bool:
        return t >= self.lift_s and (self.reseat_s is None or t < self.reseat_s)


@dataclass(frozen=True, slots=True)
class CoverState:
    tilt_x_deg: float
    tilt_y_deg: float
    background_deg: float
    tilt_deg: float  # relative to the installed background
    cover_open: bool


def cover_state(  # noqa: PLR0917 - all are physics inputs
    background_x_deg: float,
    background_y_deg: float,
    lift: CoverLift | None,
    t: float,
    seed: int,
    key: str,
    noise_deg: float = 0.05,
) -> CoverState:
    """Accelerometer angles of a cover sensor; tilt is the angle between current and background."""
    dx = dy = 0.0
    is_open = False
    if lift is not None and t >= lift.lift_s:
        is_open = lift.is_open(t)
        amount = lift.tilt_deg if is_open else lift.residual_deg
        az = math.radians(lift.azimuth_deg)
        dx, dy = amount * math.cos(az), amount * math.sin(az)
    step = math.floor(t)
    nx = noise_deg * unit_noise(seed, key + "/tx", step)
    ny = noise_deg * unit_noise(seed, key + "/ty", step)
    tx = background_x_deg + dx + nx
    ty = background_y_deg + dy + ny
    rel = math.hypot(tx - background_x_deg, ty - background_y_deg)
    return CoverState(tx, ty, math.hypot(background_x_deg, background_y_deg), rel, is_open)


# ---------------------------------------------------------------- street lamp


@dataclass(frozen=True, slots=True)
class LampElectrical:
    voltage_v: float
    current_a: float
    power_w: float
    power_factor: float

    @property
    def lit(self) -> bool:
        return self.power_w > 5.0


def is_night(local_hour: float, on_hour: float = 18.0, off_hour: float = 6.0) -> bool:
    """The lamp schedule: on from ``on_hour`` to ``off_hour`` local time (wrapping midnight)."""
    h = local_hour % 24.0
    if on_hour > off_hour:
        return h >= on_hour or h < off_hour
    return on_hour <= h < off_hour


def lamp_electrical(  # noqa: PLR0917 - all are physics inputs
    supply_v: float,
    relay_on: bool,
    dim_pct: float,
    rated_w: float,
    lamp_ok: bool,
    min_dim_pct: float = 10.0,
) -> LampElectrical:
    """What the controller's meter sees (it measures after the relay).

    An LED driver's power follows the dim level (never below ``min_dim_pct`` while on) and its
    power factor drops at low load; a burnt-out lamp leaves the driver idling at ~0.5 W.
    No supply: everything zero.
    """
    if supply_v < 50.0:
        return LampElectrical(max(0.0, supply_v), 0.0, 0.0, 0.0)
    if not relay_on:
        return LampElectrical(supply_v, 0.0, 0.0, 0.0)
    if not lamp_ok:
        pf = 0.3
        power = 0.5
        return LampElectrical(supply_v, power / (supply_v * pf), power, pf)
    level = max(min_dim_pct, min(100.0, dim_pct)) / 100.0
    power = rated_w * level
    pf = 0.97 - 0.25 * (1.0 - level)
    return LampElectrical(supply_v, power / (supply_v * pf), power, pf)


def supply_voltage_v(t: float, seed: int, key: str, nominal_v: float = 225.0, noise_v: float = 2.0) -> float:
    """Mains at the lamp: nominal plus a slow wander, shared by every lamp on the same key (circuit)."""
    step = math.floor(t / 10.0)
    return nominal_v + noise_v * unit_noise(seed, key + "/mains", step)


# ---------------------------------------------------------------- weigh-in-motion

#: Gross vehicle weight limits of 交通运输部令2016年第62号 / GB 1589-2016, by axle count (kg).
#: Trucks and the common combination of each axle count; 6 and more axles: 49 t.
GROSS_LIMIT_KG: dict[int, int] = {2: 18000, 3: 25000, 4: 31000, 5: 43000, 6: 49000}

#: Axle spacings (m) of common Chinese truck types: (min, max) per gap, front to back.
_SPACINGS: dict[int, tuple[tuple[float, float], ...]] = {
    2: ((3.8, 5.6),),  # two-axle rigid
    3: ((3.2, 4.6), (1.30, 1.40)),  # rigid with tandem rear
    4: ((1.80, 2.00), (4.2, 5.4), (1.30, 1.40)),  # twin-steer eight-wheeler
    5: ((3.4, 3.9), (6.2, 7.6), (1.30, 1.32), (1.30, 1.32)),  # 2-axle tractor + tridem semitrailer
    6: ((3.0, 3.4), (1.30, 1.40), (6.8, 7.8), (1.30, 1.32), (1.30, 1.32)),  # 3-axle tractor + tridem
}

#: Share of the gross weight on each axle when loaded (steer axles carry less).
_SHARES: dict[int, tuple[float, ...]] = {
    2: (0.36, 0.64),
    3: (0.26, 0.37, 0.37),
    4: (0.19, 0.19, 0.31, 0.31),
    5: (0.16, 0.26, 0.193, 0.193, 0.194),
    6: (0.14, 0.18, 0.18, 0.166, 0.166, 0.168),
}

#: Traffic mix of heavy vehicles at an urban bridge (by axle count); illustrative, configurable.
DEFAULT_AXLE_MIX: dict[int, float] = {2: 0.35, 3: 0.15, 4: 0.15, 5: 0.10, 6: 0.25}


@dataclass(frozen=True, slots=True)
class Vehicle:
    """One WIM record, in the units of the events payload."""

    seq: int  # 1-based index of the vehicle in the scenario stream
    t: float  # simulated time it crossed the scale
    lane: int
    speed_kmh: float
    axle_kg: tuple[int, ...]
    spacing_m: tuple[float, ...]

    @property
    def axles(self) -> int:
        return len(self.axle_kg)

    @property
    def gross_kg(self) -> int:
        return sum(self.axle_kg)

    @property
    def limit_kg(self) -> int:
        return gross_limit_kg(self.axles)

    @property
    def overloaded(self) -> bool:
        return self.gross_kg > self.limit_kg

    def body(self) -> dict[str, object]:
        return {
            "lane": self.lane,
            "speed_kmh": round(self.speed_kmh, 1),
            "axles": self.axles,
            "gross_kg": self.gross_kg,
            "axle_kg": list(self.axle_kg),
            "spacing_m": [round(s, 2) for s in self.spacing_m],
        }


def gross_limit_kg(axles: int) -> int:
    if axles < 2:
        raise ValueError(f"a truck has at least 2 axles, got {axles}")
    return GROSS_LIMIT_KG[min(axles, 6)]


def make_vehicle(  # noqa: PLR0917 - all are physics inputs
    rng: random.Random,
    seq: int,
    t: float,
    lane: int,
    overload_fraction: float,
    axle_mix: dict[int, float] | None = None,
) -> Vehicle:
    """One truck: axle count from the mix, gross weight legal (45–98 % of the limit) or overloaded
    (103–160 %), split over the axles by typical shares with ±8 % scatter, 10 kg resolution."""
    mix = axle_mix or DEFAULT_AXLE_MIX
    counts = sorted(mix)
    axles = rng.choices(counts, weights=[mix[c] for c in counts])[0]
    limit = gross_limit_kg(axles)
    overloaded = rng.random() < overload_fraction
    gross = limit * (rng.uniform(1.03, 1.60) if overloaded else rng.uniform(0.45, 0.98))
    shares = [s * rng.uniform(0.92, 1.08) for s in _SHARES[min(axles, 6)]]
    total = sum(shares)
    axle_kg = [round(gross * s / total / 10.0) * 10 for s in shares]
    spacing = tuple(round(rng.uniform(lo, hi), 2) for lo, hi in _SPACINGS[min(axles, 6)])
    speed = round(rng.uniform(35.0, 75.0), 1)
    return Vehicle(seq, t, lane, speed, tuple(axle_kg), spacing)


@dataclass(frozen=True, slots=True)
class TruckStream:
    """Poisson arrivals of trucks on one WIM lane, reproducible by seed."""

    seed: int
    key: str
    lane: int = 1
    mean_headway_s: float = 30.0
    overload_fraction: float = 0.15
    start_s: float = 0.0


class TruckStreamCache:
    """Vehicles of a stream generated lazily in order and kept (the stream is a pure function of seed)."""

    def __init__(self, stream: TruckStream) -> None:
        self.stream = stream
        self._rng = random.Random(f"{stream.seed}|{stream.key}|wim")
        self._vehicles: list[Vehicle] = []
        self._next_t = stream.start_s + self._rng.expovariate(1.0 / stream.mean_headway_s)

    def _extend_to(self, t: float) -> None:
        s = self.stream
        while self._next_t <= t:
            seq = len(self._vehicles) + 1
            self._vehicles.append(make_vehicle(self._rng, seq, self._next_t, s.lane, s.overload_fraction))
            self._next_t += max(1.0, self._rng.expovariate(1.0 / s.mean_headway_s))

    def until(self, t: float) -> list[Vehicle]:
        """Every vehicle that crossed at or before ``t``."""
        self._extend_to(t)
        n = self.count_until(t)
        return self._vehicles[:n]

    def count_until(self, t: float) -> int:
        self._extend_to(t)
        lo, hi = 0, len(self._vehicles)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._vehicles[mid].t <= t:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def vehicle(self, seq: int) -> Vehicle:
        """The ``seq``-th vehicle (1-based), generating as far as needed."""
        while len(self._vehicles) < seq:
            self._extend_to(self._next_t)
        return self._vehicles[seq - 1]
