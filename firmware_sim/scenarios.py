"""Scenarios: what every simulated device reads at simulated time ``t``, as profile field values.

Pure and reproducible: a :class:`Scenario` is built from a :class:`SimConfig` (and the Unix
time of ``t = 0``) and answers ``values(device_id, t)`` with the engineering value of each
field of the device's gateway profile (``gateway.profiles``), the same names the gateway
decodes. Tests elsewhere (rule engine, gateway) use it to compute expected readings without
sockets; :meth:`Scenario.metrics` gives what the gateway publishes (catalogue metric names,
derived metrics included).

Lamps and WIM scales have state that commands and reboots change (relay, dim level, record
counter, run hours); that state is a :class:`History` of timed writes and boots, so values
stay a function of (config, history, t) and energy is an exact integral, not a running sum.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from contracts.metrics import METRIC_UNITS
from contracts.reading import Event, Reading
from firmware_sim.config import (
    DeviceSpec,
    GaugeScenario,
    LampScenario,
    ManholeScenario,
    RangesScenario,
    SimConfig,
    WimScenario,
)
from firmware_sim.physics import (
    CoverLift,
    Hydrograph,
    TruckStream,
    TruckStreamCache,
    Vehicle,
    battery_v,
    cover_state,
    gauge_depth_m,
    is_night,
    lamp_electrical,
    supply_voltage_v,
    unit_noise,
    unit_uniform,
)
from gateway import profiles
from gateway.poller import derived_values
from gateway.profiles.wim import WimRecord
from gateway.registers import DataType, Field, Profile

#: Unix time of t = 0 when neither the config nor the caller gives one (2025-12-01 00:00 UTC)
DEFAULT_START_UNIX = 1_764_547_200.0

LAMP_STATUS_FAILURE = 1 << 0


@dataclass
class History:
    """What happened to one device: timed writes to its fields, and reboots (sorted by time)."""

    writes: list[tuple[float, str, float]] = field(default_factory=list)
    boots: list[float] = field(default_factory=list)

    def last_boot(self, t: float) -> float | None:
        last = None
        for b in self.boots:
            if b <= t:
                last = b
        return last

    def last_write(self, name: str, t: float, since: float | None = None) -> tuple[float, float] | None:
        """(time, value) of the last write of ``name`` at or before ``t`` (and at/after ``since``)."""
        found = None
        for tw, n, v in self.writes:
            if n == name and tw <= t and (since is None or tw >= since):
                found = (tw, v)
        return found

    def change_times(self) -> list[float]:
        return sorted({tw for tw, _n, _v in self.writes} | set(self.boots))


EMPTY_HISTORY = History()


class Scenario:
    """The scripted district: per-device physics from one config, reproducible by seed."""

    def __init__(self, config: SimConfig, start_unix: float | None = None) -> None:
        self.config = config
        if start_unix is None:
            start_unix = config.clock.start_unix if config.clock.start_unix is not None else DEFAULT_START_UNIX
        self.start_unix = start_unix
        #: sim time -> device (wall) Unix time; the server installs its clock's mapping here
        self.unix_of: Callable[[float], float] | None = None
        self._devices = {d.id: d for d in config.devices}
        self._trucks: dict[str, TruckStreamCache] = {}

    # ------------------------------------------------------------ lookup

    def device(self, device_id: str) -> DeviceSpec:
        spec = self._devices.get(device_id)
        if spec is None:
            from firmware_sim.errors import UnknownDevice

            raise UnknownDevice(f"no simulated device {device_id!r}")
        return spec

    def profile(self, device_id: str) -> Profile:
        return profiles.get(self.device(device_id).profile)

    def seed(self, device_id: str) -> int:
        spec = self.device(device_id)
        return spec.seed if spec.seed is not None else self.config.seed

    def unix(self, t: float) -> float:
        """Device (wall) time of simulated time t: WIM record times and the lamp schedule use it."""
        return self.unix_of(t) if self.unix_of is not None else self.start_unix + t

    def _phase(self, t: float) -> float:
        """Time inside the scripted cycle (``repeat_s``), or t itself when the script runs once."""
        r = self.config.repeat_s
        return t % r if r is not None and t >= 0 else t

    def local_hour(self, t: float) -> float:
        """Local time of day (hours) at simulated time t; drives the lamp schedule."""
        clock = self.config.clock
        if clock.start_local_hour is not None:
            return (clock.start_local_hour + t / 3600.0) % 24.0
        return (self.unix(t) / 3600.0 + clock.tz_offset_h) % 24.0

    # ------------------------------------------------------------ public API

    def values(self, device_id: str, t: float, history: History | None = None) -> dict[str, float]:
        """Engineering value of every field of the device's profile at time t (record ring excluded)."""
        spec = self.device(device_id)
        h = history or EMPTY_HISTORY
        sc = spec.scenario
        profile = profiles.get(spec.profile)
        if isinstance(sc, GaugeScenario):
            raw = self._gauge(spec, sc, t)
        elif isinstance(sc, ManholeScenario):
            raw = self._manhole(spec, sc, t)
        elif isinstance(sc, LampScenario):
            raw = self._lamp(spec, sc, t, h)
        elif isinstance(sc, WimScenario):
            raw = self._wim(spec, sc, t, h)
        else:
            raw = self._ranges(spec, sc, profile, t)
        boot = h.last_boot(t)
        raw.setdefault("uptime", float(math.floor(t - (boot if boot is not None else min(t, 0.0)))))
        raw = to_profile_fields(profile, raw)
        for name, value in spec.registers.items():
            raw.setdefault(name, value)
        names = {f.name for f in profile.fields}
        out = {k: v for k, v in raw.items() if k in names}
        self._apply_writes(spec, profile, out, t, h)
        return out

    def metrics(self, device_id: str, t: float, history: History | None = None) -> dict[str, float]:
        """What the gateway would publish: catalogue metric -> value (profile-derived metrics included).

        Values are quantised through the profile's register scale, as a real read would be.
        """
        from gateway.registers import decode_value, encode_image

        profile = self.profile(device_id)
        spec = self.device(device_id)
        values = self.values(device_id, t, history)
        numbers = {k: v for k, v in values.items() if profile.field(k).dtype is not DataType.STRING}
        image = encode_image(profile, numbers, spec.word_order)  # registers shared by a word and its bits
        decoded: dict[str, float] = {}
        for name in numbers:
            f = profile.field(name)
            words = [image[f.kind][a] for a in range(f.address, f.end)]
            decoded[name] = decode_value(f, words, profile.word_order_of(f, spec.word_order))
        out = {f.metric: decoded[f.name] for f in profile.fields if f.metric is not None and f.name in decoded}
        out.update(derived_values(profile, decoded))
        return out

    def readings(self, device_id: str, t: float, history: History | None = None) -> list[Reading]:
        """The readings a gateway polling at simulated time t would produce (sample time = device wall time)."""
        ts = self.unix(t)
        return [
            Reading(device_id, metric, ts, value, METRIC_UNITS[metric])
            for metric, value in sorted(self.metrics(device_id, t, history).items())
        ]

    def vehicle_events(self, device_id: str, t0: float, t1: float, history: History | None = None) -> list[Event]:
        """The ``vehicle`` events of trucks crossing in (t0, t1], as the gateway builds them from the
        scale's records (id ``"<record no>-<time ms>"``, record numbers restarting after a reboot)."""
        h = history or EMPTY_HISTORY
        stream = self._stream(device_id)
        out: list[Event] = []
        for v in stream.until(t1):
            if v.t <= t0:
                continue
            rec = self._record(v, v.seq - self._wim_base(stream, v.t, h))
            out.append(Event(device_id, "vehicle", f"{rec.record_no}-{round(rec.ts * 1000)}", rec.ts, rec.body()))
        return out

    def _record(self, v: Vehicle, record_no: int) -> WimRecord:
        return WimRecord(
            record_no=record_no,
            ts=round(self.unix(v.t), 3),
            lane=v.lane,
            speed_kmh=v.speed_kmh,
            gross_kg=float(v.gross_kg),
            axle_kg=tuple(float(a) for a in v.axle_kg),
            spacing_m=v.spacing_m,
            vehicle_class=v.axles,
        )

    def vehicles(self, device_id: str, t: float) -> list[Vehicle]:
        """Every truck that crossed the WIM lane of ``device_id`` up to t (reboots do not change traffic)."""
        return self._stream(device_id).until(t)

    def wim_records(self, device_id: str, t: float, history: History | None = None) -> list[WimRecord]:
        """The records the scale holds in its ring at t, oldest first (numbered from 1 since the last boot)."""
        spec = self.device(device_id)
        if not isinstance(spec.scenario, WimScenario):
            return []
        h = history or EMPTY_HISTORY
        stream = self._stream(device_id)
        base = self._wim_base(stream, t, h)
        count = stream.count_until(t) - base
        layout = profiles.get(spec.profile).records
        slots = layout.slots if layout is not None else 1
        offset = spec.scenario.counter_at_start if h.last_boot(t) is None else 0
        first = max(1, count - slots + 1)
        return [self._record(stream.vehicle(base + n), n + offset) for n in range(first, count + 1)]

    # ------------------------------------------------------------ per kind

    def _gauge(self, spec: DeviceSpec, sc: GaugeScenario, t: float) -> dict[str, float]:
        seed = self.seed(spec.id)
        start = sc.storm_start_s if sc.storm_start_s is not None else self.config.storm.start_s
        hydro = Hydrograph(sc.peak_m, start, sc.lag_s, sc.rise_s, sc.shape_k)
        # the sensor hangs at the physical height; the depth register is what the firmware computes
        # from its configured install height and datum, so a wrong configuration shows up in depth only
        install = float(spec.registers.get("install_height", sc.install_height_m))
        datum = float(spec.registers.get("datum_offset", 0.0))
        depth = gauge_depth_m(hydro, t, seed, spec.id, sc.noise_m, self.config.repeat_s)
        depth = min(depth, sc.install_height_m - 0.06)
        distance = round(sc.install_height_m - depth, 3)
        temp = sc.temperature_c + 0.5 * unit_noise(seed, spec.id + "/temp", math.floor(t / 60.0))
        return {
            "depth": round(install - distance - datum, 3),
            "distance": distance,
            "install_height": install,
            "datum_offset": datum,
            "battery": round(battery_v(t, sc.battery_v), 3),
            "status": 0.0,
            "temperature": round(temp, 1),
            "slave_address": float(spec.unit),
            "baud_div100": float(self.config.bus(spec.bus).baudrate // 100),
        }

    def hydrograph(self, device_id: str) -> Hydrograph:
        """The noiseless storm curve of a gauge (for tests and expected values)."""
        sc = self.device(device_id).scenario
        if not isinstance(sc, GaugeScenario):
            raise ValueError(f"{device_id} is not a water gauge")
        start = sc.storm_start_s if sc.storm_start_s is not None else self.config.storm.start_s
        return Hydrograph(sc.peak_m, start, sc.lag_s, sc.rise_s, sc.shape_k)

    def _background(self, spec: DeviceSpec, sc: ManholeScenario) -> tuple[float, float]:
        seed = self.seed(spec.id)

        def seeded(axis: str) -> float:
            sign = 1.0 if unit_uniform(seed, f"{spec.id}/s{axis}") < 0.5 else -1.0
            return sign * (0.7 + 0.7 * unit_uniform(seed, f"{spec.id}/bg{axis}"))

        bx = sc.background_x_deg if sc.background_x_deg is not None else seeded("x")
        by = sc.background_y_deg if sc.background_y_deg is not None else seeded("y")
        return bx, by

    def _manhole(self, spec: DeviceSpec, sc: ManholeScenario, t: float) -> dict[str, float]:
        seed = self.seed(spec.id)
        bx, by = self._background(spec, sc)
        lift = None
        if sc.lift is not None:
            lift = CoverLift(sc.lift.lift_s, sc.lift.reseat_s, sc.lift.tilt_deg, sc.lift.azimuth_deg)
        # a repeated script replays the lift; the noise still follows real time
        st = cover_state(bx, by, lift, self._phase(t), seed, spec.id, sc.noise_deg)
        p = self._phase(t)
        wet = any(w.start_s <= p and (w.end_s is None or p < w.end_s) for w in sc.water_under)
        return {
            "tilt_x": round(st.tilt_x_deg, 2),
            "tilt_y": round(st.tilt_y_deg, 2),
            "angle": round(math.hypot(st.tilt_x_deg, st.tilt_y_deg), 2),
            "background_angle": round(st.background_deg, 2),
            "battery": round(battery_v(t, sc.battery_v), 3),
            "status": 0.0,
            "tilt_threshold": 10.0,
            "report_interval": 300.0,
            "cover_open": 1.0 if st.cover_open else 0.0,
            "water_under": 1.0 if wet else 0.0,
        }

    # ---- lamps

    def _supply_v(self, spec: DeviceSpec, sc: LampScenario, t: float) -> float:
        p = self._phase(t)
        for o in self.config.outages:
            if o.circuit == spec.circuit and o.start_s <= p and (o.end_s is None or p < o.end_s):
                return 0.0
        return supply_voltage_v(t, self.seed(spec.id), f"circuit/{spec.circuit}", sc.nominal_v)

    def _schedule_on(self, sc: LampScenario, t: float) -> bool:
        if sc.schedule == "always_on" or (sc.fault == "day_burning" and t >= sc.fault_from_s):
            return True
        return is_night(self.local_hour(t), sc.on_hour, sc.off_hour)

    def _schedule_transitions(self, sc: LampScenario, t0: float, t1: float) -> list[float]:
        """Times in (t0, t1] where the lamp's schedule switches."""
        out: list[float] = []
        if sc.fault == "day_burning" and sc.fault_from_s > t0 and sc.fault_from_s <= t1:
            out.append(sc.fault_from_s)
        if sc.schedule == "always_on":
            return out
        # local time runs at `rate` hours per simulated hour (1 unless the server maps sim time to wall time)
        rate = 1.0 if self.config.clock.start_local_hour is not None else self.unix(t0 + 1.0) - self.unix(t0)
        period = 86400.0 / rate
        h0 = self.local_hour(t0)
        for hour in (sc.on_hour, sc.off_hour):
            tk = t0 + ((hour - h0) % 24.0) * 3600.0 / rate
            if tk <= t0:
                tk += period
            while tk <= t1:
                out.append(tk)
                tk += period
        return sorted(out)

    def _relay(self, spec: DeviceSpec, sc: LampScenario, t: float, h: History) -> bool:
        boot = h.last_boot(t)
        cmd = h.last_write("relay", t, since=boot)
        if cmd is not None and not self._schedule_transitions(sc, cmd[0], t):
            return bool(cmd[1])
        return self._schedule_on(sc, t)

    def _dim(self, spec: DeviceSpec, sc: LampScenario, t: float, h: History) -> float:
        boot = h.last_boot(t)
        cmd = h.last_write("dim_level", t, since=boot)
        if cmd is not None:
            return cmd[1]
        default = h.last_write("default_dim", t)
        if default is not None:
            return default[1]
        return float(spec.registers.get("default_dim", sc.default_dim_pct))

    def _lamp_ok(self, sc: LampScenario, t: float) -> bool:
        return not (sc.fault == "burnt_out" and t >= sc.fault_from_s)

    def _lamp_power_w(self, spec: DeviceSpec, sc: LampScenario, t: float, h: History) -> tuple[float, bool]:
        supply = 0.0 if self._supply_v(spec, sc, t) == 0.0 else sc.nominal_v
        relay = self._relay(spec, sc, t, h)
        el = lamp_electrical(supply, relay, self._dim(spec, sc, t, h), sc.rated_w, self._lamp_ok(sc, t))
        return el.power_w, relay and supply > 0.0

    def _lamp_integrals(self, spec: DeviceSpec, sc: LampScenario, t: float, h: History) -> tuple[float, float]:
        """(energy kWh since t=0, burning hours since the last boot), exact over piecewise-constant segments."""
        if t <= 0:
            return 0.0, 0.0
        cuts = {0.0, t, sc.fault_from_s, *self._schedule_transitions(sc, 0.0, t)}
        repeats = 1 if self.config.repeat_s is None else math.ceil(t / self.config.repeat_s) + 1
        period = self.config.repeat_s or 0.0
        for o in self.config.outages:
            if o.circuit == spec.circuit:
                for k in range(repeats):
                    cuts.update({o.start_s + k * period, (o.end_s if o.end_s is not None else t) + k * period})
        cuts.update(h.change_times())
        points = sorted(c for c in cuts if 0.0 <= c <= t)
        boot = h.last_boot(t)
        energy_wh = 0.0
        on_s = 0.0
        for a, b in itertools.pairwise(points):
            if b <= a:
                continue
            power, burning = self._lamp_power_w(spec, sc, (a + b) / 2.0, h)
            energy_wh += power * (b - a) / 3600.0
            if burning and (boot is None or a >= boot):
                on_s += b - a
        return energy_wh / 1000.0, on_s / 3600.0

    def _lamp(self, spec: DeviceSpec, sc: LampScenario, t: float, h: History) -> dict[str, float]:
        seed = self.seed(spec.id)
        supply = self._supply_v(spec, sc, t)
        relay = self._relay(spec, sc, t, h)
        dim = self._dim(spec, sc, t, h)
        ok = self._lamp_ok(sc, t)
        el = lamp_electrical(supply, relay, dim, sc.rated_w, ok)
        e0 = sc.energy_kwh_at_start
        if e0 is None:
            e0 = round(200.0 + 1800.0 * unit_uniform(seed, spec.id + "/energy"), 1)
        rh0 = sc.run_hours_at_start
        if rh0 is None:
            rh0 = float(round(e0 / (sc.rated_w / 1000.0)))
        energy, burned_h = self._lamp_integrals(spec, sc, t, h)
        run_hours = burned_h if h.last_boot(t) is not None else rh0 + burned_h
        status = LAMP_STATUS_FAILURE if (relay and supply > 0.0 and not ok) else 0
        warm = 8.0 if el.lit else 0.0
        temp = sc.temperature_c + warm + 0.5 * unit_noise(seed, spec.id + "/temp", math.floor(t / 60))
        return {
            "voltage": round(el.voltage_v, 2),
            "current": round(el.current_a, 4),
            "power": round(el.power_w, 2),
            "power_factor": round(el.power_factor, 3),
            "energy": round(e0 + energy, 4),
            "run_hours": float(math.floor(run_hours)),
            "status": float(status),
            "temperature": round(temp, 1),
            "dim_level": float(round(dim)),
            "default_dim": float(spec.registers.get("default_dim", sc.default_dim_pct)),
            "relay": 1.0 if relay else 0.0,
        }

    def lamp_schedule_on(self, device_id: str, t: float) -> bool:
        """Whether the lamp's own schedule (or a day-burning fault) wants it on at t."""
        sc = self.device(device_id).scenario
        if not isinstance(sc, LampScenario):
            raise ValueError(f"{device_id} is not a lamp")
        return self._schedule_on(sc, t)

    # ---- WIM

    def _stream(self, device_id: str) -> TruckStreamCache:
        cache = self._trucks.get(device_id)
        if cache is None:
            spec = self.device(device_id)
            sc = spec.scenario
            if not isinstance(sc, WimScenario):
                raise ValueError(f"{device_id} is not a WIM scale")
            stream = TruckStream(
                self.seed(device_id), device_id, sc.lane, sc.mean_headway_s, sc.overload_fraction, sc.start_s
            )
            cache = self._trucks[device_id] = TruckStreamCache(stream)
        return cache

    def _wim_base(self, stream: TruckStreamCache, t: float, h: History) -> int:
        boot = h.last_boot(t)
        return stream.count_until(boot) if boot is not None else 0

    def _wim(self, spec: DeviceSpec, sc: WimScenario, t: float, h: History) -> dict[str, float]:
        stream = self._stream(spec.id)
        count = stream.count_until(t) - self._wim_base(stream, t, h)
        if h.last_boot(t) is None:
            count += sc.counter_at_start
        return {"record_count": float(count), "status": 0.0, "device_time": float(math.floor(self.unix(t)))}

    # ---- any profile

    def _ranges(self, spec: DeviceSpec, sc: RangesScenario, profile: Profile, t: float) -> dict[str, float]:
        """Each field swings inside its valid range (or a modest default) with a seeded phase."""
        seed = self.seed(spec.id)
        out: dict[str, float] = {}
        for f in profile.fields:
            if f.dtype is DataType.STRING or f.flags or f.enum or f.writable:
                out[f.name] = float(f.enum[0][0]) if f.enum else 0.0
                continue
            if f.dtype is DataType.BIT:
                out[f.name] = 0.0
                continue
            lo, hi = _span(f)
            phase = 2 * math.pi * unit_uniform(seed, f"{spec.id}/{f.name}")
            x = lo + (hi - lo) * (0.5 + 0.4 * math.sin(2 * math.pi * t / sc.period_s + phase))
            out[f.name] = x if f.dtype.is_float else round(round((x - f.offset) / f.scale) * f.scale + f.offset, 9)
        return out

    # ---- writes

    def _apply_writes(self, spec: DeviceSpec, profile: Profile, out: dict[str, float], t: float, h: History) -> None:
        """Configuration fields keep the last value written (lamp relay/dim are already modelled)."""
        if not h.writes:
            return
        modelled = isinstance(spec.scenario, LampScenario)
        for name in list(out):
            if modelled and physics_name(profile, profile.field(name)) in ("relay", "dim_level"):
                continue
            w = h.last_write(name, t)
            if w is not None:
                out[name] = w[1]
        if spec.kind == "water_gauge" and {"depth", "distance", "install_height"} <= out.keys():
            out["depth"] = round(out["install_height"] - out["distance"] - out.get("datum_offset", 0.0), 3)


def _span(f: Field) -> tuple[float, float]:
    """The range a field's simulated values sweep: its valid range, inside what its type can hold."""
    if f.dtype.is_float:
        lo_t, hi_t = -1e6, 1e6
    else:
        r0, r1 = f.dtype.raw_range
        lo_t, hi_t = sorted((r0 * f.scale + f.offset, r1 * f.scale + f.offset))
    lo = f.valid_min if f.valid_min is not None else max(lo_t, 0.0)
    hi = f.valid_max if f.valid_max is not None else min(hi_t, lo + 100.0 * abs(f.scale))
    return max(lo, lo_t), min(hi, hi_t)


def physics_name(profile: Profile, f: Field) -> str:
    """The physics models speak the library profile's field names; a site field maps by its metric."""
    if f.metric is None or profile.kind not in profiles.names():
        return f.name
    library = profiles.get(profile.kind)
    return next((g.name for g in library.fields if g.metric == f.metric), f.name)


def to_profile_fields(profile: Profile, raw: Mapping[str, float]) -> dict[str, float]:
    """Physics values (library field names) as values of ``profile``'s fields (same name, else same metric)."""
    if profile.name in profiles.names():
        return dict(raw)
    out: dict[str, float] = {}
    for f in profile.fields:
        key = f.name if f.name in raw else physics_name(profile, f)
        if key in raw:
            out[f.name] = raw[key]
    return out


def scenario_values(config: SimConfig, device_id: str, t: float, start_unix: float | None = None) -> dict[str, float]:
    """Field values of one device at time t (no commands, no reboots): the pure entry point for tests."""
    return Scenario(config, start_unix).values(device_id, t)


def expected_metrics(config: SimConfig, device_id: str, t: float, start_unix: float | None = None) -> dict[str, float]:
    """What the gateway publishes for one device at time t (metric -> value), for rule/gateway tests."""
    return Scenario(config, start_unix).metrics(device_id, t)


def overload_fraction(vehicles: Sequence[Vehicle]) -> float:
    return sum(1 for v in vehicles if v.overloaded) / len(vehicles) if vehicles else 0.0


def by_threshold(depths: Mapping[str, float], thresholds: Sequence[float]) -> dict[float, list[str]]:
    """Devices whose peak exceeds each threshold (a small helper for scenario checks)."""
    return {th: sorted(d for d, peak in depths.items() if peak > th) for th in thresholds}
