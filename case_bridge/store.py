"""The case store: cases, their audit trail, alarm links and statistics over SQLite or PostgreSQL.

Every write is one transaction that also writes its audit row(s), so a crash leaves either
both or neither. IoT alarms are applied idempotently: an alarm transition is keyed by
(alarm_id, kind, t) and an alarm links to at most one case (``case_links.alarm_id`` is the
primary key), so redelivery after a crash changes nothing. A partial unique index keeps one
open case per correlation key. See :mod:`case_bridge` for the public API summary.
"""

from __future__ import annotations

import statistics as pystats
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from case_bridge import lifecycle, workflow
from case_bridge.config import Catalog, CategoryDef, UnitDef, Urgency, load_catalog
from case_bridge.db import PostgresDb, SqliteDb, Tx, connect, migrate
from case_bridge.errors import CaseConflict, CaseNotFound, IllegalTransition, StoreConflict, StoreError
from case_bridge.lifecycle import NO_DEADLINE, AlarmView, Clocks, Verdict
from case_bridge.mapping import CaseDraft, locality, map_alarm, responsible_unit
from case_bridge.workflow import Action, Position, Role, State, parse_role
from contracts.alarms import AlarmTransition, TransitionKind
from contracts.payloads import ts_ms
from contracts.reading import DeviceInfo

_COLUMNS = (
    "id, source, source_key, kind, category_code, service_code, category_name, urgency, state, is_open, "
    "extension_pending, extensions, unit, grid, street, district, device, rule, severity, corr_key, auto_close, "
    "lat, lon, address, description, reporter, created_at, filed_at, dispatched_at, handled_at, verified_at, "
    "closed_at, deadline, due_at, updated_at, version, data"
)
_NAMES = [c.strip() for c in _COLUMNS.split(",")]


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
        out = {name: getattr(self, name) for name in _NAMES if name != "is_open"}
        out["overdue"] = self.overdue
        out["time_to_deadline_s"] = self.time_to_deadline_s
        out["state_label"] = State(self.state).label_zh
        out["urgency_label"] = Urgency(self.urgency).label_zh
        return out


def _case(row: Sequence[Any], now: float) -> Case:
    d = dict(zip(_NAMES, row, strict=True))
    dl = float(d["deadline"])
    deadline = None if dl >= NO_DEADLINE else dl
    del d["is_open"]
    d["extension_pending"] = bool(d["extension_pending"])
    d["auto_close"] = bool(d["auto_close"])
    d["deadline"] = deadline
    d["data"] = orjson.loads(d["data"]) if d["data"] else {}
    return Case(**d, overdue=deadline is not None and now > deadline,
                time_to_deadline_s=None if deadline is None else deadline - now)


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


@dataclass(frozen=True, slots=True)
class RateRow:
    key: str
    total: int  # cases reported in the period (rejected and cancelled excluded)
    closed: int
    due: int  # cases whose handling limit has run out or that were handled
    on_time: int  # handled within the limit
    on_time_rate: float | None  # 及时解决率 = on_time / due
    closure_rate: float | None  # 结案率 = closed / total


@dataclass(frozen=True, slots=True)
class Statistics:
    since: float
    until: float
    by_unit: list[RateRow]
    by_category: list[RateRow]
    by_hour_category: list[tuple[int, str, int]]  # (local hour, service code, count)
    by_grid: list[tuple[str, int]]
    stage_median_s: dict[str, float | None]
    total: RateRow = field(default_factory=lambda: RateRow("all", 0, 0, 0, 0, None, None))


_ORDER = {
    "deadline": "deadline ASC, id ASC",
    "-deadline": "deadline DESC, id DESC",
    "created_at": "created_at ASC, id ASC",
    "-created_at": "created_at DESC, id DESC",
    "-updated_at": "updated_at DESC, id DESC",
    "id": "id ASC",
    "-id": "id DESC",
}


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS).decode()


class CaseStore:
    """The case store. Thread-safe (one connection behind a lock); one instance per process."""

    def __init__(
        self, db: SqliteDb | PostgresDb, catalog: Catalog, verify_hold_s: float = 600.0, verify_grace_s: float = 0.0
    ) -> None:
        self.db = db
        self.catalog = catalog
        self.verify_hold_s = verify_hold_s
        self.verify_grace_s = verify_grace_s

    @property
    def dialect(self) -> str:
        return self.db.dialect

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------ reads

    def categories(self) -> list[CategoryDef]:
        return list(self.catalog.table.categories)

    def units(self) -> list[UnitDef]:
        return list(self.catalog.units.units)

    def get(self, case_id: int, now: float | None = None) -> Case:
        now = time.time() if now is None else now
        with self.db.read() as tx:
            rows = tx.execute(f"SELECT {_COLUMNS} FROM cases WHERE id = ?", (case_id,))
        if not rows:
            raise CaseNotFound(case_id)
        return _case(rows[0], now)

    def worklist(
        self,
        *,
        unit: str | None = None,
        state: str | Sequence[str] | None = None,
        category: str | None = None,
        overdue: bool | None = None,
        sort: str = "deadline",
        limit: int = 50,
        offset: int = 0,
        now: float | None = None,
        include_closed: bool = False,
        grid: str | None = None,
        source: str | None = None,
        device: str | None = None,
        ids: Sequence[int] | None = None,
        created_from: float | None = None,
        created_to: float | None = None,
    ) -> Page:
        """A page of cases, sorted (default: nearest deadline first), with the total count.

        ``state`` None means every open state (unless ``include_closed``); ``category`` is a
        service code (``S0111``) or a bare code; ``overdue`` True/False filters on the stage
        deadline at ``now``; ``device`` finds the cases linked to a device (correlated ones
        too); ``ids`` and ``created_from``/``created_to`` serve Open311's request filters.
        """
        now = time.time() if now is None else now
        if sort not in _ORDER:
            raise ValueError(f"unknown sort {sort!r}; one of {', '.join(_ORDER)}")
        if not 1 <= limit <= 1000 or offset < 0:
            raise ValueError("limit must be 1..1000 and offset >= 0")
        where: list[str] = []
        params: list[Any] = []
        if unit is not None:
            where.append("unit = ?")
            params.append(unit)
        if state is None:
            if not include_closed:
                where.append("is_open = 1")
        else:
            states = [state] if isinstance(state, str) else list(state)
            for s in states:
                State(s)  # ValueError on a typo rather than an empty page
            if len(states) == 1:
                where.append("state = ?")
            else:
                where.append(f"state IN ({', '.join('?' * len(states))})")
            params.extend(states)
        if category is not None:
            where.append("service_code = ?" if not category.isdigit() else "category_code = ?")
            params.append(category)
        if grid is not None:
            where.append("grid = ?")
            params.append(grid)
        if source is not None:
            where.append("source = ?")
            params.append(source)
        if device is not None:
            # IoT cases always link their devices; the link index finds them, correlated ones too
            where.append("id IN (SELECT case_id FROM case_links WHERE device = ?)")
            params.append(device)
        if ids is not None:
            if not ids:
                return Page([], 0, limit, offset)
            where.append(f"id IN ({', '.join('?' * len(ids))})")
            params.extend(int(i) for i in ids)
        if created_from is not None:
            where.append("created_at >= ?")
            params.append(created_from)
        if created_to is not None:
            where.append("created_at < ?")
            params.append(created_to)
        if overdue is True:
            where.append("deadline < ?")
            params.append(now)
        elif overdue is False:
            where.append("deadline >= ?")
            params.append(now)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        with self.db.read() as tx:
            total = int(tx.execute(f"SELECT COUNT(*) FROM cases{clause}", params)[0][0])
            rows = tx.execute(
                f"SELECT {_COLUMNS} FROM cases{clause} ORDER BY {_ORDER[sort]} LIMIT ? OFFSET ?",
                [*params, limit, offset],
            )
        return Page([_case(r, now) for r in rows], total, limit, offset)

    def timeline(self, case_id: int) -> list[AuditEntry]:
        """The audit trail of a case, oldest first."""
        with self.db.read() as tx:
            if not tx.execute("SELECT 1 FROM cases WHERE id = ?", (case_id,)):
                raise CaseNotFound(case_id)
            rows = tx.execute(
                "SELECT id, case_id, t, actor, role, action, from_state, to_state, note, request_id, data "
                "FROM case_audit WHERE case_id = ? ORDER BY id",
                (case_id,),
            )
        return [
            AuditEntry(int(r[0]), int(r[1]), float(r[2]), r[3], r[4], r[5], r[6], r[7], r[8], r[9], orjson.loads(r[10]))
            for r in rows
        ]

    audit = timeline

    def allowed_actions(self, case: Case, role: Role | str | None = None) -> tuple[str, ...]:
        r = parse_role(role) if role is not None else None
        return tuple(a.value for a in workflow.allowed_actions(case.position, r))

    def linked_alarms(self, case_id: int) -> list[AlarmView]:
        with self.db.read() as tx:
            rows = tx.execute(
                "SELECT s.alarm_id, s.device, s.rule, s.active, s.severity, s.last_t, s.value, s.cleared_at, "
                "s.raised_at, s.evidence FROM case_links l JOIN alarm_state s ON s.alarm_id = l.alarm_id "
                "WHERE l.case_id = ? ORDER BY l.t",
                (case_id,),
            )
        return [_alarm_view(r) for r in rows]

    def open_cases_for(self, devices: Iterable[str]) -> dict[str, dict[str, str]]:
        """device -> {rule: case id} of open cases linked to that device (for ``case-open`` topics)."""
        out: dict[str, dict[str, str]] = {}
        devs = sorted(set(devices))
        with self.db.read() as tx:
            for i in range(0, len(devs), 200):
                chunk = devs[i : i + 200]
                rows = tx.execute(
                    "SELECT l.device, l.rule, c.id FROM case_links l JOIN cases c ON c.id = l.case_id "
                    f"WHERE c.is_open = 1 AND l.device IN ({', '.join('?' * len(chunk))}) ORDER BY c.id",
                    chunk,
                )
                for dev, rule, cid in rows:
                    out.setdefault(dev, {})[rule] = str(cid)
        for d in devs:
            out.setdefault(d, {})
        return out

    def deadlines_passed(self, after: float, until: float, limit: int = 200) -> list[Case]:
        """Open cases whose stage deadline fell in (after, until]: the ones that just went overdue."""
        with self.db.read() as tx:
            rows = tx.execute(
                f"SELECT {_COLUMNS} FROM cases WHERE is_open = 1 AND deadline > ? AND deadline <= ? "
                "ORDER BY deadline, id LIMIT ?",
                (after, until, limit),
            )
        return [_case(r, until) for r in rows]

    def devices_with_open_cases(self) -> list[str]:
        with self.db.read() as tx:
            rows = tx.execute(
                "SELECT DISTINCT l.device FROM case_links l JOIN cases c ON c.id = l.case_id WHERE c.is_open = 1"
            )
        return [r[0] for r in rows]

    def devices_changed_since(self, t: float) -> list[str]:
        """Devices linked to cases updated at or after ``t`` (another process may have moved them)."""
        with self.db.read() as tx:
            rows = tx.execute(
                "SELECT DISTINCT l.device FROM cases c JOIN case_links l ON l.case_id = c.id WHERE c.updated_at >= ?",
                (t,),
            )
        return [r[0] for r in rows]

    # ------------------------------------------------------------ writes

    def create_reported(
        self,
        category: str,
        description: str,
        lat: float | None = None,
        lon: float | None = None,
        address: str | None = None,
        *,
        source: str = "citizen",
        source_key: str | None = None,
        reporter: str | None = None,
        urgency: Urgency | str = Urgency.NORMAL,
        grid: str | None = None,
        unit: str | None = None,
        actor: str | None = None,
        request_id: str | None = None,
        data: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> Case:
        """A case reported by a person (citizen, hotline, patrol; Open311 POST) in state ``reported``.

        ``category`` is a service code (``S0111``, ``B0101``). ``source_key`` makes the call
        idempotent (an Open311 token, a hotline ticket number): the same key returns the case
        created the first time. The unit is resolved from the category and ``grid`` unless given.
        """
        now = time.time() if now is None else now
        cat = self.catalog.category(category)
        urg = Urgency(urgency)
        if unit is None:
            unit = responsible_unit(self.catalog, cat, None, grid)
        elif self.catalog.unit(unit) is None:
            raise StoreError(f"unknown unit {unit!r}")
        loc = locality(self.catalog, grid)
        try:
            return self._create_reported_tx(
                cat, urg, unit, grid, loc.street, loc.district, lat, lon, address, description, source, source_key,
                reporter, actor, request_id, data, now,
            )
        except StoreConflict:
            if source_key is None:
                raise
            with self.db.read() as tx:  # a concurrent call with the same key won the race
                rows = tx.execute("SELECT id FROM cases WHERE source_key = ?", (source_key,))
                if not rows:
                    raise
                return self._get_tx(tx, int(rows[0][0]), now)

    def _create_reported_tx(  # noqa: PLR0917
        self, cat: CategoryDef, urg: Urgency, unit: str, grid: str | None, street: str | None, district: str | None,
        lat: float | None, lon: float | None, address: str | None, description: str, source: str,
        source_key: str | None, reporter: str | None, actor: str | None, request_id: str | None,
        data: dict[str, Any] | None, now: float,
    ) -> Case:
        with self.db.tx() as tx:
            if source_key is not None:
                rows = tx.execute("SELECT id FROM cases WHERE source_key = ?", (source_key,))
                if rows:
                    return self._get_tx(tx, int(rows[0][0]), now)
            case_id = self._insert_case(
                tx, source=source, source_key=source_key, cat=cat, urgency=urg, unit=unit, grid=grid,
                street=street, district=district, device=None, rule=None, severity=None, corr_key=None,
                auto_close=False, lat=lat, lon=lon, address=address, description=description, reporter=reporter,
                data=data or {}, now=now,
            )
            self._audit(tx, case_id, now, actor or reporter or source, None, "report", None, State.REPORTED.value,
                        description[:200], request_id, {"source": source})
            return self._get_tx(tx, case_id, now)

    def transition(
        self,
        case_id: int,
        action: Action | str,
        actor: str,
        *,
        note: str = "",
        request_id: str | None = None,
        now: float | None = None,
        role: Role | str | None = None,
        unit: str | None = None,
        expected_version: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> Case:
        """Apply one workflow action, with its audit row, in one transaction.

        Raises :class:`IllegalTransition` (state or role forbids it), :class:`CaseNotFound`,
        :class:`CaseConflict` (``expected_version`` is stale). A repeated ``request_id`` for the
        same case returns the case unchanged (safe client retries). ``unit`` re-targets a
        dispatch (派遣 to another unit).
        """
        now = time.time() if now is None else now
        r = parse_role(role) if role is not None else None
        with self.db.tx() as tx:
            if request_id is not None and tx.execute(
                "SELECT 1 FROM case_audit WHERE case_id = ? AND request_id = ?", (case_id, request_id)
            ):
                return self._get_tx(tx, case_id, now)
            case = self._get_tx(tx, case_id, now, for_update=True)
            if expected_version is not None and expected_version != case.version:
                raise CaseConflict(case_id, expected_version, case.version)
            return self._transition_tx(tx, case, action, actor, r, note, request_id, now, unit=unit, data=data)

    def apply_alarm(self, tr: AlarmTransition, device: DeviceInfo | None, now: float | None = None) -> AlarmOutcome:
        """Apply one alarm transition idempotently: open, attach to, escalate or return a case.

        Two bridges racing for the same correlation key (PostgreSQL, READ COMMITTED) meet at the
        partial unique index; the loser retries and attaches to the winner's case.
        """
        now = time.time() if now is None else now
        for attempt in range(3):
            try:
                return self._apply_alarm_once(tr, device, now)
            except StoreConflict:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _apply_alarm_once(self, tr: AlarmTransition, device: DeviceInfo | None, now: float) -> AlarmOutcome:
        with self.db.tx() as tx:
            inserted = tx.execute_rowcount(
                "INSERT INTO alarm_events (alarm_id, kind, t_ms, received_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (tr.alarm_id, tr.kind.value, ts_ms(tr.t), now),
            )
            if inserted == 0:
                return AlarmOutcome("duplicate")
            self._upsert_alarm_state(tx, tr)
            link = tx.execute("SELECT case_id FROM case_links WHERE alarm_id = ?", (tr.alarm_id,))
            if tr.kind not in (TransitionKind.RAISED, TransitionKind.ESCALATED):
                cid = int(link[0][0]) if link else None
                return AlarmOutcome("updated", cid, self._get_tx(tx, cid, now) if cid else None)
            if link:
                case = self._get_tx(tx, int(link[0][0]), now, for_update=True)
                return self._alarm_on_case(tx, case, tr, device, now=now, effect="updated")
            draft = map_alarm(self.catalog, tr, device)
            if draft is None:
                return AlarmOutcome("no_case")
            rows = tx.execute("SELECT id FROM cases WHERE corr_key = ? AND is_open = 1", (draft.corr_key,))
            if rows:
                case = self._get_tx(tx, int(rows[0][0]), now, for_update=True)
                tx.execute(
                    "INSERT INTO case_links (alarm_id, case_id, device, rule, t) VALUES (?, ?, ?, ?, ?)",
                    (tr.alarm_id, case.id, tr.device, tr.rule, tr.t),
                )
                self._audit(tx, case.id, now, "system", Role.SYSTEM.value, "attach", case.state, case.state,
                            f"alarm {tr.alarm_id} ({tr.kind.value}) on {tr.device}", None, _alarm_json(tr))
                return self._alarm_on_case(tx, case, tr, device, now=now, effect="attached")
            return self._create_from_draft(tx, tr, draft, now)

    def due_verifications(
        self, now: float | None = None, hold_s: float | None = None, grace_s: float | None = None
    ) -> list[AlarmOutcome]:
        """Sensor-verify every handled IoT case whose hold time has passed (or fail it).

        ``hold_s`` / ``grace_s`` default to the store's (``open_case_store(verify_hold_s=,
        verify_grace_s=)``); the bridge passes its ``cases`` settings.
        """
        now = time.time() if now is None else now
        hold = self.verify_hold_s if hold_s is None else hold_s
        grace = self.verify_grace_s if grace_s is None else grace_s
        with self.db.read() as tx:
            ids = [int(r[0]) for r in tx.execute(
                "SELECT id FROM cases WHERE state = ? AND source = 'iot' ORDER BY deadline, id LIMIT 500",
                (State.HANDLED.value,),
            )]
        out: list[AlarmOutcome] = []
        for cid in ids:
            with self.db.tx() as tx:
                case = self._get_tx(tx, cid, now, for_update=True)
                if case.state != State.HANDLED.value or case.handled_at is None:
                    continue
                alarms = self._alarms_tx(tx, cid)
                decision = lifecycle.verification(case.handled_at, alarms, hold, now, grace)
                if decision.verdict is Verdict.WAIT:
                    continue
                devices = tuple(sorted({a.device for a in alarms}))
                if decision.verdict is Verdict.FAIL:
                    c2 = self._transition_tx(tx, case, Action.FAIL_VERIFICATION, "system", Role.SYSTEM,
                                             decision.evidence["reason"], None, now, data=decision.evidence)
                    out.append(AlarmOutcome("updated", cid, c2, ("fail_verification",), devices))
                    continue
                c2 = self._transition_tx(tx, case, Action.VERIFY, "system", Role.SYSTEM,
                                         decision.evidence["reason"], None, now, data=decision.evidence)
                acts: tuple[str, ...] = ("verify",)
                if case.auto_close:
                    c2 = self._transition_tx(tx, c2, Action.CLOSE, "system", Role.SYSTEM,
                                             "closed after sensor verification", None, now)
                    acts += ("close",)
                out.append(AlarmOutcome("updated", cid, c2, acts, devices))
        return out

    def enqueue_notice(
        self,
        targets: Sequence[str],
        notice: dict[str, Any],
        now: float,
        window_s: float,
        escalation: tuple[str, float, dict[str, Any]] | None = None,
    ) -> list[str]:
        """Queue ``notice`` (a dict with ``key``) for each target not sent the same key within
        ``window_s``, and schedule ``escalation`` (alarm id, due time, notice) with it, in one
        transaction: a redelivered alarm neither pages twice nor loses the page. Returns the
        targets queued."""
        key = str(notice["key"])
        body = _dumps(notice)
        queued: list[str] = []
        with self.db.tx() as tx:
            for target in targets:
                dkey = f"{target}:{key}"
                rows = tx.execute("SELECT t FROM notify_log WHERE key = ?", (dkey,))
                if rows and now - float(rows[0][0]) < window_s:
                    continue
                if rows:
                    tx.execute("UPDATE notify_log SET t = ? WHERE key = ?", (now, dkey))
                else:
                    tx.execute("INSERT INTO notify_log (key, t) VALUES (?, ?)", (dkey, now))
                tx.execute(
                    "INSERT INTO notify_outbox (target, key, notice, attempts, next_t, created_t) "
                    "VALUES (?, ?, ?, 0, ?, ?)",
                    (target, key, body, now, now),
                )
                queued.append(target)
            if escalation is not None and (queued or not targets):
                alarm_id, due_t, esc = escalation
                tx.execute(
                    "INSERT INTO escalations (alarm_id, due_t, notice) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    (alarm_id, due_t, _dumps(esc)),
                )
        return queued

    def take_notices(self, now: float, lease_s: float, limit: int = 20) -> list[tuple[int, str, dict[str, Any], int]]:
        """Claim up to ``limit`` due notices for ``lease_s`` (a crashed sender's claim runs out):
        (outbox id, target, notice, attempts so far)."""
        with self.db.tx() as tx:
            rows = tx.execute(
                "SELECT id, target, notice, attempts FROM notify_outbox WHERE next_t <= ? ORDER BY next_t, id LIMIT ?",
                (now, limit),
            )
            for r in rows:
                tx.execute("UPDATE notify_outbox SET next_t = ? WHERE id = ?", (now + lease_s, r[0]))
        return [(int(r[0]), str(r[1]), orjson.loads(r[2]), int(r[3])) for r in rows]

    def notice_done(self, outbox_id: int) -> None:
        with self.db.tx() as tx:
            tx.execute("DELETE FROM notify_outbox WHERE id = ?", (outbox_id,))

    def notice_retry(self, outbox_id: int, attempts: int, next_t: float) -> None:
        with self.db.tx() as tx:
            tx.execute("UPDATE notify_outbox SET attempts = ?, next_t = ? WHERE id = ?", (attempts, next_t, outbox_id))

    def pending_notices(self) -> int:
        with self.db.read() as tx:
            return int(tx.execute("SELECT COUNT(*) FROM notify_outbox")[0][0])

    def cancel_escalation(self, alarm_id: str) -> None:
        with self.db.tx() as tx:
            tx.execute("DELETE FROM escalations WHERE alarm_id = ?", (alarm_id,))

    def take_due_escalations(self, now: float) -> list[dict[str, Any]]:
        """Remove and return the escalations due at ``now`` (one transaction: each fires once)."""
        with self.db.tx() as tx:
            rows = tx.execute("SELECT alarm_id, notice FROM escalations WHERE due_t <= ? ORDER BY due_t", (now,))
            for alarm_id, _n in rows:
                tx.execute("DELETE FROM escalations WHERE alarm_id = ?", (alarm_id,))
        return [orjson.loads(n) for _a, n in rows]

    def case_for_alarm(self, alarm_id: str, now: float | None = None) -> Case | None:
        with self.db.read() as tx:
            rows = tx.execute("SELECT case_id FROM case_links WHERE alarm_id = ?", (alarm_id,))
            return self._get_tx(tx, int(rows[0][0]), time.time() if now is None else now) if rows else None

    def dead_letter(self, topic: str, reason: str, detail: str, payload: bytes, now: float) -> None:
        """Keep a message the bridge could not use, with why (inspect with ``dead_letters``)."""
        with self.db.tx() as tx:
            tx.execute(
                "INSERT INTO case_dead_letters (t, topic, reason, detail, payload) VALUES (?, ?, ?, ?, ?)",
                (now, topic, reason, detail[:1000], payload[:65536].decode("utf-8", "replace")),
            )

    def dead_letters(self, limit: int = 100) -> list[tuple[float, str, str, str, str]]:
        with self.db.read() as tx:
            rows = tx.execute(
                "SELECT t, topic, reason, detail, payload FROM case_dead_letters ORDER BY id DESC LIMIT ?", (limit,)
            )
        return [(float(r[0]), r[1], r[2], r[3], r[4]) for r in rows]

    def remember_devices(self, devices: Sequence[DeviceInfo], now: float) -> None:
        """Keep the registry from birth messages (device -> DeviceInfo) across restarts."""
        with self.db.tx() as tx:
            for d in devices:
                info = _dumps(d.to_json())
                tx.execute(
                    "INSERT INTO device_registry (device, info, updated_at) VALUES (?, ?, ?) ON CONFLICT (device) "
                    "DO UPDATE SET info = excluded.info, updated_at = excluded.updated_at",
                    (d.id, info, now),
                )

    def known_devices(self) -> dict[str, DeviceInfo]:
        with self.db.read() as tx:
            rows = tx.execute("SELECT device, info FROM device_registry")
        out: dict[str, DeviceInfo] = {}
        for dev, info in rows:
            j = orjson.loads(info)
            out[dev] = DeviceInfo(
                id=j["id"], profile=j.get("profile", ""), kind=j.get("kind", ""), lat=j.get("lat"), lon=j.get("lon"),
                grid=j.get("grid"), component_id=j.get("component_id"), owner=j.get("owner"),
                circuit=j.get("circuit"), tags=tuple(j.get("tags", ())), interval_s=j.get("interval_s"),
            )
        return out

    # ------------------------------------------------------------ statistics

    def statistics(self, since: float, until: float, now: float | None = None, unit: str | None = None) -> Statistics:
        """Cases reported in [since, until): 及时解决率 / closure rate per unit and category,
        counts by local hour × category and by grid (high-incidence time/place/type), and the
        median time per workflow stage."""
        now = time.time() if now is None else now
        base = "created_at >= ? AND created_at < ? AND state NOT IN ('rejected', 'cancelled')"
        params: list[Any] = [since, until]
        if unit is not None:
            base += " AND unit = ?"
            params.append(unit)
        off = self.catalog.calendar.utc_offset_s
        # SQLite would rather walk a (unit, ...) index to avoid a sort for GROUP BY unit, which
        # reads the whole table; the period's created_at range is the selective part
        src = "cases" if self.dialect == "postgresql" else "cases INDEXED BY cases_created"
        if self.dialect == "postgresql":
            hour = "CAST(FLOOR((created_at + ?) / 3600.0) AS BIGINT) % 24"
        else:
            hour = "CAST((created_at + ?) / 3600 AS INTEGER) % 24"
        # one pass over the period, grouped finely, rolled up here: each extra GROUP BY query
        # would walk the period's rows again
        sums = (
            "COUNT(*), SUM(CASE WHEN state = 'closed' THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN due_at IS NOT NULL AND (handled_at IS NOT NULL OR due_at < ?) THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN handled_at IS NOT NULL AND due_at IS NOT NULL AND handled_at <= due_at THEN 1 ELSE 0 END)"
        )
        with self.db.read() as tx:
            rows = tx.execute(
                f"SELECT unit, service_code, grid, {hour} AS h, {sums} FROM {src} WHERE {base} "
                "GROUP BY unit, service_code, grid, h",
                [off, now, *params],
            )
            medians = self._stage_medians(tx, src, base, params)
        acc: dict[tuple[str, str], list[int]] = {}
        hours: dict[tuple[int, str], int] = {}
        grids: dict[str, int] = {}
        for unit_id, sc, grid, h, n, closed, due, on_time in rows:
            vals = (int(n), int(closed or 0), int(due or 0), int(on_time or 0))
            for key in (("unit", str(unit_id)), ("cat", str(sc)), ("all", "all")):
                a = acc.setdefault(key, [0, 0, 0, 0])
                for k in range(4):
                    a[k] += vals[k]
            hours[(int(h), str(sc))] = hours.get((int(h), str(sc)), 0) + vals[0]
            if grid is not None:
                grids[str(grid)] = grids.get(str(grid), 0) + vals[0]

        def rows_of(kind: str) -> list[RateRow]:
            return [self._rate((key, *v)) for (k, key), v in sorted(acc.items()) if k == kind]

        total = rows_of("all")
        return Statistics(
            since, until, rows_of("unit"), rows_of("cat"),
            [(h, sc, n) for (h, sc), n in sorted(hours.items())],
            sorted(grids.items(), key=lambda kv: (-kv[1], kv[0]))[:100],
            medians,
            total[0] if total else RateRow("all", 0, 0, 0, 0, None, None),
        )

    _STAGES = (
        ("file", "filed_at", "created_at"),
        ("dispatch", "dispatched_at", "filed_at"),
        ("handle", "handled_at", "dispatched_at"),
        ("verify", "verified_at", "handled_at"),
        ("close", "closed_at", "verified_at"),
    )

    def _stage_medians(self, tx: Tx, src: str, base: str, params: list[Any]) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        if self.dialect == "postgresql":
            cols = ", ".join(
                f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {end} - {start})" for _n, end, start in self._STAGES
            )
            row = tx.execute(f"SELECT {cols} FROM {src} WHERE {base}", params)[0]
            for (name, _e, _s), v in zip(self._STAGES, row, strict=True):
                out[name] = None if v is None else float(v)
            return out
        rows = tx.execute(
            f"SELECT filed_at - created_at, dispatched_at - filed_at, handled_at - dispatched_at, "
            f"verified_at - handled_at, closed_at - verified_at FROM {src} WHERE {base}",
            params,
        )
        for i, (name, _e, _s) in enumerate(self._STAGES):
            vals = [r[i] for r in rows if r[i] is not None]
            out[name] = float(pystats.median(vals)) if vals else None
        return out

    @staticmethod
    def _rate(r: Sequence[Any]) -> RateRow:
        total, closed, due, on_time = (int(x or 0) for x in r[1:5])
        return RateRow(str(r[0]), total, closed, due, on_time,
                       on_time / due if due else None, closed / total if total else None)

    # ------------------------------------------------------------ internals

    def _get_tx(self, tx: Tx, case_id: int, now: float, for_update: bool = False) -> Case:
        lock = " FOR UPDATE" if for_update and self.dialect == "postgresql" else ""
        rows = tx.execute(f"SELECT {_COLUMNS} FROM cases WHERE id = ?{lock}", (case_id,))
        if not rows:
            raise CaseNotFound(case_id)
        return _case(rows[0], now)

    def _alarms_tx(self, tx: Tx, case_id: int) -> list[AlarmView]:
        rows = tx.execute(
            "SELECT s.alarm_id, s.device, s.rule, s.active, s.severity, s.last_t, s.value, s.cleared_at, "
            "s.raised_at, s.evidence FROM case_links l JOIN alarm_state s ON s.alarm_id = l.alarm_id "
            "WHERE l.case_id = ? ORDER BY l.t",
            (case_id,),
        )
        return [_alarm_view(r) for r in rows]

    def _insert_case(
        self, tx: Tx, *, source: str, source_key: str | None, cat: CategoryDef, urgency: Urgency, unit: str,
        grid: str | None, street: str | None, district: str | None, device: str | None, rule: str | None,
        severity: str | None, corr_key: str | None, auto_close: bool, lat: float | None, lon: float | None,
        address: str | None, description: str, reporter: str | None, data: dict[str, Any], now: float,
    ) -> int:
        limits = cat.limits_for(urgency)
        dl = lifecycle.initial_deadline(limits, self.catalog.calendar, now)
        return tx.insert_id(
            "INSERT INTO cases (source, source_key, kind, category_code, service_code, category_name, urgency, state, "
            "is_open, unit, grid, street, district, device, rule, severity, corr_key, auto_close, lat, lon, address, "
            "description, reporter, created_at, deadline, updated_at, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (source, source_key, cat.kind.value, cat.code, cat.service_code, cat.name, urgency.value,
             State.REPORTED.value, unit, grid, street, district, device, rule, severity, corr_key, int(auto_close),
             lat, lon, address, description, reporter, now, dl, now, _dumps(data)),
        )

    def _audit(self, tx: Tx, case_id: int, t: float, actor: str, role: str | None, action: str,  # noqa: PLR0917
               from_state: str | None, to_state: str, note: str, request_id: str | None,
               data: dict[str, Any] | None) -> None:
        tx.execute(
            "INSERT INTO case_audit (case_id, t, actor, role, action, from_state, to_state, note, request_id, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (case_id, t, actor, role, action, from_state, to_state, note, request_id, _dumps(data or {})),
        )

    def _transition_tx(self, tx: Tx, case: Case, action: Action | str, actor: str, role: Role | None,  # noqa: PLR0917
                       note: str,
                       request_id: str | None, now: float, *, unit: str | None = None,
                       data: dict[str, Any] | None = None) -> Case:
        pos = workflow.apply(case.position, action, role)
        act = Action(action)
        if unit is not None:
            if act is not Action.DISPATCH:
                raise IllegalTransition(case.state, act.value, (), "only a dispatch may name a unit")
            if self.catalog.unit(unit) is None:
                raise StoreError(f"unknown unit {unit!r}")
        cat = self.catalog.category(case.service_code)
        limits = cat.limits_for(Urgency(case.urgency))
        clocks = lifecycle.after(
            Clocks(case.deadline, case.due_at, case.filed_at, case.dispatched_at, case.handled_at, case.verified_at,
                   case.closed_at, case.extensions),
            pos.state, act, limits=limits, cal=self.catalog.calendar, now=now,
        )
        new_unit = unit or case.unit
        tx.execute(
            "UPDATE cases SET state = ?, is_open = ?, extension_pending = ?, extensions = ?, unit = ?, deadline = ?, "
            "due_at = ?, filed_at = ?, dispatched_at = ?, handled_at = ?, verified_at = ?, closed_at = ?, "
            "updated_at = ?, version = version + 1 WHERE id = ?",
            (pos.state.value, int(pos.state.is_open), int(pos.extension_pending), clocks.extensions, new_unit,
             NO_DEADLINE if clocks.deadline is None else clocks.deadline, clocks.due_at, clocks.filed_at,
             clocks.dispatched_at, clocks.handled_at, clocks.verified_at, clocks.closed_at, now, case.id),
        )
        audit_data = dict(data or {})
        if new_unit != case.unit:
            audit_data["unit"] = {"from": case.unit, "to": new_unit}
        self._audit(tx, case.id, now, actor, role.value if role else None, act.value, case.state, pos.state.value,
                    note, request_id, audit_data)
        return self._get_tx(tx, case.id, now)

    def _upsert_alarm_state(self, tx: Tx, tr: AlarmTransition) -> None:
        active = tr.kind is not TransitionKind.CLEARED
        rows = tx.execute("SELECT last_t FROM alarm_state WHERE alarm_id = ?", (tr.alarm_id,))
        if not rows:
            tx.execute(
                "INSERT INTO alarm_state (alarm_id, device, rule, active, acked, severity, raised_at, cleared_at, "
                "last_kind, last_t, value, evidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (tr.alarm_id, tr.device, tr.rule, int(active), int(tr.kind is TransitionKind.ACKNOWLEDGED),
                 tr.severity.value, tr.t if tr.kind is TransitionKind.RAISED else None,
                 tr.t if not active else None, tr.kind.value, tr.t, tr.value, _dumps(tr.evidence)),
            )
            return
        if float(rows[0][0]) > tr.t:
            return  # an older transition arriving late does not roll the alarm back
        if tr.kind is TransitionKind.ACKNOWLEDGED:
            tx.execute("UPDATE alarm_state SET acked = 1, last_t = ? WHERE alarm_id = ?", (tr.t, tr.alarm_id))
            return
        tx.execute(
            "UPDATE alarm_state SET active = ?, severity = ?, last_kind = ?, last_t = ?, value = ?, evidence = ?, "
            "raised_at = CASE WHEN ? THEN ? ELSE raised_at END, cleared_at = CASE WHEN ? THEN ? ELSE cleared_at END "
            "WHERE alarm_id = ?",
            (int(active), tr.severity.value, tr.kind.value, tr.t, tr.value, _dumps(tr.evidence),
             tr.kind is TransitionKind.RAISED, tr.t, not active, tr.t, tr.alarm_id),
        )

    def _create_from_draft(self, tx: Tx, tr: AlarmTransition, draft: CaseDraft, now: float) -> AlarmOutcome:
        case_id = self._insert_case(
            tx, source="iot", source_key=f"alarm:{tr.alarm_id}", cat=draft.category, urgency=draft.urgency,
            unit=draft.unit, grid=draft.locality.grid, street=draft.locality.street,
            district=draft.locality.district, device=tr.device, rule=tr.rule, severity=tr.severity.value,
            corr_key=draft.corr_key, auto_close=draft.auto_close, lat=draft.lat, lon=draft.lon,
            address=None, description=draft.description, reporter="iot",
            data={"alarm": _alarm_json(tr)}, now=now,
        )
        tx.execute(
            "INSERT INTO case_links (alarm_id, case_id, device, rule, t) VALUES (?, ?, ?, ?, ?)",
            (tr.alarm_id, case_id, tr.device, tr.rule, tr.t),
        )
        self._audit(tx, case_id, now, "system", Role.SYSTEM.value, "report", None, State.REPORTED.value,
                    f"raised by alarm {tr.alarm_id}", None, _alarm_json(tr))
        case = self._get_tx(tx, case_id, now)
        actions: list[str] = []
        if draft.auto_dispatch:
            case, acts = self._auto_dispatch(tx, case, now, f"auto: {tr.severity.value} {tr.rule}")
            actions += acts
        return AlarmOutcome("created", case_id, case, tuple(actions), (tr.device,))

    def _auto_dispatch(self, tx: Tx, case: Case, now: float, note: str) -> tuple[Case, list[str]]:
        acts: list[str] = []
        if case.state == State.REPORTED.value:
            case = self._transition_tx(tx, case, Action.FILE, "system", Role.SYSTEM, note, None, now)
            acts.append("file")
        if case.state == State.FILED.value:
            case = self._transition_tx(tx, case, Action.DISPATCH, "system", Role.SYSTEM, note, None, now)
            acts.append("dispatch")
        return case, acts

    def _alarm_on_case(self, tx: Tx, case: Case, tr: AlarmTransition, device: DeviceInfo | None, *, now: float,
                       effect: str) -> AlarmOutcome:
        """A raised/escalated alarm on a case that exists: escalate urgency, auto-dispatch, or fail a fix."""
        actions: list[str] = []
        if not case.is_open:
            return AlarmOutcome(effect, case.id, case)
        draft = map_alarm(self.catalog, tr, device)
        if draft is not None:
            rank = {u: i for i, u in enumerate(Urgency)}
            if rank[draft.urgency] > rank[Urgency(case.urgency)]:
                tx.execute("UPDATE cases SET urgency = ?, severity = ?, updated_at = ?, version = version + 1 "
                           "WHERE id = ?", (draft.urgency.value, tr.severity.value, now, case.id))
                self._audit(tx, case.id, now, "system", Role.SYSTEM.value, "escalate", case.state, case.state,
                            f"urgency {case.urgency} -> {draft.urgency.value}", None, _alarm_json(tr))
                case = self._get_tx(tx, case.id, now)
            if draft.auto_dispatch and case.state in (State.REPORTED.value, State.FILED.value):
                case, actions = self._auto_dispatch(tx, case, now, f"auto: {tr.severity.value} {tr.rule}")
        if case.state == State.HANDLED.value:
            reason = "alarm raised again after the fix was reported"
            case = self._transition_tx(tx, case, Action.FAIL_VERIFICATION, "system", Role.SYSTEM,
                                       reason, None, now, data={"reason": reason, "alarm": _alarm_json(tr)})
            actions.append("fail_verification")
        return AlarmOutcome(effect, case.id, case, tuple(actions), (tr.device,))


def _alarm_json(tr: AlarmTransition) -> dict[str, Any]:
    return {"alarm_id": tr.alarm_id, "device": tr.device, "rule": tr.rule, "kind": tr.kind.value,
            "severity": tr.severity.value, "t": tr.t, "value": tr.value, "evidence": tr.evidence}


def _alarm_view(r: Sequence[Any]) -> AlarmView:
    return AlarmView(r[0], r[1], r[2], bool(r[3]), r[4], float(r[5]), r[6], r[7], r[8],
                     orjson.loads(r[9]) if r[9] else {})


def open_case_store(url: str, catalog: Catalog | None = None, *, verify_hold_s: float = 600.0,
                    verify_grace_s: float = 0.0, migrate_schema: bool = True) -> CaseStore:
    """Open (and migrate) a case store: ``sqlite:///path.db`` or ``postgresql://user@host/db``.

    Without ``catalog`` the example tables ``configs/categories.yaml`` and ``configs/units.yaml``
    of this checkout are used.
    """
    db = connect(url)
    try:
        if migrate_schema:
            migrate(db)
    except Exception:
        db.close()
        raise
    return CaseStore(db, catalog if catalog is not None else load_catalog(), verify_hold_s, verify_grace_s)
