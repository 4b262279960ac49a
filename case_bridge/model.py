"""The case bridge's values: a case as read, a page of them, an audit entry, an alarm outcome.

Pure (no I/O): the policy, the store and the console all speak these. ``deadline`` is the
current stage deadline (环节时限; ``None`` when no clock runs: parked, closed), ``due_at``
the overall handling deadline counted from dispatch (处置时限, Open311 ``expected_datetime``);
``overdue`` and ``time_to_deadline_s`` are :mod:`case_bridge.deadlines` verdicts at read time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from case_bridge.config import Urgency
from case_bridge.workflow import Position, State

COLUMNS = (
    "id, source, source_key, kind, category_code, service_code, category_name, urgency, state, is_open, "
    "extension_pending, extensions, unit, grid, street, district, device, rule, severity, corr_key, auto_close, "
    "lat, lon, address, description, reporter, created_at, filed_at, dispatched_at, handled_at, verified_at, "
    "closed_at, deadline, due_at, updated_at, version, data, overridden"
)
NAMES = [c.strip() for c in COLUMNS.split(",")]


@dataclass(frozen=True, slots=True)
class Case:
    """One case as read at ``now``; ``overdue`` and ``time_to_deadline_s`` are relative to it."""

    id: int
    source: str  # iot | citizen | hotline | patrol | open311 ...
    source_key: str | None
    kind: str  # component | event
    category_code: str
    service_code: str
    category_name: str
    urgency: str
    state: str
    extension_pending: bool
    extensions: int
    unit: str
    grid: str | None
    street: str | None
    district: str | None
    device: str | None
    rule: str | None
    severity: str | None
    corr_key: str | None
    auto_close: bool
    lat: float | None
    lon: float | None
    address: str | None
    description: str
    reporter: str | None
    created_at: float
    filed_at: float | None
    dispatched_at: float | None
    handled_at: float | None
    verified_at: float | None
    closed_at: float | None
    deadline: float | None  # current stage deadline (None: no clock runs)
    due_at: float | None  # overall handling deadline (from dispatch)
    updated_at: float
    version: int
    data: dict[str, Any]
    overdue: bool
    time_to_deadline_s: float | None
    overridden: bool = False  # verified or closed by a supervisor over an active alarm

    @property
    def is_open(self) -> bool:
        return State(self.state).is_open

    @property
    def state_label(self) -> str:
        return State(self.state).label_zh

    @property
    def position(self) -> Position:
        return Position(State(self.state), self.extension_pending)

    def to_json(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in NAMES if name != "is_open"}
        out["overdue"] = self.overdue
        out["time_to_deadline_s"] = self.time_to_deadline_s
        out["state_label"] = State(self.state).label_zh
        out["urgency_label"] = Urgency(self.urgency).label_zh
        return out


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Case]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    case_id: int
    t: float
    actor: str
    role: str | None
    action: str
    from_state: str | None
    to_state: str
    note: str
    request_id: str | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AlarmOutcome:
    """What one alarm transition did: ``effect`` is duplicate | no_case | created | attached | updated."""

    effect: str
    case_id: int | None = None
    case: Case | None = None
    actions: tuple[str, ...] = ()  # workflow actions the bridge took (file, dispatch, fail_verification)
    devices: tuple[str, ...] = ()  # devices whose open-case set may have changed
