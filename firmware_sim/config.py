"""The simulator's config (``configs/sim/*.yaml``): clock, storm, outages, buses, devices.

Validated once at load (:func:`load_sim_config`); every device names a gateway profile and a
scenario role of the same device kind, so a config cannot ask a lamp to report water depth.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from contracts.config import StrictModel, parse_yaml, validate_config
from contracts.ids import is_valid_id
from gateway import profiles
from gateway.registers import WordOrder

EXCEPTION_CODES = frozenset({1, 2, 3, 4, 5, 6, 8, 10, 11})
COMPONENT_ID = re.compile(r"\d{16}")


class ClockSettings(StrictModel):
    """Simulated time ``t`` runs ``speed`` times faster than the wall clock (0: frozen, move with ``advance``)."""

    speed: float = Field(default=1.0, ge=0.0, le=10000.0)
    start_unix: float | None = None  # Unix time at t = 0; None: the wall clock when the simulator starts
    start_local_hour: float | None = Field(default=None, ge=0.0, lt=24.0)  # None: from start_unix and tz
    tz_offset_h: float = Field(default=8.0, ge=-12.0, le=14.0)  # Asia/Shanghai


class StormSettings(StrictModel):
    """The district's rainstorm: gauges start rising at ``start_s`` plus their own lag."""

    start_s: float = 60.0


class OutageSpec(StrictModel):
    """Every lamp of ``circuit`` loses supply from ``start_s`` to ``end_s`` (None: until the end)."""

    circuit: str
    start_s: float
    end_s: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> OutageSpec:
        if self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError(f"end_s {self.end_s} must be after start_s {self.start_s}")
        return self


class FaultSpec(StrictModel):
    """Faults of one device. Per-request faults (no answer, exception, CRC, split, garbage, delay)
    hit a request with probability ``rate``; ``absent`` always silences the slave."""

    absent: bool = False  # the slave is gone from the bus (no answer at all)
    no_answer: bool = False
    exception: int | None = None  # answer every request with this exception code
    crc_corrupt: bool = False  # RTU: wrong CRC; TCP: wrong MBAP length
    split_gap_ms: float | None = Field(default=None, gt=0.0)  # send the reply in pieces this far apart
    split_pieces: int = Field(default=2, ge=2, le=16)
    garbage_prefix: bool = False  # stray bytes before the reply (bad cabling)
    delay_ms: float = Field(default=0.0, ge=0.0)
    rate: float = Field(default=1.0, ge=0.0, le=1.0)
    stuck: bool = False  # registers frozen at the moment the fault began
    raw_garbage: bool = False  # every read register is 0xFFFF (lost echo / dead ADC)
    spike_rate: float = Field(default=0.0, ge=0.0, le=1.0)  # chance per read that a value spikes
    spike_field: str | None = None  # None: the kind's main field (depth, angle, current)
    spike_magnitude: float = 1.0  # added to the value, in the field's unit

    @field_validator("exception")
    @classmethod
    def _known_code(cls, value: int | None) -> int | None:
        if value is not None and value not in EXCEPTION_CODES:
            raise ValueError(f"exception code must be one of {sorted(EXCEPTION_CODES)}")
        return value


class FaultWindow(FaultSpec):
    """Faults active in simulated time [start_s, end_s); ``reboot_at_end``: the slave comes back rebooted."""

    start_s: float
    end_s: float | None = None
    reboot_at_end: bool = False


class GaugeScenario(StrictModel):
    role: Literal["water_gauge"]
    peak_m: float = Field(ge=0.0, le=3.0)
    lag_s: float = Field(default=0.0, ge=0.0)
    rise_s: float = Field(default=1800.0, gt=0.0)
    shape_k: float = Field(default=3.0, gt=0.0)
    storm_start_s: float | None = None  # None: the district storm's start
    install_height_m: float = Field(default=3.0, gt=0.1, le=20.0)
    noise_m: float = Field(default=0.002, ge=0.0)
    battery_v: float = 3.6
    temperature_c: float = 24.0


class CoverLiftSpec(StrictModel):
    lift_s: float
    reseat_s: float | None = None
    tilt_deg: float = Field(default=25.0, gt=0.0, le=180.0)
    azimuth_deg: float = 40.0


class WindowSpec(StrictModel):
    start_s: float
    end_s: float | None = None


class ManholeScenario(StrictModel):
    role: Literal["manhole"]
    background_x_deg: float | None = None  # None: 0.7–1.4° from the seed
    background_y_deg: float | None = None
    lift: CoverLiftSpec | None = None
    water_under: list[WindowSpec] = Field(default_factory=list)
    noise_deg: float = Field(default=0.05, ge=0.0)
    battery_v: float = 3.6


class LampScenario(StrictModel):
    role: Literal["lamp"]
    rated_w: float = Field(default=120.0, gt=0.0)
    fault: Literal["none", "burnt_out", "day_burning"] = "none"
    fault_from_s: float = 0.0
    schedule: Literal["dusk_to_dawn", "always_on"] = "dusk_to_dawn"
    on_hour: float = Field(default=18.0, ge=0.0, lt=24.0)
    off_hour: float = Field(default=6.0, ge=0.0, lt=24.0)
    default_dim_pct: float = Field(default=100.0, ge=0.0, le=100.0)
    nominal_v: float = 225.0
    energy_kwh_at_start: float | None = Field(default=None, ge=0.0)  # None: from the seed
    run_hours_at_start: float | None = Field(default=None, ge=0.0)
    temperature_c: float = 31.0


class WimScenario(StrictModel):
    role: Literal["wim"]
    lane: int = Field(default=1, ge=1, le=16)
    mean_headway_s: float = Field(default=30.0, gt=0.0)
    overload_fraction: float = Field(default=0.15, ge=0.0, le=1.0)
    start_s: float = 0.0
    # the record counter's value at t = 0 (a counter that survived earlier boots); after a reboot the
    # scale counts from its profile's start_at again. Near 65535 it exercises a 16-bit wrap-around.
    counter_at_start: int = Field(default=0, ge=0, le=0xFFFFFFFF)


class RangesScenario(StrictModel):
    """Any profile, no physics: each field swings slowly inside its declared valid range (seeded phase)."""

    role: Literal["ranges"]
    period_s: float = Field(default=600.0, gt=0.0)


ScenarioSpec = Annotated[GaugeScenario | ManholeScenario | LampScenario | WimScenario | RangesScenario,
                         Field(discriminator="role")]


class BusSpec(StrictModel):
    """One simulated bus: a TCP listener (unit ids behind one port) or one pty pair (one RS-485 line)."""

    id: str
    gateway: str
    transport: Literal["tcp", "rtu"]
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)  # 0: any free port
    baudrate: int = 9600
    # Linux ptys refuse PARENB (tcsetattr EINVAL, seen on 6.x), so a gateway can open a simulated
    # bus only as 8N1/8N2: the default here is N although real RS-485 lines default to 8E1
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    link: str | None = None  # rtu: also make this symlink to the pty slave (a stable path)
    # rtu: answer only after the time the exchange takes on a real line at this baud rate
    # (request + reply characters, t3.5, plus turnaround_ms); a pty itself carries bytes instantly
    wire_time: bool = False
    turnaround_ms: float = Field(default=0.0, ge=0.0, le=10000.0)  # slave think time (rtu and tcp)

    @field_validator("id", "gateway")
    @classmethod
    def _id(cls, value: str) -> str:
        if not is_valid_id(value):
            raise ValueError("must match [a-z0-9][a-z0-9-]{0,62}")
        return value


class DeviceSpec(StrictModel):
    id: str
    profile: str
    bus: str
    unit: int = Field(ge=1, le=247)
    word_order: WordOrder | None = None  # None: the profile's default
    seed: int | None = None  # None: the config's seed
    lat: float | None = Field(default=None, ge=-90.0, le=90.0)
    lon: float | None = Field(default=None, ge=-180.0, le=180.0)
    grid: str | None = None
    component_id: str | None = None
    owner: str | None = None
    circuit: str | None = None
    interval_s: float | None = Field(default=None, gt=0.0)
    scenario: ScenarioSpec
    registers: dict[str, float] = Field(default_factory=dict)  # initial values of writable/configuration fields
    texts: dict[str, str] = Field(default_factory=dict)  # string fields (serial number...); default: the device id
    faults: FaultSpec = FaultSpec()
    fault_windows: list[FaultWindow] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not is_valid_id(value):
            raise ValueError("must match [a-z0-9][a-z0-9-]{0,62}")
        return value

    @field_validator("profile")
    @classmethod
    def _profile(cls, value: str) -> str:
        """A library profile name or a profile file path (relative: to the sim config file)."""
        return profiles.check_ref(value)

    @field_validator("component_id")
    @classmethod
    def _component(cls, value: str | None) -> str | None:
        if value is not None and not COMPONENT_ID.fullmatch(value):
            raise ValueError("a component id is 16 digits: county(6) + major(2) + minor(2) + serial(6)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DeviceSpec:
        profile = profiles.get(self.profile)
        if self.scenario.role not in (profile.kind, "ranges"):
            raise ValueError(
                f"scenario role {self.scenario.role!r} does not fit profile {self.profile} ({profile.kind}); "
                f"use role {profile.kind!r} (physics) or 'ranges'"
            )
        names = {f.name for f in profile.fields}
        for name in self.registers:
            if name not in names:
                raise ValueError(f"registers: profile {self.profile} has no field {name!r}")
        for spec in (self.faults, *self.fault_windows):
            if spec.spike_field is not None and spec.spike_field not in names:
                raise ValueError(f"spike_field: profile {self.profile} has no field {spec.spike_field!r}")
        if isinstance(self.scenario, LampScenario) and self.circuit is None:
            raise ValueError("a lamp needs its circuit")
        return self

    @property
    def kind(self) -> str:
        return profiles.get(self.profile).kind


class SimConfig(StrictModel):
    seed: int = 1
    clock: ClockSettings = ClockSettings()
    storm: StormSettings = StormSettings()
    outages: list[OutageSpec] = Field(default_factory=list)
    # the scripted events (storm, cover lifts, water under covers, circuit outages) happen again every
    # repeat_s simulated seconds, so a long-running demo keeps producing alarms; None: once
    repeat_s: float | None = Field(default=None, gt=0.0)
    buses: list[BusSpec]
    devices: list[DeviceSpec]

    @model_validator(mode="after")
    def _references(self) -> SimConfig:
        bus_ids = [b.id for b in self.buses]
        if len(set(bus_ids)) != len(bus_ids):
            raise ValueError("bus ids must be unique")
        ports = [b.port for b in self.buses if b.transport == "tcp" and b.port]
        if len(set(ports)) != len(ports):
            raise ValueError("two TCP buses on the same port")
        seen: set[str] = set()
        units: set[tuple[str, int]] = set()
        for d in self.devices:
            if d.id in seen:
                raise ValueError(f"device id {d.id} twice")
            seen.add(d.id)
            if d.bus not in bus_ids:
                raise ValueError(f"device {d.id}: unknown bus {d.bus!r}")
            if (d.bus, d.unit) in units:
                raise ValueError(f"device {d.id}: unit {d.unit} already used on bus {d.bus}")
            units.add((d.bus, d.unit))
        circuits = {d.circuit for d in self.devices if d.kind == "lamp"}
        for o in self.outages:
            if o.circuit not in circuits:
                raise ValueError(f"outage: no lamp is on circuit {o.circuit!r}")
            if self.repeat_s is not None and (o.end_s is None or o.end_s > self.repeat_s):
                raise ValueError(f"outage on {o.circuit}: a repeated script needs end_s <= repeat_s {self.repeat_s}")
        if self.repeat_s is not None:
            for d in self.devices:
                sc = d.scenario
                if isinstance(sc, ManholeScenario) and sc.lift is not None:
                    end = sc.lift.reseat_s
                    if end is None or end > self.repeat_s:
                        raise ValueError(f"device {d.id}: a repeated script needs lift.reseat_s <= repeat_s")
        return self

    def device(self, device_id: str) -> DeviceSpec:
        for d in self.devices:
            if d.id == device_id:
                return d
        from firmware_sim.errors import UnknownDevice

        raise UnknownDevice(f"no simulated device {device_id!r}")

    def bus(self, bus_id: str) -> BusSpec:
        for b in self.buses:
            if b.id == bus_id:
                return b
        raise KeyError(bus_id)

    def gateways(self) -> list[str]:
        out: list[str] = []
        for b in self.buses:
            if b.gateway not in out:
                out.append(b.gateway)
        return out


def parse_sim_config(text: str, source: str = "<sim config>") -> SimConfig:
    from gateway.config import resolve_profile_paths

    data = parse_yaml(text, source)
    if isinstance(data, dict):  # site profile files named relative to the config file
        data = resolve_profile_paths(data, source)
    return validate_config(data, SimConfig, source)


def load_sim_config(path: str | Path) -> SimConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        from contracts.errors import ConfigError

        raise ConfigError(str(p), "", str(p), f"cannot read: {exc.strerror}") from exc
    return parse_sim_config(text, str(p))
