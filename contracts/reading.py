"""Readings, events and device descriptions: the values the whole pipeline carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


class Quality(IntEnum):
    """Quality of a sample; 0 is good. Rules never raise threshold alarms from bad samples."""

    GOOD = 0
    OUT_OF_RANGE = 1  # garbage or outside the physical range (0xFFFF sentinel, NaN register)
    SENSOR_FAULT = 2  # the device's own status bits report a fault
    TIME_SUSPECT = 3  # the gateway clock was not trustworthy when sampled

    @property
    def is_good(self) -> bool:
        return self is Quality.GOOD


@dataclass(frozen=True, slots=True)
class Reading:
    """One sample. Identity is (device, metric, ts); ts is the sample time, never re-stamped."""

    device: str
    metric: str
    ts: float  # Unix seconds, UTC, fixed when the device was read
    value: float
    unit: str = ""
    quality: Quality = Quality.GOOD


@dataclass(frozen=True, slots=True)
class Event:
    """A discrete record with its own identity (device, kind, id): a WIM vehicle, a cover interrupt."""

    device: str
    kind: str
    id: str
    ts: float
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the cloud learns about a device from the gateway's birth message."""

    id: str
    profile: str
    kind: str  # water_gauge | manhole | lamp | wim
    lat: float | None = None
    lon: float | None = None
    grid: str | None = None  # grid code (单元网格)
    component_id: str | None = None  # 16-digit 部件 id: county(6)+major(2)+minor(2)+serial(6)
    owner: str | None = None  # owner unit (属主) id
    circuit: str | None = None  # lamp circuit, for correlation
    tags: tuple[str, ...] = ()
    interval_s: float | None = None  # expected reporting interval, for staleness

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "profile": self.profile, "kind": self.kind}
        for name in ("lat", "lon", "grid", "component_id", "owner", "circuit", "interval_s"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.tags:
            out["tags"] = list(self.tags)
        return out
