"""Typed config of the case bridge: category table, units, the ``cases`` and ``notify`` sections.

Everything is validated once at load (file, key path and bad value in the error); nothing is
clamped or fixed up. ``Catalog`` bundles what the store and the mapper need at run time.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from case_bridge import workflow
from case_bridge.deadlines import Basis, WorkingCalendar
from case_bridge.errors import UnknownCategory
from contracts.alarms import Severity
from contracts.config import MqttSettings, StrictModel, parse_cloud_section, parse_config

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CATEGORIES = REPO_ROOT / "configs" / "categories.yaml"
DEFAULT_UNITS = REPO_ROOT / "configs" / "units.yaml"


class Urgency(StrEnum):
    NORMAL = "normal"  # 一般
    URGENT = "urgent"  # 紧急
    VERY_URGENT = "very_urgent"  # 非常紧急

    @property
    def label_zh(self) -> str:
        return {"normal": "一般", "urgent": "紧急", "very_urgent": "非常紧急"}[self.value]

    @property
    def label_en(self) -> str:
        return self.value.replace("_", " ")


class CaseKind(StrEnum):
    COMPONENT = "component"  # 部件
    EVENT = "event"  # 事件


_HHMM = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")


def _hhmm_s(text: str) -> int:
    m = _HHMM.match(text)
    if not m:
        raise ValueError(f"not HH:MM: {text!r}")
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60


class CalendarConfig(StrictModel):
    """Working calendar; ``holidays`` are days off, ``workdays`` make-up working days (调休)."""

    utc_offset_minutes: int = Field(480, ge=-720, le=840)
    weekdays: tuple[Literal[1, 2, 3, 4, 5, 6, 7], ...] = (1, 2, 3, 4, 5)  # ISO: Monday=1
    hours: tuple[tuple[str, str], ...] = (("08:30", "12:00"), ("13:30", "17:30"))
    holidays: tuple[dt.date, ...] = ()
    workdays: tuple[dt.date, ...] = ()

    @field_validator("hours")
    @classmethod
    def _hours_ok(cls, value: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        last = 0
        for start, end in value:
            s, e = _hhmm_s(start), _hhmm_s(end)
            if not s < e or s < last:
                raise ValueError("working periods must be ordered and non-overlapping, each start < end")
            last = e
        return value

    def build(self) -> WorkingCalendar:
        return WorkingCalendar(
            utc_offset_s=self.utc_offset_minutes * 60,
            weekdays=frozenset(d - 1 for d in self.weekdays),
            periods=tuple((_hhmm_s(s), _hhmm_s(e)) for s, e in self.hours),
            holidays=frozenset(self.holidays),
            workdays=frozenset(self.workdays),
        )


class Limits(StrictModel):
    """Stage limits in hours (环节时限); ``handle_h`` is the overall limit counted from dispatch."""

    basis: Basis = Basis.WORKING
    file_h: float = Field(1.0, gt=0)
    dispatch_h: float = Field(1.0, gt=0)
    handle_h: float = Field(gt=0)
    verify_h: float = Field(4.0, gt=0)
    close_h: float = Field(4.0, gt=0)
    extension_h: float = Field(24.0, gt=0)  # added by one approved 延期


#: what 改派 does to the handling limit: ``restart`` it from the re-assignment, or ``keep`` the first one
ReassignClock = Literal["restart", "keep"]


class CategoryDef(StrictModel):
    code: str = Field(pattern=r"^[0-9A-Za-z]{4,8}$")
    kind: CaseKind
    name: str = Field(min_length=1)
    major: str | None = None  # 大类 name, for display
    local: bool = False  # a local extension (扩展部件/事件), not in the national list
    owner_unit: str | None = None  # components: the owner (属主) when the device names none
    agency_unit: str | None = None  # events: the owning agency after the locality
    #: events: "agency_first" for matters only the agency can act on (overloading is 治超 enforcement)
    route: Literal["locality_first", "agency_first"] = "locality_first"
    limits: dict[Urgency, Limits]
    reassign_clock: ReassignClock | None = None  # None: the table's (city's) rule
    #: 处置前后照片: a person's 处置 report (report_fix) needs a before and an after photo on the case
    photos_required: bool = False

    @field_validator("limits")
    @classmethod
    def _normal_required(cls, value: dict[Urgency, Limits]) -> dict[Urgency, Limits]:
        if Urgency.NORMAL not in value:
            raise ValueError("limits must define at least 'normal' (一般); other urgencies fall back to it")
        return value

    @property
    def service_code(self) -> str:
        """Open311 service_code: kind prefix + code (部件 B / 事件 S), e.g. ``B0101``, ``S0111``."""
        return ("B" if self.kind is CaseKind.COMPONENT else "S") + self.code

    def limits_for(self, urgency: Urgency) -> Limits:
        return self.limits.get(urgency) or self.limits[Urgency.NORMAL]


_DEFAULT_URGENCY = {
    Severity.MINOR: Urgency.NORMAL,
    Severity.MAJOR: Urgency.URGENT,
    Severity.CRITICAL: Urgency.VERY_URGENT,
}


class CaseRule(StrictModel):
    """How one kind of alarm becomes a case. First matching rule wins.

    ``rule`` is a glob over the alarm's rule name; ``device_kind`` narrows by device type.
    ``category: null`` means "no case" (device health alarms go to maintenance, not the city).
    ``from_component`` takes the 部件 code from the device's 16-digit component id when it is
    in the table (0101–0114 covers by owner), falling back to ``category``.
    """

    rule: str = "*"
    device_kind: str | None = None
    category: str | None  # service code: B<code> for a 部件, S<code> for an 事件 (codes overlap: 0111)
    from_component: bool = False
    urgency: dict[Severity, Urgency] = Field(default_factory=lambda: dict(_DEFAULT_URGENCY))
    auto_dispatch_from: Severity | None = None  # None: left for a handler to accept (reported)
    auto_close: bool = False  # close right after a sensor-verified fix
    #: one open case per: ``device`` and condition; ``incident`` = device, whichever of this rule's
    #: conditions fired (cover open + tilt of one manhole); lamp ``circuit``; ``grid`` and condition;
    #: ``vehicle``: one weighed vehicle, whichever of its overload rules fired (identity from the evidence)
    correlate: Literal["device", "incident", "circuit", "grid", "vehicle"] = "device"


Seat = Literal["duty_officer", "case_handler", "supervisor", "admin", "supervision", "command"]


class CentreRoles(StrictModel):
    """Which console login roles act for which centre (一级监督、二级指挥), per city.

    The default keeps the duty officer out of case work; a city that merges its command centre
    and duty room lists ``duty_officer`` under ``command``. ``admin`` runs the system, not cases,
    and ``case_handler`` is scoped to its own unit, so neither may sit in a centre.
    """

    supervision: tuple[Seat, ...] = ("supervision", "supervisor")  # 监督中心: 受理/立案, 核查, 结案
    command: tuple[Seat, ...] = ("command", "supervisor")  # 指挥中心: 派遣, 改派, 督办, 延期/挂账
    unit: tuple[Seat, ...] = ("case_handler",)  # 责任单位: 接收, 回退, 处置反馈, 申请延期/改派
    urge_window_h: float = Field(4.0, gt=0)  # 督办 allowed on cases overdue or due within this many hours

    @model_validator(mode="after")
    def _seats_ok(self) -> CentreRoles:
        for centre in ("supervision", "command"):
            for i, seat in enumerate(getattr(self, centre)):
                if seat in ("admin", "case_handler"):
                    raise ValueError(f"roles.{centre}[{i}]: {seat!r} may not act for a centre")
        for i, seat in enumerate(self.unit):
            if seat == "admin":
                raise ValueError(f"roles.unit[{i}]: 'admin' may not act for a unit")
        return self

    def seats(self) -> dict[str, tuple[workflow.Role, ...]]:
        return workflow.seat_roles(self.supervision, self.command, self.unit)


class CategoryTable(StrictModel):
    calendar: CalendarConfig = CalendarConfig()
    limit_sets: dict[str, dict[Urgency, Limits]] = Field(default_factory=dict)  # for YAML anchors; not used directly
    categories: tuple[CategoryDef, ...]
    rules: tuple[CaseRule, ...] = ()
    reassign_clock: ReassignClock = "restart"  # the city's rule for 改派; a category may override it
    roles: CentreRoles = CentreRoles()  # which console roles act for the supervision / command centre

    @model_validator(mode="after")
    def _refs_ok(self) -> CategoryTable:
        codes: set[tuple[str, str]] = set()
        for i, c in enumerate(self.categories):
            key = (c.kind.value, c.code)
            if key in codes:
                raise ValueError(f"categories[{i}]: duplicate {c.kind.value} code {c.code!r}")
            codes.add(key)
        known = {c.service_code for c in self.categories}
        for i, r in enumerate(self.rules):
            if r.category is not None and r.category not in known:
                raise ValueError(
                    f"rules[{i}].category: unknown service code {r.category!r} (B<code> 部件, S<code> 事件)"
                )
        return self


class UnitKind(StrEnum):
    CENTER = "center"  # 监督/指挥中心
    DISTRICT = "district"
    STREET = "street"  # 街道办
    OWNER = "owner"  # 产权单位 (water, gas, power, telecom companies ...)
    AGENCY = "agency"  # 主管部门 (traffic police, transport enforcement ...)


class UnitDef(StrictModel):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    name: str
    kind: UnitKind
    parent: str | None = None


class GridDef(StrictModel):
    """A unit grid (单元网格) and the locality that answers for it."""

    name: str | None = None
    street: str | None = None
    district: str


class UnitTable(StrictModel):
    units: tuple[UnitDef, ...]
    grids: dict[str, GridDef] = Field(default_factory=dict)
    default_district: str | None = None  # locality for a device without a known grid
    fallback_unit: str  # who gets a case nobody else answers for (the command centre)

    @model_validator(mode="after")
    def _refs_ok(self) -> UnitTable:
        ids = [u.id for u in self.units]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate unit id")
        known = set(ids)
        refs = [("fallback_unit", self.fallback_unit), ("default_district", self.default_district)]
        for code, g in self.grids.items():
            refs += [(f"grids.{code}.street", g.street), (f"grids.{code}.district", g.district)]
        refs += [(f"units.{u.id}.parent", u.parent) for u in self.units]
        for where, ref in refs:
            if ref is not None and ref not in known:
                raise ValueError(f"{where}: unknown unit {ref!r}")
        return self


class CasesSettings(StrictModel):
    """The ``cases`` section of the cloud config."""

    store_url: str = "sqlite:///data/cases.db"
    categories_file: str = "configs/categories.yaml"
    units_file: str = "configs/units.yaml"
    verify_hold_s: float = Field(600.0, ge=0)  # the sensor must read normal this long after a fix
    verify_grace_s: float = Field(60.0, ge=0)  # an alarm still active this long after the fix fails it
    tick_s: float = Field(1.0, gt=0)  # verification / reconcile period
    client_id: str = "citywatch-cases"
    session_expiry_s: int = Field(7 * 86400, ge=60)  # broker keeps our queue this long across restarts
    mqtt: MqttSettings | None = None  # overrides the shared ``mqtt`` section


class TargetKind(StrEnum):
    WEBHOOK = "webhook"
    DINGTALK = "dingtalk"
    WECOM = "wecom"
    EMAIL = "email"


class NotifyTarget(StrictModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    type: TargetKind
    url: str | None = None  # webhook / dingtalk / wecom
    secret: str | None = None  # dingtalk 加签 secret (SEC...)
    smtp_host: str | None = None
    smtp_port: int = 25
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    from_addr: str | None = None
    to: tuple[str, ...] = ()
    timeout_s: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _complete(self) -> NotifyTarget:
        if self.type is TargetKind.EMAIL:
            if not (self.smtp_host and self.from_addr and self.to):
                raise ValueError("an email target needs smtp_host, from_addr and to")
        elif not self.url or not self.url.startswith(("http://", "https://")):
            raise ValueError(f"a {self.type.value} target needs an http(s) url")
        return self


class NotifySettings(StrictModel):
    """The ``notify`` section: duty-officer notifications and escalation."""

    targets: tuple[NotifyTarget, ...] = ()
    primary: tuple[str, ...] = ()  # target names notified first
    escalate_to: tuple[str, ...] = ()  # notified when a critical alarm stays unacknowledged
    #: unit id -> its own channels (the unit's group robot, e-mail): 督办 urges go there, else to ``primary``
    unit_targets: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    escalate_after_s: float = Field(600.0, gt=0)
    min_severity: Severity = Severity.MAJOR
    dedup_window_s: float = Field(3600.0, ge=0)
    retry_attempts: int = Field(5, ge=1, le=20)
    retry_base_s: float = Field(1.0, gt=0)
    retry_max_s: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _names_ok(self) -> NotifySettings:
        names = {t.name for t in self.targets}
        for ref in [*self.primary, *self.escalate_to]:
            if ref not in names:
                raise ValueError(f"unknown notify target {ref!r}")
        for unit, refs in self.unit_targets.items():
            for i, ref in enumerate(refs):
                if ref not in names:
                    raise ValueError(f"unit_targets.{unit}[{i}]: unknown notify target {ref!r}")
        return self


@dataclass(frozen=True)
class Catalog:
    """Category table + units + calendar, ready for lookups."""

    table: CategoryTable
    units: UnitTable
    calendar: WorkingCalendar

    def category(self, service_code: str) -> CategoryDef:
        """Look up by service code (``B0111`` 燃气井盖, ``S0111`` 道路积水): bare codes overlap."""
        for c in self.table.categories:
            if c.service_code == service_code:
                return c
        raise UnknownCategory(service_code)

    def reassign_clock(self, cat: CategoryDef) -> ReassignClock:
        """The 改派 deadline rule for ``cat``: its own, else the city's."""
        return cat.reassign_clock or self.table.reassign_clock

    def find(self, kind: CaseKind, code: str) -> CategoryDef | None:
        for c in self.table.categories:
            if c.kind is kind and c.code == code:
                return c
        return None

    def unit(self, unit_id: str) -> UnitDef | None:
        for u in self.units.units:
            if u.id == unit_id:
                return u
        return None


def load_catalog(categories_path: str | Path = DEFAULT_CATEGORIES, units_path: str | Path = DEFAULT_UNITS) -> Catalog:
    cp, up = Path(categories_path), Path(units_path)
    table = parse_config(cp.read_text(encoding="utf-8"), CategoryTable, source=str(cp))
    units = parse_config(up.read_text(encoding="utf-8"), UnitTable, source=str(up))
    return Catalog(table, units, table.calendar.build())


def load_cases_settings(path: str | Path) -> CasesSettings:
    p = Path(path)
    return parse_cloud_section(p.read_text(encoding="utf-8"), "cases", CasesSettings, source=str(p))


def load_notify_settings(path: str | Path) -> NotifySettings:
    p = Path(path)
    return parse_cloud_section(p.read_text(encoding="utf-8"), "notify", NotifySettings, source=str(p))
