"""Astronomical switching per lamp circuit: on at dusk + offset, off at dawn − offset, night dimming.

Pure: a circuit's night is a function of where its lamps stand (the mean of their
coordinates), the local date and its configuration. Sunrise and sunset come from
:mod:`rules.sun` (NOAA). A *night* is named by the local date of its evening: the night of
03-02 runs from sunset on 03-02 to sunrise on 03-03. Night dimming steps are local clock
times ("23:00" → 50 %); a step falls in the night when that clock time comes between the
switch-on and the switch-off, so "23:00" lands on the evening date and "05:00" on the next
morning. Where the sun does not set or rise (polar day/night) a night has no events.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator, model_validator

from contracts.config import MqttSettings, StrictModel
from contracts.payloads import Command
from rules.sun import local_sun_times

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class DimStep(StrictModel):
    """From local clock time ``at`` (HH:MM) until the next step or switch-off, burn at ``level_pct``."""

    at: str
    level_pct: float = Field(ge=0, le=100)

    @field_validator("at")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _HHMM.fullmatch(value):
            raise ValueError("a step time is HH:MM, 00:00-23:59")
        return value

    @property
    def minutes(self) -> int:
        h, m = self.at.split(":")
        return int(h) * 60 + int(m)


class CircuitSchedule(StrictModel):
    on_after_dusk_min: float = Field(default=0.0, ge=-120, le=120)  # switch on at sunset + this
    off_before_dawn_min: float = Field(default=0.0, ge=-120, le=120)  # switch off at sunrise − this
    night_steps: tuple[DimStep, ...] = ()  # e.g. 23:00 → 50 %, 05:00 → 100 %

    @model_validator(mode="after")
    def _distinct_steps(self) -> CircuitSchedule:
        times = [s.at for s in self.night_steps]
        if len(times) != len(set(times)):
            raise ValueError("two night steps at the same time")
        return self


class LightingSettings(StrictModel):
    """The ``lighting`` section of the cloud config (run by ``citywatch cases``; see lighting.scheduler)."""

    enabled: bool = False
    timezone: str = "Asia/Shanghai"  # the clock night steps are written in
    tick_s: float = Field(default=30.0, gt=0, le=3600)
    catch_up_s: float = Field(default=900.0, ge=0, le=86400)  # a step missed by up to this (a restart) is still sent
    client_id: str = "citywatch-lighting"
    circuits: dict[str, CircuitSchedule] = Field(default_factory=dict)
    mqtt: MqttSettings | None = None  # overrides the shared ``mqtt`` section

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("circuits")
    @classmethod
    def _ids(cls, value: dict[str, CircuitSchedule]) -> dict[str, CircuitSchedule]:
        for cid in value:
            if not re.fullmatch(_ID, cid):
                raise ValueError(f"circuit id {cid!r} must match {_ID}")
        return value


Action = Literal["on", "off", "dim"]
#: the edge agent's command for each switching action (edge_agent.commands)
COMMAND_ACTIONS: dict[str, str] = {"on": "lamp_on", "off": "lamp_off", "dim": "dim"}


@dataclass(frozen=True, slots=True)
class Step:
    """One switching event of a circuit."""

    t: float  # Unix seconds
    circuit: str
    action: Action
    level_pct: float | None = None  # for dim

    @property
    def label(self) -> str:
        if self.action == "dim":
            return f"调光 dim {self.level_pct:g} %"
        return "开 on" if self.action == "on" else "关 off"


def position(coords: Iterable[tuple[float | None, float | None]]) -> tuple[float, float] | None:
    """Where a circuit stands: the mean of its lamps' known coordinates (None if none is known)."""
    pts = [(la, lo) for la, lo in coords if la is not None and lo is not None]
    if not pts:
        return None
    return sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)


def _local_noon(day: dt.date, tz: ZoneInfo) -> float:
    return dt.datetime(day.year, day.month, day.day, 12, tzinfo=tz).timestamp()


def night(circuit: str, cfg: CircuitSchedule, where: tuple[float, float], evening: dt.date,
          tz: ZoneInfo) -> list[Step]:
    """The steps of the night that starts on the local date ``evening`` at ``where`` (lat, lon), in time order."""
    lat, lon = where
    sunset = local_sun_times(lat, lon, _local_noon(evening, tz))[1]
    sunrise = local_sun_times(lat, lon, _local_noon(evening + dt.timedelta(days=1), tz))[0]
    if sunset is None or sunrise is None:
        return []
    on_t = sunset + cfg.on_after_dusk_min * 60.0
    off_t = sunrise - cfg.off_before_dawn_min * 60.0
    if off_t <= on_t:
        return []
    steps = [Step(on_t, circuit, "on")]
    if cfg.night_steps:
        steps.append(Step(on_t, circuit, "dim", 100.0))  # start every night at full light
    for s in cfg.night_steps:
        for day in (evening, evening + dt.timedelta(days=1)):
            at = dt.datetime(day.year, day.month, day.day, tzinfo=tz) + dt.timedelta(minutes=s.minutes)
            if on_t < at.timestamp() < off_t:
                steps.append(Step(at.timestamp(), circuit, "dim", s.level_pct))
    steps.append(Step(off_t, circuit, "off"))
    return sorted(steps, key=lambda s: (s.t, s.action != "on"))


def steps_between(circuits: dict[str, tuple[CircuitSchedule, float, float]], after: float, until: float,
                  tz: ZoneInfo) -> list[Step]:
    """Every circuit's steps with ``after < t <= until`` (circuit -> (schedule, lat, lon)), in time order."""
    first = dt.datetime.fromtimestamp(after, tz).date() - dt.timedelta(days=1)
    last = dt.datetime.fromtimestamp(until, tz).date()
    out: list[Step] = []
    for cid, (cfg, lat, lon) in sorted(circuits.items()):
        day = first
        while day <= last:
            out += [s for s in night(cid, cfg, (lat, lon), day, tz) if after < s.t <= until]
            day += dt.timedelta(days=1)
    return sorted(out, key=lambda s: (s.t, s.circuit, s.action != "on"))


def upcoming(cid: str, cfg: CircuitSchedule, where: tuple[float, float], now: float, tz: ZoneInfo, *,
             hours: float = 24.0) -> list[Step]:
    """What a lamp page shows: the circuit's steps in the next ``hours``."""
    return steps_between({cid: (cfg, *where)}, now, now + hours * 3600.0, tz)


def due(steps: Sequence[Step], now: float, catch_up_s: float) -> list[Step]:
    """Of the steps since the last tick, the ones still worth sending: at most ``catch_up_s`` late.

    Only the latest on/off per circuit matters, and only the latest dim level: a scheduler
    that was down for a while sends where the circuit should be now, not the whole history.
    """
    latest: dict[tuple[str, str], Step] = {}
    for s in steps:
        if now - s.t <= catch_up_s:
            latest[(s.circuit, "switch" if s.action != "dim" else "dim")] = s
    return sorted(latest.values(), key=lambda s: (s.t, s.circuit, s.action != "on"))


@dataclass(frozen=True, slots=True)
class Lamp:
    """A lamp as the registry (gateway birth messages) knows it."""

    id: str
    gateway: str
    circuit: str | None
    lat: float | None
    lon: float | None


def command(step: Step, lamp: Lamp, n: int) -> Command:
    """The agent command for one lamp at one step; the id names the step (at most 64 characters)."""
    args: dict[str, object] = {"level_pct": step.level_pct} if step.action == "dim" else {}
    return Command(f"astro-{int(step.t)}-{step.action}-{n}-{lamp.id}"[:64], COMMAND_ACTIONS[step.action], lamp.id,
                   args)


def tick(settings: LightingSettings, lamps: Sequence[Lamp], last: dict[str, float], now: float,
         tz: ZoneInfo) -> tuple[list[tuple[str, Command]], dict[str, float]]:
    """(gateway, command) pairs due since each circuit's last tick, and the new last-tick times.

    A configured circuit with no known lamp (no birth message yet) is not advanced: its steps
    wait until its lamps are known, within ``catch_up_s``.
    """
    members: dict[str, list[Lamp]] = {}
    for lamp in sorted(lamps, key=lambda x: x.id):
        if lamp.circuit in settings.circuits:
            members.setdefault(lamp.circuit, []).append(lamp)
    out: list[tuple[str, Command]] = []
    new_last = dict(last)
    for cid, cfg in sorted(settings.circuits.items()):
        group = members.get(cid, [])
        pos = position((x.lat, x.lon) for x in group)
        if pos is None:
            continue
        after = max(last.get(cid, now - settings.catch_up_s), now - settings.catch_up_s)
        for step in due(steps_between({cid: (cfg, *pos)}, after, now, tz), now, settings.catch_up_s):
            out += [(x.gateway, command(step, x, n)) for n, x in enumerate(group)]
        new_last[cid] = now
    return out, new_last
