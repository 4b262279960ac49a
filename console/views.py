"""What the console shows, as plain values, and the ports it reads them through.

The console holds no business rules: case facts (states, which are open, deadlines, overdue)
are :mod:`case_bridge`'s and are named as it names them (``deadline`` the stage deadline,
``due_at`` the overall handling deadline); devices, readings, alarms and cases come from the
stores of ``cloud_ingest``, ``rules`` and ``case_bridge`` through the small protocols
below. :mod:`console.adapters` implements them over the real stores; handlers, pages and
the Open311 formatter only ever see these frozen values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from case_bridge.incidence import Incidence
    from case_bridge.policy import StreetReading
    from case_bridge.workflow import Role as WorkflowRole

from case_bridge import deadlines
from case_bridge.workflow import State


@dataclass(frozen=True, slots=True)
class MetricValue:
    ts: float
    value: float
    unit: str = ""
    quality: int = 0


@dataclass(frozen=True, slots=True)
class DeviceView:
    id: str
    kind: str  # water_gauge | manhole | lamp | wim
    profile: str = ""
    gateway: str | None = None
    lat: float | None = None
    lon: float | None = None
    grid: str | None = None
    owner: str | None = None
    circuit: str | None = None  # lamps: the supply circuit they are switched with
    online: bool = False
    last_seen: float | None = None
    latest: dict[str, MetricValue] = field(default_factory=dict)
    #: why offline: "will" (the gateway's status says so) or "stale" (silent too long); None if online
    offline_reason: str | None = None


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    t: float  # bucket start
    value: float  # mean over the bucket
    lo: float
    hi: float


@dataclass(frozen=True, slots=True)
class AlarmView:
    alarm_id: str
    device: str
    rule: str
    severity: str  # minor | major | critical
    state: str  # active | acknowledged | cleared
    raised_at: float
    updated_at: float
    value: float | None = None
    acked_by: str | None = None


@dataclass(frozen=True, slots=True)
class Category:
    code: str
    name: str
    kind: str = ""  # 部件 component | 事件 event
    description: str = ""
    group: str = ""


@dataclass(frozen=True, slots=True)
class UnitView:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class CaseView:
    id: str
    category: str
    category_name: str
    unit: str | None
    unit_name: str
    state: str
    urgency: str
    created_at: float
    updated_at: float
    deadline: float | None = None  # current stage deadline (环节时限); None when no clock runs
    closed_at: float | None = None
    device: str | None = None
    rule: str | None = None
    alarm_id: str | None = None
    description: str = ""
    lat: float | None = None
    lon: float | None = None
    address: str = ""
    source: str = ""  # iot | open311 | citizen | ...
    status_note: str = ""
    due_at: float | None = None  # overall handling deadline from dispatch (Open311 expected_datetime)
    on_time: bool | None = None  # fix reported within the handling limit (None: no limit ran or no fix)
    overridden: bool = False  # verified/closed by a supervisor over an active alarm: never on time
    vehicle: dict[str, Any] | None = None  # WIM enforcement evidence (rules.wim), shown when present
    media: tuple[dict[str, Any], ...] = ()  # photos on the case (case_bridge.media entries)
    media_url: str = ""  # the reporter's own Open311 media_url (public: it came from the reporter)
    contact: dict[str, str] = field(default_factory=dict)  # reporter contact: never public, see policy
    photos_required: bool = False  # the category needs before/after photos to report 处置

    @property
    def is_open(self) -> bool:
        return State(self.state).is_open

    def overdue(self, now: float) -> bool:
        return deadlines.is_overdue(self.deadline, now)

    def time_to_deadline_s(self, now: float) -> float | None:
        return deadlines.time_to_deadline(self.deadline, now)


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    t: float
    actor: str
    action: str
    from_state: str | None
    to_state: str | None
    note: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # evidence: readings and chart of a return, an urge's lateness


@dataclass(frozen=True, slots=True)
class CaseFilter:
    states: tuple[str, ...] = ()
    unit: str | None = None
    category: str | None = None
    overdue: bool | None = None
    device: str | None = None
    created_from: float | None = None
    created_to: float | None = None
    ids: tuple[str, ...] = ()
    status: str | None = None  # Open311 open | closed, mapped to states by the adapter
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True, slots=True)
class CasePage:
    items: list[CaseView]
    total: int


@dataclass(frozen=True, slots=True)
class StatRow:
    """及时解决率 (on_time / due) and 结案率 (closed / total) for one unit or category."""

    key: str
    total: int
    closed: int
    due: int
    on_time: int
    on_time_rate: float | None
    closure_rate: float | None
    overridden: int = 0  # verified/closed over an active alarm: counted apart, never on time


@dataclass(frozen=True, slots=True)
class Statistics:
    by_unit: list[StatRow]
    by_category: list[StatRow]
    by_hour: dict[tuple[int, str], int]  # (local hour 0-23, category) -> cases created
    total: StatRow | None = None


@dataclass(frozen=True, slots=True)
class NewReport:
    """A citizen or hotline report arriving over Open311."""

    service_code: str
    description: str
    lat: float | None
    lon: float | None
    address: str
    reporter: str  # the API client name
    contact: dict[str, str]
    request_id: str  # idempotency key
    attributes: dict[str, str] = field(default_factory=dict)
    media_url: str = ""  # the reporter's photo link (Open311 media_url)


class DevicePort(Protocol):
    def devices(self) -> list[DeviceView]: ...
    def device(self, device_id: str) -> DeviceView | None: ...
    def series(self, device_id: str, metric: str, start: float, end: float, bucket_s: float) -> list[SeriesPoint]: ...


class AlarmPort(Protocol):
    def active(self) -> list[AlarmView]: ...
    def recent(self, since: float, limit: int) -> list[AlarmView]: ...
    def for_device(self, device_id: str, limit: int) -> list[AlarmView]: ...
    def get(self, alarm_id: str) -> AlarmView | None: ...


class CasePort(Protocol):
    def categories(self) -> list[Category]: ...
    def units(self) -> list[UnitView]: ...
    def worklist(self, flt: CaseFilter, now: float) -> CasePage: ...
    def get(self, case_id: str) -> CaseView | None: ...
    def timeline(self, case_id: str) -> list[TimelineEntry]: ...
    def allowed_actions(self, case: CaseView, role: str) -> list[str]: ...
    def seats(self) -> dict[str, tuple[WorkflowRole, ...]]: ...
    def transition(self, case_id: str, action: str, *, actor: str, role: str, note: str, request_id: str,
                   now: float, override_reason: str | None = None, unit: str | None = None,
                   readings: Sequence[StreetReading] = ()) -> CaseView: ...
    def create_reported(self, report: NewReport, now: float) -> CaseView: ...
    def add_media(self, case_id: str, entry: dict[str, Any], *, actor: str, role: str, now: float) -> CaseView: ...
    def statistics(self, start: float, end: float, now: float) -> Statistics: ...
    def incidence(self, start: float, end: float) -> Incidence: ...


class AckPort(Protocol):
    """Send an acknowledgement (``action="ack"``) or a manual clear to the rule engine (MQTT ``alarm-ack``)."""

    def send_ack(self, alarm_id: str, device: str, actor: str, t: float, note: str, *, action: str = "ack") -> None: ...


JSONDict = dict[str, Any]
