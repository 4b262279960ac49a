"""The case store: cases, their audit trail and alarm links over SQLite or PostgreSQL.

Alarm transitions: the store reads what :func:`case_bridge.policy.decide` needs, lets it
decide, and executes its commands; no alarm -> case rule lives here. Statistics, the
notification outbox and the device registry share the database (``stats``, ``notices``,
``devices``) from their own modules.

Every write is one transaction that also writes its audit row(s), so a crash leaves either
both or neither. IoT alarms are applied idempotently: an alarm transition is keyed by
(alarm_id, kind, t) and an alarm links to at most one case (``case_links.alarm_id`` is the
primary key), so redelivery after a crash changes nothing. A partial unique index keeps one
open case per correlation key. See :mod:`case_bridge` for the public API summary.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import orjson

from case_bridge import deadlines, lifecycle, media, policy, workflow
from case_bridge.config import Catalog, CategoryDef, UnitDef, Urgency, load_catalog
from case_bridge.db import PostgresDb, SqliteDb, Tx, connect, migrate
from case_bridge.errors import CaseConflict, CaseNotFound, StoreConflict, StoreError
from case_bridge.lifecycle import NO_DEADLINE, AlarmView, Clocks
from case_bridge.mapping import CaseDraft, locality, responsible_unit
from case_bridge.model import COLUMNS, NAMES, AlarmOutcome, AuditEntry, Case, Page
from case_bridge.notices import NoticeOutbox
from case_bridge.registry import DeviceRegistry
from case_bridge.stats import CaseStatistics
from case_bridge.workflow import Action, Role, State, parse_role
from contracts.alarms import AlarmTransition, TransitionKind
from contracts.payloads import ts_ms
from contracts.reading import DeviceInfo

_COLUMNS = COLUMNS
_NAMES = NAMES


def _case(row: Sequence[Any], now: float) -> Case:
    d = dict(zip(_NAMES, row, strict=True))
    dl = float(d["deadline"])
    deadline = None if dl >= NO_DEADLINE else dl
    del d["is_open"]
    d["extension_pending"] = bool(d["extension_pending"])
    d["auto_close"] = bool(d["auto_close"])
    d["overridden"] = bool(d["overridden"])
    d["deadline"] = deadline
    d["data"] = orjson.loads(d["data"]) if d["data"] else {}
    return Case(**d, overdue=deadlines.is_overdue(deadline, now),
                time_to_deadline_s=deadlines.time_to_deadline(deadline, now))


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
        self.policy = policy.PolicyConfig(catalog, verify_hold_s, verify_grace_s)
        self.notices = NoticeOutbox(db)
        self.devices = DeviceRegistry(db)
        self.stats = CaseStatistics(db, catalog.calendar.utc_offset_s)

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
            return self._alarms_tx(tx, case_id)

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

    def urges_since(self, after: float, until: float, limit: int = 200) -> list[tuple[AuditEntry, Case]]:
        """督办 entries written in (after, until] with their cases, oldest first, for the bridge to notify.

        An urge bumps its case's ``updated_at``, so the ``cases_updated`` index narrows the search
        to recently changed cases before their audit rows are read (no scan of the whole trail).
        """
        with self.db.read() as tx:
            rows = tx.execute(
                "SELECT a.id, a.case_id, a.t, a.actor, a.role, a.action, a.from_state, a.to_state, a.note, "
                "a.request_id, a.data FROM cases c JOIN case_audit a ON a.case_id = c.id "
                "WHERE c.updated_at > ? AND a.action = ? AND a.t > ? AND a.t <= ? ORDER BY a.id LIMIT ?",
                (after, Action.URGE.value, after, until, limit),
            )
            out: list[tuple[AuditEntry, Case]] = []
            for r in rows:
                entry = AuditEntry(int(r[0]), int(r[1]), float(r[2]), r[3], r[4], r[5], r[6], r[7], r[8], r[9],
                                   orjson.loads(r[10]))
                out.append((entry, self._get_tx(tx, entry.case_id, until)))
        return out

    def seats(self) -> dict[str, tuple[Role, ...]]:
        """The city's console seat -> workflow roles table (``roles:`` in the category table)."""
        return self.catalog.table.roles.seats()

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
        override_reason: str | None = None,
        readings: Sequence[policy.StreetReading] = (),
    ) -> Case:
        """Apply one workflow action, with its audit row, in one transaction.

        Raises :class:`IllegalTransition` (state or role forbids it), :class:`CaseNotFound`,
        :class:`CaseConflict` (``expected_version`` is stale). A repeated ``request_id`` for the
        same case returns the case unchanged (safe client retries). ``unit`` re-targets a
        dispatch (派遣 to another unit). A verify/close of a sensor case while a linked alarm is
        active raises :class:`SensorNotClear` unless a supervisor gives ``override_reason``
        (:func:`case_bridge.policy.sensor_gate`), and so does one whose latest ``readings`` (the
        caller reads them from the time-series store) are outside the clear condition; the
        override gets its own audit row. ``urge`` (督办) is refused unless the case is overdue or
        due within the city's ``roles.urge_window_h``.
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
            workflow.apply(case.position, action, r)  # state and role first: their refusal says more
            override = policy.sensor_gate(case, action, r, self._alarms_tx(tx, case_id), override_reason,
                                          readings=readings)
            media.photo_gate(case.state, action, r, self.catalog.category(case.service_code).photos_required,
                             media.media_of(case.data))
            if override is not None:
                tx.execute("UPDATE cases SET overridden = 1 WHERE id = ?", (case_id,))
                self._audit(tx, case_id, now, actor, r.value if r else None, "override", case.state, case.state,
                            override["reason"], None, override)
            return self._transition_tx(tx, case, action, actor, r, note, request_id, now, unit=unit, data=data)

    def add_media(self, case_id: int, entry: dict[str, Any], actor: str, role: Role | str | None,
                  now: float | None = None) -> Case:
        """Record one stored file on the case (``data["media"]``) with an audit row, in one transaction.

        The file is already written (content-addressed, see :mod:`case_bridge.media`); this only makes
        it part of the case. The case's version is left alone: a photo does not race a workflow action.
        """
        now = time.time() if now is None else now
        r = parse_role(role) if role is not None else None
        with self.db.tx() as tx:
            case = self._get_tx(tx, case_id, now, for_update=True)
            data = dict(case.data)
            data["media"] = [*media.media_of(case.data), entry]
            tx.execute("UPDATE cases SET data = ?, updated_at = ? WHERE id = ?", (_dumps(data), now, case_id))
            self._audit(tx, case_id, now, actor, r.value if r else None, "attach_media", case.state, case.state,
                        f"{entry.get('stage')} photo {entry.get('id')}", None, entry)
            return self._get_tx(tx, case_id, now)

    def apply_alarm(self, tr: AlarmTransition, device: DeviceInfo | None, now: float | None = None) -> AlarmOutcome:
        """Apply one alarm transition idempotently, as :func:`case_bridge.policy.decide` says.

        Two bridges racing for the same correlation key (PostgreSQL, READ COMMITTED) meet at the
        partial unique index; the loser retries, now sees the winner's case, and attaches to it.
        """
        now = time.time() if now is None else now
        for attempt in range(3):
            try:
                return self._apply_alarm_once(tr, device, now)
            except StoreConflict:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def apply_alarms(self, items: Sequence[tuple[AlarmTransition, DeviceInfo | None]],
                     now: float | None = None) -> list[AlarmOutcome]:
        """Apply a backlog of alarm transitions, in order, in ONE transaction (a storm: one commit, not one each).

        Each transition is decided exactly as :meth:`apply_alarm` decides it, seeing the ones before
        it in the batch. All or nothing: on a uniqueness race (:class:`StoreConflict`) the batch is
        rolled back and applied one by one, each with :meth:`apply_alarm`'s retries; any other error
        rolls the batch back and propagates (the caller retries or splits it). On PostgreSQL the batch's
        writes are pipelined (sent with the next read, not one round trip each); ``bench/cases.py``'s
        storm measures it against the same batches unpipelined (a single alarm's transaction is not
        pipelined: it gained nothing in an A/B on this box).
        """
        now = time.time() if now is None else now
        try:
            with self.db.tx(pipeline=True) as tx:
                return [self._apply_alarm_tx(tx, tr, device, now) for tr, device in items]
        except StoreConflict:
            return [self.apply_alarm(tr, device, now) for tr, device in items]

    def _apply_alarm_once(self, tr: AlarmTransition, device: DeviceInfo | None, now: float) -> AlarmOutcome:
        with self.db.tx() as tx:
            return self._apply_alarm_tx(tx, tr, device, now)

    def _apply_alarm_tx(self, tx: Tx, tr: AlarmTransition, device: DeviceInfo | None, now: float) -> AlarmOutcome:
        key = policy.lookup_key(tr, device, self.policy)
        situation = self._situation_tx(tx, tr, device, key, now)
        decision = policy.decide(tr, situation, self.policy, now)
        return self._execute_tx(tx, decision, now, (situation.linked, situation.correlated))

    def _situation_tx(self, tx: Tx, tr: AlarmTransition, device: DeviceInfo | None, key: str | None,
                      now: float) -> policy.Situation:
        """Everything :func:`policy.decide` needs about ``tr``, read up front in the write transaction:
        the alarm's bookkeeping in one statement, then its case (row-locked on PostgreSQL)."""
        lock = " FOR UPDATE OF c" if self.dialect == "postgresql" else ""
        rows = tx.execute(
            "SELECT EXISTS (SELECT 1 FROM alarm_events WHERE alarm_id = ? AND kind = ? AND t_ms = ?), "
            "(SELECT last_t FROM alarm_state WHERE alarm_id = ?), "
            "(SELECT case_id FROM case_links WHERE alarm_id = ?)",
            (tr.alarm_id, tr.kind.value, ts_ms(tr.t), tr.alarm_id, tr.alarm_id),
        )
        seen, last_t, link = rows[0]
        if seen:
            return policy.Situation(seen=True)
        linked: Case | None = None
        correlated: Case | None = None
        if link is not None or key is not None:
            where = "c.id = ?" if link is not None else "c.corr_key = ? AND c.is_open = 1"
            cases = tx.execute(f"SELECT {_COLUMNS} FROM cases c WHERE {where}{lock}",
                               (int(link),) if link is not None else (key,))
            found = _case(cases[0], now) if cases else None
            if link is not None:
                linked = found
            else:
                correlated = found
        return policy.Situation(False, None if last_t is None else float(last_t), linked, correlated, device)

    def _execute_tx(self, tx: Tx, decision: policy.Decision, now: float, known: Iterable[Case | None] = ()
                    ) -> AlarmOutcome:
        """Carry out the policy's commands, in order, inside the caller's transaction.

        ``known`` are cases read in this transaction and not changed since (saves re-reading them).
        """
        latest = {c.id: c for c in known if c is not None}
        new_id: int | None = None

        def cid(case_id: int) -> int:
            if case_id != policy.NEW_CASE:
                return case_id
            assert new_id is not None, "a command on a case this decision has not opened yet"
            return new_id

        def case_of(case_id: int) -> Case:
            if case_id not in latest:
                latest[case_id] = self._get_tx(tx, case_id, now)
            return latest[case_id]

        for cmd in decision.commands:
            if isinstance(cmd, policy.RecordTransition):
                tr = cmd.alarm
                tx.write("INSERT INTO alarm_events (alarm_id, kind, t_ms, received_at) VALUES (?, ?, ?, ?)",
                           (tr.alarm_id, tr.kind.value, ts_ms(tr.t), now))
            elif isinstance(cmd, policy.UpdateAlarmState):
                self._write_alarm_state(tx, cmd.alarm, cmd.how)
            elif isinstance(cmd, policy.OpenCase):
                new_id = self._open_case(tx, cmd.alarm, cmd.draft, now)
            elif isinstance(cmd, policy.LinkAlarm):
                tr = cmd.alarm
                state = case_of(cmd.case_id).state
                self._link(tx, tr, cmd.case_id)
                self._audit(tx, cmd.case_id, now, "system", Role.SYSTEM.value, "attach", state, state,
                            f"alarm {tr.alarm_id} ({tr.kind.value}) on {tr.device}", None, policy.alarm_json(tr))
            elif isinstance(cmd, policy.Escalate):
                state = case_of(cmd.case_id).state
                tx.write("UPDATE cases SET urgency = ?, severity = ?, description = ?, updated_at = ?, "
                           "version = version + 1 WHERE id = ?",
                           (cmd.to_urgency.value, cmd.alarm.severity.value, cmd.description, now, cmd.case_id))
                latest.pop(cmd.case_id)
                self._audit(tx, cmd.case_id, now, "system", Role.SYSTEM.value, "escalate", state, state,
                            f"urgency {cmd.from_urgency.value} -> {cmd.to_urgency.value}", None,
                            policy.alarm_json(cmd.alarm))
            else:
                target = cid(cmd.case_id)
                latest[target] = self._transition_tx(tx, case_of(target), cmd.action, "system", Role.SYSTEM,
                                                     cmd.note, None, now, data=cmd.data)
        case_id = None if decision.case_id is None else cid(decision.case_id)
        final = None if case_id is None else case_of(case_id)
        return AlarmOutcome(decision.effect, case_id, final, decision.actions, decision.devices)

    def due_verifications(
        self, now: float | None = None, hold_s: float | None = None, grace_s: float | None = None
    ) -> list[AlarmOutcome]:
        """Sensor-verify every handled IoT case whose hold time has passed (or fail it).

        ``hold_s`` / ``grace_s`` default to the store's (``open_case_store(verify_hold_s=,
        verify_grace_s=)``); the bridge passes its ``cases`` settings.
        """
        now = time.time() if now is None else now
        cfg = replace(self.policy, verify_hold_s=self.policy.verify_hold_s if hold_s is None else hold_s,
                      verify_grace_s=self.policy.verify_grace_s if grace_s is None else grace_s)
        with self.db.read() as tx:
            ids = [int(r[0]) for r in tx.execute(
                "SELECT id FROM cases WHERE state = ? AND source = 'iot' ORDER BY deadline, id LIMIT 500",
                (State.HANDLED.value,),
            )]
        out: list[AlarmOutcome] = []
        for cid in ids:
            with self.db.tx() as tx:
                due = policy.VerificationDue(self._get_tx(tx, cid, now, for_update=True),
                                             tuple(self._alarms_tx(tx, cid)))
                decision = policy.decide(due, policy.Situation(), cfg, now)
                if decision.commands:
                    out.append(self._execute_tx(tx, decision, now, (due.case,)))
        return out

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
        tx.write(
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
        workflow.check_details(case.state, act, note, case.unit, unit)
        if act is Action.URGE and role is not Role.SYSTEM:
            workflow.check_urge(case.state, case.deadline, now, self.catalog.table.roles.urge_window_h * 3600.0)
        if unit is not None and self.catalog.unit(unit) is None:
            raise StoreError(f"unknown unit {unit!r}")
        cat = self.catalog.category(case.service_code)
        limits = cat.limits_for(Urgency(case.urgency))
        reassign_clock = self.catalog.reassign_clock(cat)
        clocks = lifecycle.after(
            Clocks(case.deadline, case.due_at, case.filed_at, case.dispatched_at, case.handled_at, case.verified_at,
                   case.closed_at, case.extensions),
            pos.state, act, limits=limits, cal=self.catalog.calendar, now=now, reassign_clock=reassign_clock,
        )
        new_unit = unit or case.unit
        tx.write(
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
        if act is Action.REASSIGN:  # which 改派 rule applied, so the statistics can be read right
            audit_data["deadline_rule"] = reassign_clock
        if act is Action.URGE:  # how late the case was when urged, for the notice and the statistics
            audit_data.update(unit=case.unit, deadline=case.deadline,
                              overdue_s=None if case.deadline is None else round(now - case.deadline, 1))
        self._audit(tx, case.id, now, actor, role.value if role else None, act.value, case.state, pos.state.value,
                    note, request_id, audit_data)
        return self._get_tx(tx, case.id, now)

    def _write_alarm_state(self, tx: Tx, tr: AlarmTransition, how: policy.AlarmUpdate) -> None:
        active = tr.kind is not TransitionKind.CLEARED
        if how is policy.AlarmUpdate.INSERT:
            tx.write(
                "INSERT INTO alarm_state (alarm_id, device, rule, active, acked, severity, raised_at, cleared_at, "
                "last_kind, last_t, value, evidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (tr.alarm_id, tr.device, tr.rule, int(active), int(tr.kind is TransitionKind.ACKNOWLEDGED),
                 tr.severity.value, tr.t if tr.kind is TransitionKind.RAISED else None,
                 tr.t if not active else None, tr.kind.value, tr.t, tr.value, _dumps(tr.evidence)),
            )
        elif how is policy.AlarmUpdate.ACK:
            tx.write("UPDATE alarm_state SET acked = 1 WHERE alarm_id = ?", (tr.alarm_id,))
        else:
            tx.write(
                "UPDATE alarm_state SET active = ?, severity = ?, last_kind = ?, last_t = ?, value = ?, evidence = ?, "
                "raised_at = CASE WHEN ? THEN ? ELSE raised_at END, "
                "cleared_at = CASE WHEN ? THEN ? ELSE cleared_at END "
                "WHERE alarm_id = ?",
                (int(active), tr.severity.value, tr.kind.value, tr.t, tr.value, _dumps(tr.evidence),
                 tr.kind is TransitionKind.RAISED, tr.t, not active, tr.t, tr.alarm_id),
            )

    def _link(self, tx: Tx, tr: AlarmTransition, case_id: int) -> None:
        tx.write("INSERT INTO case_links (alarm_id, case_id, device, rule, t) VALUES (?, ?, ?, ?, ?)",
                   (tr.alarm_id, case_id, tr.device, tr.rule, tr.t))

    def _open_case(self, tx: Tx, tr: AlarmTransition, draft: CaseDraft, now: float) -> int:
        case_id = self._insert_case(
            tx, source="iot", source_key=f"alarm:{tr.alarm_id}", cat=draft.category, urgency=draft.urgency,
            unit=draft.unit, grid=draft.locality.grid, street=draft.locality.street,
            district=draft.locality.district, device=tr.device, rule=tr.rule, severity=tr.severity.value,
            corr_key=draft.corr_key, auto_close=draft.auto_close, lat=draft.lat, lon=draft.lon,
            address=None, description=draft.description, reporter="iot",
            data={"alarm": policy.alarm_json(tr)}, now=now,
        )
        self._link(tx, tr, case_id)
        self._audit(tx, case_id, now, "system", Role.SYSTEM.value, "report", None, State.REPORTED.value,
                    f"raised by alarm {tr.alarm_id}", None, policy.alarm_json(tr))
        return case_id


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
