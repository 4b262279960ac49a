"""Cases that a stream of alarm transitions would have opened, for ``citywatch backtest``.

Parity with the live bridge is structural: every transition goes through the bridge's own
:func:`case_bridge.policy.decide` with the same :class:`~case_bridge.policy.PolicyConfig`
(category table, correlation settings) and the device registry the bridge would hold, and
:class:`CaseBook` carries out the returned commands in memory the way
:class:`case_bridge.store.CaseStore` carries them out in SQL. So dedup, correlation (per
device, incident, grid, circuit or whatever a category declares), attachment and escalation
are the live bridge's, not a copy.

History has no handlers. With ``fixed_on_clear`` (the default, for a report over weeks) a
case whose linked alarms have all cleared counts as fixed and closed, so the next raise of
its key opens a new case; without it cases stay open as they do in a bridge nobody works
on, which is what a parity test compares against.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import assert_never

from case_bridge import workflow
from case_bridge.config import Catalog, load_catalog
from case_bridge.mapping import CaseDraft
from case_bridge.model import Case
from case_bridge.policy import (
    NEW_CASE,
    AlarmUpdate,
    Escalate,
    LinkAlarm,
    OpenCase,
    PolicyConfig,
    RecordTransition,
    Situation,
    Transition,
    UpdateAlarmState,
    decide,
    lookup_key,
)
from case_bridge.workflow import Role, State
from contracts.alarms import AlarmTransition, TransitionKind
from contracts.payloads import ts_ms
from contracts.reading import DeviceInfo


@cache
def _default_catalog() -> Catalog:
    return load_catalog()


@dataclass(frozen=True, slots=True)
class PredictedCase:
    """One case the bridge would have opened: what a parity check compares with the case store."""

    id: int
    service_code: str
    corr_key: str
    device: str  # the device whose alarm opened it
    rule: str  # the alarm rule that opened it
    severity: str  # as the store keeps it: the opening alarm's, raised by escalations
    urgency: str
    state: str
    opened_t: float
    alarms: tuple[str, ...]  # linked alarm ids, in link order


@dataclass(slots=True)
class CaseBook:
    """The case store's state as the policy reads it, in memory; :meth:`apply` mirrors ``apply_alarm``."""

    config: PolicyConfig
    registry: Mapping[str, DeviceInfo]
    fixed_on_clear: bool = True
    seen: set[tuple[str, str, int]] = field(default_factory=set)
    last_t: dict[str, float] = field(default_factory=dict)
    active: dict[str, bool] = field(default_factory=dict)
    link: dict[str, int] = field(default_factory=dict)
    cases: dict[int, Case] = field(default_factory=dict)
    alarms_of: dict[int, list[str]] = field(default_factory=dict)
    open_key: dict[str, int] = field(default_factory=dict)

    def situation(self, tr: AlarmTransition) -> Situation:
        """What ``CaseStore._situation_tx`` reads: dedup, the alarm's last time, linked or correlated case."""
        device = self.registry.get(tr.device)
        if (tr.alarm_id, tr.kind.value, ts_ms(tr.t)) in self.seen:
            return Situation(seen=True)
        linked_id = self.link.get(tr.alarm_id)
        linked = self.cases[linked_id] if linked_id is not None else None
        correlated = None
        if linked is None:
            key = lookup_key(tr, device, self.config)
            cid = self.open_key.get(key) if key is not None else None
            correlated = self.cases[cid] if cid is not None else None
        return Situation(False, self.last_t.get(tr.alarm_id), linked, correlated, device)

    def apply(self, tr: AlarmTransition) -> str:
        """One transition through :func:`decide`; returns the decision's effect."""
        decision = decide(tr, self.situation(tr), self.config, tr.t)
        new_id: int | None = None
        for cmd in decision.commands:
            if isinstance(cmd, RecordTransition):
                self.seen.add((cmd.alarm.alarm_id, cmd.alarm.kind.value, ts_ms(cmd.alarm.t)))
            elif isinstance(cmd, UpdateAlarmState):
                if cmd.how is not AlarmUpdate.ACK:
                    self.last_t[cmd.alarm.alarm_id] = cmd.alarm.t
                    self.active[cmd.alarm.alarm_id] = cmd.alarm.kind is not TransitionKind.CLEARED
            elif isinstance(cmd, OpenCase):
                new_id = self._open(cmd.alarm, cmd.draft)
            elif isinstance(cmd, LinkAlarm):
                self._link(cmd.alarm.alarm_id, cmd.case_id)
            elif isinstance(cmd, Escalate):
                c = self.cases[cmd.case_id]
                self.cases[c.id] = replace(c, urgency=cmd.to_urgency.value, severity=cmd.alarm.severity.value)
            elif isinstance(cmd, Transition):
                target = new_id if cmd.case_id == NEW_CASE else cmd.case_id
                assert target is not None, "a command on a case this decision has not opened yet"
                c = self.cases[target]
                pos = workflow.apply(c.position, cmd.action, Role.SYSTEM)
                self._set_state(c, pos.state, pos.extension_pending)
            else:  # a new policy command must be carried out here too (mypy --strict checks this)
                assert_never(cmd)
        if self.fixed_on_clear and tr.kind is TransitionKind.CLEARED:
            self._fix_if_clear(tr.alarm_id)
        return decision.effect

    def predicted(self) -> list[PredictedCase]:
        return [
            PredictedCase(c.id, c.service_code, c.corr_key or "", c.device or "", c.rule or "", c.severity or "",
                          c.urgency, c.state, c.created_at, tuple(self.alarms_of[c.id]))
            for c in self.cases.values()
        ]

    def _open(self, tr: AlarmTransition, draft: CaseDraft) -> int:
        cid = len(self.cases) + 1
        cat = draft.category
        self.cases[cid] = Case(
            id=cid, source="iot", source_key=f"alarm:{tr.alarm_id}", kind=cat.kind.value, category_code=cat.code,
            service_code=cat.service_code, category_name=cat.name, urgency=draft.urgency.value,
            state=State.REPORTED.value, extension_pending=False, extensions=0, unit=draft.unit,
            grid=draft.locality.grid, street=draft.locality.street, district=draft.locality.district,
            device=tr.device, rule=tr.rule, severity=tr.severity.value, corr_key=draft.corr_key,
            auto_close=draft.auto_close, lat=draft.lat, lon=draft.lon, address=None, description=draft.description,
            reporter="iot", created_at=tr.t, filed_at=None, dispatched_at=None, handled_at=None, verified_at=None,
            closed_at=None, deadline=None, due_at=None, updated_at=tr.t, version=1, data={}, overdue=False,
            time_to_deadline_s=None,
        )
        self.alarms_of[cid] = []
        self.open_key[draft.corr_key] = cid
        self._link(tr.alarm_id, cid)
        return cid

    def _link(self, alarm_id: str, case_id: int) -> None:
        self.link[alarm_id] = case_id
        self.alarms_of[case_id].append(alarm_id)

    def _set_state(self, c: Case, state: State, extension_pending: bool = False) -> None:
        self.cases[c.id] = replace(c, state=state.value, extension_pending=extension_pending)
        if not state.is_open and c.corr_key is not None and self.open_key.get(c.corr_key) == c.id:
            del self.open_key[c.corr_key]

    def _fix_if_clear(self, alarm_id: str) -> None:
        """The history's stand-in for a handler's fix verified by the sensor: every linked alarm is clear."""
        cid = self.link.get(alarm_id)
        if cid is None or not self.cases[cid].is_open:
            return
        if not any(self.active.get(a, False) for a in self.alarms_of[cid]):
            self._set_state(self.cases[cid], State.CLOSED)


def predict_cases(
    transitions: Sequence[AlarmTransition],
    registry: Mapping[str, DeviceInfo] | None = None,
    *,
    catalog: Catalog | None = None,
    fixed_on_clear: bool = True,
) -> list[PredictedCase]:
    """The cases the live bridge would open for ``transitions`` (time-ordered), in opening order."""
    book = CaseBook(PolicyConfig(catalog or _default_catalog()), registry or {}, fixed_on_clear)
    for tr in transitions:
        book.apply(tr)
    return book.predicted()


def cases_would_open(
    transitions: Sequence[AlarmTransition],
    registry: Mapping[str, DeviceInfo] | None = None,
    *,
    catalog: Catalog | None = None,
    fixed_on_clear: bool = True,
) -> dict[str, int]:
    """Cases per alarm rule (the rule of the alarm that opened each): the backtest's ``CasePolicy``."""
    cases = predict_cases(transitions, registry, catalog=catalog, fixed_on_clear=fixed_on_clear)
    return dict(Counter(c.rule for c in cases))


def cases_stay_open(
    transitions: Sequence[AlarmTransition], registry: Mapping[str, DeviceInfo] | None = None
) -> dict[str, int]:
    """:func:`cases_would_open` with nobody fixing anything: a clear does not close its case."""
    return cases_would_open(transitions, registry, fixed_on_clear=False)
