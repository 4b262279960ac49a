"""The alarm -> case policy: every rule that turns alarm transitions into case changes. Pure.

The store loads a :class:`Situation` (what is already known about the alarm, its case and the
open case of its correlation key) in one read, calls :func:`decide`, and executes the returned
commands in one transaction; it decides nothing itself. The rules:

- dedup: a transition (alarm id, kind, t) seen before changes nothing; an alarm links to at
  most one case, so a redelivery never opens a second one;
- alarm state: a transition older than the alarm's last one does not roll it back;
- correlation: one open case per correlation key, as each case rule's ``correlate`` setting in
  the category table says (per device and rule, per device incident, per grid and rule, or per
  lamp circuit: see :func:`case_bridge.mapping.correlation_key`); a raise whose key has an open
  case attaches to it;
- escalation: a raise or escalation that maps to a higher urgency raises the case's urgency
  and rewrites its description from that alarm;
- auto-dispatch: from the severity the category rule names, a reported/filed case is filed
  and dispatched by the system;
- sensor verification: an alarm raised again on a case whose fix was reported returns it
  (核查不通过); a handled case whose alarms stayed normal for the hold time is verified (and
  closed when the rule says ``auto_close``), one still active after the grace time returns;
- clear and acknowledge only update the alarm's state (verification reads it later);
- street-confirmed verification (:func:`sensor_gate`): a person's 核查通过 or 结案 of a sensor
  case is refused while a linked alarm is active, unless a supervisor overrides with a reason.

Extending the policy (correlation declared per category, re-assignment, supervised override)
means a new field in :class:`PolicyConfig` or :class:`Situation` and a new command, not SQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from case_bridge import lifecycle, workflow
from case_bridge.config import Catalog, Urgency
from case_bridge.errors import IllegalTransition, SensorNotClear
from case_bridge.lifecycle import AlarmView, Verdict
from case_bridge.mapping import CaseDraft, map_alarm
from case_bridge.model import Case
from case_bridge.workflow import Action, Position, Role, State
from contracts.alarms import AlarmTransition, TransitionKind
from contracts.reading import DeviceInfo


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """What the policy reads from configuration: the category table and the verification times."""

    catalog: Catalog
    verify_hold_s: float = 600.0  # the sensor must read normal this long after a fix
    verify_grace_s: float = 0.0  # an alarm still active this long after the fix fails it


@dataclass(frozen=True, slots=True)
class Situation:
    """What the store knows when an alarm transition arrives (loaded in one read).

    ``linked`` is the case the alarm is already linked to; ``correlated`` the open case that
    holds the transition's correlation key (see :func:`lookup_key`); ``alarm_last_t`` the time of
    the alarm's latest recorded transition (``None``: first time this alarm is seen).
    """

    seen: bool = False
    alarm_last_t: float | None = None
    linked: Case | None = None
    correlated: Case | None = None
    device: DeviceInfo | None = None


@dataclass(frozen=True, slots=True)
class ClearCondition:
    """When a rule's alarm clears: ``metric`` below ``clear_at`` (``above`` rules) or above it (``below``)."""

    rule: str
    metric: str
    clear_at: float
    above: bool = True

    def holds(self, value: float) -> bool:
        return value < self.clear_at if self.above else value > self.clear_at

    @property
    def text(self) -> str:
        return f"{self.metric} {'<' if self.above else '>'} {self.clear_at:g}"

    def json(self) -> dict[str, Any]:
        return {"rule": self.rule, "metric": self.metric, "clear_at": self.clear_at,
                "direction": "above" if self.above else "below", "text": self.text}

    @staticmethod
    def from_evidence(rule: str, evidence: dict[str, Any]) -> ClearCondition | None:
        """The condition a threshold alarm's evidence names (``metric``, ``clear_at``, ``direction``), if any."""
        try:
            return ClearCondition(rule, str(evidence["metric"]), float(evidence["clear_at"]),
                                  evidence.get("direction", "above") != "below")
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class StreetReading:
    """The latest reading of one device for a rule's metric, and the condition that clears its alarm.

    The shell reads it (time-series store ``latest``, or the alarm's own last sample) and passes it
    in; ``value`` None means no reading is known, which contradicts nothing.
    """

    device: str
    condition: ClearCondition
    value: float | None
    t: float | None

    @property
    def clear(self) -> bool:
        return self.value is None or self.condition.holds(self.value)

    def json(self) -> dict[str, Any]:
        return {"device": self.device, "metric": self.condition.metric, "value": self.value, "t": self.t,
                "clear": self.clear, "condition": self.condition.json()}


def event_window(t_event: float, t_last: float | None, pad_s: float = 3 * 3600.0) -> tuple[float, float]:
    """The chart window around an alarm: ``pad_s`` before it and after the last reading that matters.

    The event sits inside the window, never squeezed against an edge (the end may lie in the future).
    """
    last = t_event if t_last is None else max(t_event, t_last)
    return t_event - pad_s, max(t_event + pad_s, last + pad_s / 3)


@dataclass(frozen=True, slots=True)
class VerificationDue:
    """A handled case and the latest state of its alarms, read when its verification may be due.

    ``readings`` are the street's latest readings with their clear conditions (empty: none known).
    """

    case: Case
    alarms: tuple[AlarmView, ...]
    readings: tuple[StreetReading, ...] = ()


# ------------------------------------------------------------------ commands

NEW_CASE = 0  # ``case_id`` of a command that acts on the case an OpenCase of the same decision creates


class AlarmUpdate(StrEnum):
    INSERT = "insert"  # first transition of this alarm
    UPDATE = "update"  # raise/escalate/clear: state, severity, value, evidence
    ACK = "ack"  # acknowledged: only the acknowledged flag and time


@dataclass(frozen=True, slots=True)
class RecordTransition:
    """Remember (alarm id, kind, t) so a redelivery is recognised."""

    alarm: AlarmTransition


@dataclass(frozen=True, slots=True)
class UpdateAlarmState:
    alarm: AlarmTransition
    how: AlarmUpdate


@dataclass(frozen=True, slots=True)
class OpenCase:
    """Open an IoT case in ``reported`` from ``draft`` and link the alarm to it."""

    alarm: AlarmTransition
    draft: CaseDraft


@dataclass(frozen=True, slots=True)
class LinkAlarm:
    """Attach the alarm to an open case (correlation)."""

    case_id: int
    alarm: AlarmTransition


@dataclass(frozen=True, slots=True)
class Escalate:
    """Raise the case's urgency; its description follows the alarm that raised it (no stale "(minor)")."""

    case_id: int
    from_urgency: Urgency
    to_urgency: Urgency
    alarm: AlarmTransition
    description: str


@dataclass(frozen=True, slots=True)
class Transition:
    """A workflow action the system takes (role ``system``), with its note and audit data."""

    case_id: int
    action: Action
    note: str
    data: dict[str, Any] | None = None


Command = RecordTransition | UpdateAlarmState | OpenCase | LinkAlarm | Escalate | Transition


@dataclass(frozen=True, slots=True)
class Decision:
    """``effect``: duplicate | no_case | created | attached | updated | wait; ``case_id`` the case
    concerned (:data:`NEW_CASE` for one this decision opens); ``devices`` whose open-case set may change."""

    effect: str
    commands: tuple[Command, ...] = ()
    case_id: int | None = None
    devices: tuple[str, ...] = ()

    @property
    def actions(self) -> tuple[str, ...]:
        return tuple(c.action.value for c in self.commands if isinstance(c, Transition))


# ------------------------------------------------------------------ the rules

_RAISING = (TransitionKind.RAISED, TransitionKind.ESCALATED)
_URGENCY_RANK = {u: i for i, u in enumerate(Urgency)}


def lookup_key(tr: AlarmTransition, device: DeviceInfo | None, config: PolicyConfig) -> str | None:
    """The correlation key whose open case the store must load for ``tr`` (None: no lookup)."""
    if tr.kind not in _RAISING:
        return None
    draft = map_alarm(config.catalog, tr, device)
    return None if draft is None else draft.corr_key


def alarm_json(tr: AlarmTransition) -> dict[str, Any]:
    """The alarm as case data and audit evidence."""
    return {"alarm_id": tr.alarm_id, "device": tr.device, "rule": tr.rule, "kind": tr.kind.value,
            "severity": tr.severity.value, "t": tr.t, "value": tr.value, "evidence": tr.evidence}


def decide(trigger: AlarmTransition | VerificationDue, situation: Situation, config: PolicyConfig,
           now: float) -> Decision:
    """The commands one alarm transition (or one due verification) leads to."""
    if isinstance(trigger, VerificationDue):
        return _verification(trigger, config, now)
    tr = trigger
    if situation.seen:
        return Decision("duplicate")
    book: list[Command] = [RecordTransition(tr)]
    how = _alarm_update(tr, situation.alarm_last_t)
    if how is not None:
        book.append(UpdateAlarmState(tr, how))
    if tr.kind not in _RAISING:
        linked = situation.linked
        return Decision("updated", tuple(book), linked.id if linked else None)
    if situation.linked is not None:
        return _on_case(tr, situation.linked, situation.device, config, effect="updated", book=book)
    draft = map_alarm(config.catalog, tr, situation.device)
    if draft is None:
        return Decision("no_case", tuple(book))
    if situation.correlated is not None:
        case = situation.correlated
        book.append(LinkAlarm(case.id, tr))
        return _on_case(tr, case, situation.device, config, effect="attached", book=book)
    book.append(OpenCase(tr, draft))
    pos = Position(State.REPORTED)
    if draft.auto_dispatch:
        book += _auto_dispatch(NEW_CASE, pos, tr)
    return Decision("created", tuple(book), NEW_CASE, (tr.device,))


def _alarm_update(tr: AlarmTransition, last_t: float | None) -> AlarmUpdate | None:
    if last_t is None:
        return AlarmUpdate.INSERT
    if tr.kind is TransitionKind.ACKNOWLEDGED:
        # a flag only: its time is the console's wall clock, not the sample time the condition's
        # transitions carry, so it must not order them (a clear after a backlog would be dropped)
        return AlarmUpdate.ACK
    if last_t > tr.t:
        return None  # an older transition arriving late does not roll the alarm back
    return AlarmUpdate.UPDATE


def _on_case(tr: AlarmTransition, case: Case, device: DeviceInfo | None, config: PolicyConfig, *, effect: str,
             book: list[Command]) -> Decision:
    """A raise on a case that exists: escalate urgency, auto-dispatch, or return a reported fix."""
    if not case.is_open:
        return Decision(effect, tuple(book), case.id)
    pos = case.position
    draft = map_alarm(config.catalog, tr, device)
    if draft is not None:
        current = Urgency(case.urgency)
        if _URGENCY_RANK[draft.urgency] > _URGENCY_RANK[current]:
            book.append(Escalate(case.id, current, draft.urgency, tr, draft.description))
        if draft.auto_dispatch and pos.state in (State.REPORTED, State.FILED):
            steps = _auto_dispatch(case.id, pos, tr)
            book += steps
            pos = Position(State.DISPATCHED, pos.extension_pending)
    if pos.state is State.HANDLED:
        reason = "alarm raised again after the fix was reported"
        book.append(Transition(case.id, Action.FAIL_VERIFICATION, reason, {"reason": reason, "alarm": alarm_json(tr)}))
    return Decision(effect, tuple(book), case.id, (tr.device,))


def _auto_dispatch(case_id: int, pos: Position, tr: AlarmTransition) -> list[Command]:
    note = f"auto: {tr.severity.value} {tr.rule}"
    out: list[Command] = []
    for action in (Action.FILE, Action.DISPATCH):
        if action in workflow.allowed_actions(pos, workflow.Role.SYSTEM):
            out.append(Transition(case_id, action, note))
            pos = workflow.apply(pos, action, workflow.Role.SYSTEM)
    return out


def _verification(due: VerificationDue, config: PolicyConfig, now: float) -> Decision:
    case = due.case
    if case.state != State.HANDLED.value or case.handled_at is None:
        return Decision("wait")
    verdict = lifecycle.verification(case.handled_at, list(due.alarms), config.verify_hold_s, now,
                                     config.verify_grace_s)
    if verdict.verdict is Verdict.WAIT:
        return Decision("wait", case_id=case.id)
    readings = street_readings(due.alarms, due.readings)
    if verdict.verdict is Verdict.VERIFY and not all(r.clear for r in readings):
        return Decision("wait", case_id=case.id)  # alarm cleared (stale, acknowledged) but the street disagrees
    devices = tuple(sorted({a.device for a in due.alarms}))
    reason = str(verdict.evidence["reason"])
    if verdict.verdict is Verdict.FAIL:
        evidence = return_evidence(verdict.evidence, [a for a in due.alarms if a.active], readings)
        note = f"{reason}: {readings_text(readings)}" if readings else reason
        cmds: tuple[Command, ...] = (Transition(case.id, Action.FAIL_VERIFICATION, note, evidence),)
        return Decision("updated", cmds, case.id, devices)
    cmds = (Transition(case.id, Action.VERIFY, reason, verdict.evidence),)
    if case.auto_close:
        cmds += (Transition(case.id, Action.CLOSE, "closed after sensor verification"),)
    return Decision("updated", cmds, case.id, devices)


def street_readings(alarms: Sequence[AlarmView], readings: Sequence[StreetReading]) -> tuple[StreetReading, ...]:
    """The readings to judge by: those passed in, else each alarm's own last sample with the clear
    condition its evidence names (the rule engine's value and time when the alarm last changed)."""
    if readings:
        return tuple(readings)
    out: list[StreetReading] = []
    for a in alarms:
        cond = ClearCondition.from_evidence(a.rule, a.evidence)
        if cond is not None:
            value = a.evidence.get("value", a.value)
            out.append(StreetReading(a.device, cond, None if value is None else float(value), a.last_t))
    return tuple(out)


def readings_text(readings: Sequence[StreetReading]) -> str:
    """One line per reading for notes, refusals and notices: value, time and the clear condition."""
    return "; ".join(
        f"{r.device} {r.condition.metric} {r.value:g} at {_utc(r.t)} (clears at {r.condition.text})"
        if r.value is not None and r.t is not None else f"{r.device} {r.condition.metric}: no reading"
        for r in readings
    )


def return_evidence(base: dict[str, Any], active: Sequence[AlarmView], readings: Sequence[StreetReading],
                    pad_s: float = 3 * 3600.0) -> dict[str, Any]:
    """核查不通过 evidence: the verdict's, plus the readings that failed it and the chart window around them."""
    out = dict(base)
    out["readings"] = [r.json() for r in readings]
    failing = [r for r in readings if not r.clear] or list(readings)
    if failing:
        r = failing[0]
        raised = min((a.raised_at or a.last_t for a in active if a.device == r.device), default=r.t)
        t_event = raised if raised is not None else (r.t or 0.0)
        start, end = event_window(t_event, r.t, pad_s)
        out["chart"] = {"device": r.device, "metric": r.condition.metric, "start": start, "end": end,
                        "mark": t_event, "clear_at": r.condition.clear_at}
    return out


def _utc(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# ------------------------------------------------------------------ a person's verify / close

#: actions a person may take on a sensor case only when the street confirms it (no active alarm)
SENSOR_GATED = frozenset({Action.VERIFY, Action.CLOSE})
#: the roles that may override the sensor with a written reason
OVERRIDE_ROLES = frozenset({Role.SUPERVISOR, Role.ADMIN})


def sensor_gate(case: Case, action: Action | str, role: Role | None, alarms: Sequence[AlarmView],
                override_reason: str | None, *, readings: Sequence[StreetReading] = ()) -> dict[str, Any] | None:
    """Whether a person's ``action`` on ``case`` may go ahead given its linked ``alarms`` and the
    street's latest ``readings`` (the shell fetches them; an alarm cleared by staleness or an
    acknowledgement does not verify a case whose latest reading is still outside the clear condition).

    Returns ``None`` (no override needed) or the override record to audit; raises
    :class:`SensorNotClear` (alarm active or a reading outside its clear condition, no reason) or
    :class:`IllegalTransition` (a reason from a role that may not override, or on an action that
    is not gated).
    """
    act = Action(action)
    reason = (override_reason or "").strip()
    if act not in SENSOR_GATED:
        if reason:
            raise IllegalTransition(case.state, act.value, (), "an override reason applies only to verify or close")
        return None
    iot = case.source == "iot"
    active = [a for a in alarms if a.active] if iot else []
    outside = [r for r in readings if not r.clear] if iot else []
    if not active and not outside:
        return None
    if not reason:
        raise SensorNotClear(case.state, act.value, tuple((a.alarm_id, a.value, a.last_t) for a in active),
                             readings=readings_text(outside))
    if role not in OVERRIDE_ROLES:
        who = role.value if role is not None else "unknown"
        raise IllegalTransition(case.state, act.value, (), f"role {who!r} may not override an active alarm")
    record: dict[str, Any] = {"reason": reason, "alarms": [{"alarm_id": a.alarm_id, "device": a.device,
                                                            "rule": a.rule, "value": a.value, "t": a.last_t}
                                                           for a in active]}
    if outside:
        record["readings"] = [r.json() for r in outside]
    return record
