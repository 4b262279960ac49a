"""The ``buses`` and ``devices`` sections of a gateway config file.

One YAML per gateway. Top-level sections: ``gateway``, ``mqtt``, ``outbox``, ``publish``,
``storm`` (validated by the edge agent) and ``buses``, ``devices`` (validated here). The
gateway tools (``citywatch plan``/``probe``) validate only their two sections strictly and
refuse unknown top-level keys, so a typo such as ``device:`` is an error, not a silently
empty gateway. The edge agent's model embeds :class:`BusConfig`/:class:`DeviceConfig` and
calls :func:`check_field_sections` for the cross-references.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field as PydField
from pydantic import field_validator, model_validator

from contracts.config import StrictModel, parse_yaml, validate_config
from contracts.errors import ConfigError
from contracts.ids import is_valid_id
from contracts.reading import DeviceInfo
from gateway.profile_schema import DeadbandSpec
from gateway.registers import MAX_READ_REGISTERS, Deadband, WordOrder

GATEWAY_SECTIONS = ("gateway", "mqtt", "outbox", "publish", "storm", "buses", "devices")
FIELD_SECTIONS = ("buses", "devices")

COMPONENT_ID = re.compile(r"\d{16}")


def _check_id(value: str, what: str) -> str:
    if not is_valid_id(value):
        raise ValueError(f"{what} must match [a-z0-9][a-z0-9-]{{0,62}}")
    return value


class BusConfig(StrictModel):
    """One Modbus bus: a TCP endpoint (one connection shared by its unit ids) or an RS-485 port."""

    id: str
    type: Literal["tcp", "rtu"]
    # tcp
    host: str | None = None
    port: int = PydField(502, ge=1, le=65535)
    # rtu
    serial: str | None = None  # /dev/ttyUSB0, /dev/serial/by-id/...
    baud: int = PydField(9600, ge=300, le=921600)
    parity: Literal["N", "E", "O"] = "E"  # the spec's default is even parity
    stopbits: Literal[1, 2] = 1
    # both
    timeout_ms: int = PydField(1000, ge=10, le=60000)
    retries: int = PydField(1, ge=0, le=5)
    inter_frame_gap_ms: float = PydField(0.0, ge=0.0, le=1000.0)  # extra silence after each transaction
    turnaround_ms: float = PydField(5.0, ge=0.0, le=10000.0)  # expected slave reply latency (planner only)
    reopen_backoff_max_s: float = PydField(30.0, gt=0.0, le=3600.0)

    @field_validator("id")
    @classmethod
    def _id_ok(cls, v: str) -> str:
        return _check_id(v, "bus id")

    @model_validator(mode="after")
    def _transport_ok(self) -> BusConfig:
        if self.type == "tcp":
            if not self.host:
                raise ValueError("a tcp bus needs host")
            if self.serial is not None:
                raise ValueError("serial is for rtu buses; a tcp bus takes host/port")
        else:
            if not self.serial:
                raise ValueError("an rtu bus needs serial (the port path)")
            if self.host is not None:
                raise ValueError("host is for tcp buses; an rtu bus takes serial/baud/parity")
        return self

    @property
    def endpoint(self) -> str:
        if self.type == "tcp":
            return f"{self.host}:{self.port}"
        return f"{self.serial}@{self.baud}{self.parity}{self.stopbits}"


class DeviceConfig(StrictModel):
    """One field device on a bus, with the metadata the cloud learns from the birth message."""

    id: str
    profile: str
    bus: str
    unit_id: int = PydField(ge=0, le=255)
    poll_interval_s: float = PydField(10.0, gt=0.0, le=86400.0)
    storm_poll_interval_s: float | None = PydField(None, gt=0.0, le=86400.0)
    word_order: WordOrder | None = None  # overrides the profile's order for every 32-bit field
    max_block_registers: int | None = PydField(None, ge=1, le=MAX_READ_REGISTERS)
    max_gap_registers: int | None = PydField(None, ge=0, le=MAX_READ_REGISTERS)
    timeout_ms: int | None = PydField(None, ge=10, le=60000)  # None: the bus's
    retries: int | None = PydField(None, ge=0, le=5)
    quarantine_after: int = PydField(3, ge=1, le=100)  # consecutive failed polls
    quarantine_max_s: float = PydField(300.0, gt=0.0, le=86400.0)
    # report by exception: metric -> deadband, adding to / overriding the profile's (gateway.deadband)
    deadbands: dict[str, DeadbandSpec] = PydField(default_factory=dict)
    # metadata
    lat: float | None = PydField(None, ge=-90.0, le=90.0)
    lon: float | None = PydField(None, ge=-180.0, le=180.0)
    grid: str | None = None
    component_id: str | None = None
    owner: str | None = None
    circuit: str | None = None
    tags: tuple[str, ...] = ()

    @field_validator("id")
    @classmethod
    def _id_ok(cls, v: str) -> str:
        return _check_id(v, "device id")

    @field_validator("profile")
    @classmethod
    def _profile_ok(cls, v: str) -> str:
        """A library profile name or a profile file (relative paths: to the gateway config file)."""
        from gateway import profiles

        return profiles.check_ref(v)

    @field_validator("component_id")
    @classmethod
    def _component_ok(cls, v: str | None) -> str | None:
        if v is not None and not COMPONENT_ID.fullmatch(v):
            raise ValueError("component_id must be 16 digits: county(6) + major(2) + minor(2) + serial(6)")
        return v

    @model_validator(mode="after")
    def _deadbands_ok(self) -> DeviceConfig:
        from gateway import profiles

        if self.deadbands:
            p = profiles.get(self.profile)
            published = {f.metric for f in p.fields if f.metric} | {d.metric for d in p.derived}
            for metric in self.deadbands:
                if metric not in published:
                    raise ValueError(f"deadbands: profile {p.name} does not publish {metric!r}")
        return self

    def deadband_overrides(self) -> dict[str, Deadband]:
        return {m: spec.build() for m, spec in self.deadbands.items()}

    @model_validator(mode="after")
    def _storm_ok(self) -> DeviceConfig:
        if self.storm_poll_interval_s is not None and self.storm_poll_interval_s > self.poll_interval_s:
            raise ValueError("storm_poll_interval_s must not be longer than poll_interval_s")
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon, or neither")
        for x in (self.lat, self.lon):
            if x is not None and not math.isfinite(x):
                raise ValueError("lat/lon must be finite")
        return self

    @property
    def kind(self) -> str:
        from gateway import profiles

        return profiles.get(self.profile).kind

    def to_device_info(self) -> DeviceInfo:
        from gateway import profiles

        profile = profiles.get(self.profile)
        return DeviceInfo(
            id=self.id,
            profile=profile.name,
            kind=profile.kind,
            lat=self.lat,
            lon=self.lon,
            grid=self.grid,
            component_id=self.component_id,
            owner=self.owner,
            circuit=self.circuit,
            tags=self.tags,
            interval_s=self.poll_interval_s,
        )


def check_field_sections(buses: tuple[BusConfig, ...], devices: tuple[DeviceConfig, ...]) -> None:
    """Cross-references: unique ids, every device on a known bus, unit ids unique per bus.

    Raises ValueError (inside a pydantic validator this becomes a ConfigError with the path).
    """
    seen_bus: set[str] = set()
    for b in buses:
        if b.id in seen_bus:
            raise ValueError(f"duplicate bus id {b.id!r}")
        seen_bus.add(b.id)
    by_id = {b.id: b for b in buses}
    seen_dev: set[str] = set()
    units: dict[tuple[str, int], str] = {}
    for d in devices:
        if d.id in seen_dev:
            raise ValueError(f"duplicate device id {d.id!r}")
        seen_dev.add(d.id)
        bus = by_id.get(d.bus)
        if bus is None:
            raise ValueError(f"device {d.id}: bus {d.bus!r} is not defined in buses")
        if bus.type == "rtu" and not 1 <= d.unit_id <= 247:
            raise ValueError(f"device {d.id}: RTU unit_id must be 1..247 (0 is broadcast), got {d.unit_id}")
        other = units.get((d.bus, d.unit_id))
        if other is not None:
            raise ValueError(f"devices {other} and {d.id} share unit_id {d.unit_id} on bus {d.bus}")
        units[(d.bus, d.unit_id)] = d.id


class FieldConfig(StrictModel):
    """``buses`` + ``devices`` of a gateway file."""

    buses: tuple[BusConfig, ...] = ()
    devices: tuple[DeviceConfig, ...] = ()

    @model_validator(mode="after")
    def _refs_ok(self) -> FieldConfig:
        check_field_sections(self.buses, self.devices)
        return self

    def bus(self, bus_id: str) -> BusConfig:
        for b in self.buses:
            if b.id == bus_id:
                return b
        raise KeyError(bus_id)

    def devices_on(self, bus_id: str) -> tuple[DeviceConfig, ...]:
        return tuple(d for d in self.devices if d.bus == bus_id)


def parse_field_config(text: str, source: str) -> FieldConfig:
    """Validate the ``buses``/``devices`` sections of a gateway file's text."""
    data: Any = parse_yaml(text, source)
    if not isinstance(data, dict):
        raise ConfigError(source, "", data, "a gateway config must be a mapping of sections")
    for key in data:
        if key not in GATEWAY_SECTIONS:
            raise ConfigError(source, str(key), data[key], f"unknown section; known: {', '.join(GATEWAY_SECTIONS)}")
    sub = {k: data[k] for k in FIELD_SECTIONS if data.get(k) is not None}
    return validate_config(resolve_profile_paths(sub, source), FieldConfig, source)


def resolve_profile_paths(sections: dict[str, Any], source: str) -> dict[str, Any]:
    """Relative profile file paths of ``devices`` made relative to the config file's directory."""
    from gateway import profiles

    devices = sections.get("devices")
    if not isinstance(devices, list) or not Path(source).parent.is_dir():
        return sections
    base = Path(source).parent
    out = []
    for dev in devices:
        ref = dev.get("profile") if isinstance(dev, dict) else None
        if isinstance(ref, str) and profiles.is_path(ref) and not Path(ref).is_absolute():
            dev = {**dev, "profile": str((base / ref).resolve())}  # noqa: PLW2901 - a copy, not the input
        out.append(dev)
    return {**sections, "devices": out}


def load_field_config(path: str | Path) -> FieldConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), "", str(p), f"cannot read: {exc.strerror or exc}") from exc
    return parse_field_config(text, str(p))
