"""What a transition does to a case's clocks, and the sensor-verification decision. Pure.

Clocks: each open state runs one stage deadline (``deadline``); the overall handling limit
(``due_at``) starts at the first dispatch (派遣, the clock starts) and only an approved
extension (延期), or a re-assignment (改派) under the ``restart`` rule, moves it. Parking
(挂账) stops the clock; resuming starts a fresh handling limit. A returned case (回退) is back
with the command centre and gets the dispatch limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from case_bridge.config import Limits
from case_bridge.deadlines import WorkingCalendar, deadline
from case_bridge.workflow import Action, State

NO_DEADLINE = 1.0e15  # stored instead of NULL so "ORDER BY deadline" is index-friendly on both databases


@dataclass(frozen=True, slots=True)
class Clocks:
    deadline: float | None
    due_at: float | None
    filed_at: float | None
    dispatched_at: float | None
    handled_at: float | None
    verified_at: float | None
    closed_at: float | None
    extensions: int


def after(
    clocks: Clocks, to: State, action: Action, *, limits: Limits, cal: WorkingCalendar, now: float,
    reassign_clock: str = "restart",
) -> Clocks:
    """The clocks after ``action`` brought the case to ``to`` at ``now``.

    ``reassign_clock`` (``restart`` | ``keep``) is the city's 改派 rule for the handling limit.
    """

    def lim(hours: float) -> float:
        return deadline(cal, now, hours, limits.basis)

    c = clocks
    due, stage = c.due_at, c.deadline
    filed, dispatched, handled, verified, closed, ext = (
        c.filed_at,
        c.dispatched_at,
        c.handled_at,
        c.verified_at,
        c.closed_at,
        c.extensions,
    )
    if action is Action.FILE:
        filed = now
        stage = lim(limits.dispatch_h)
    elif action is Action.DISPATCH:
        dispatched = dispatched if dispatched is not None else now
        due = due if due is not None else lim(limits.handle_h)
        stage = due
    elif action is Action.REASSIGN:
        dispatched = dispatched if dispatched is not None else now
        due = due if reassign_clock == "keep" and due is not None else lim(limits.handle_h)
        stage = due
    elif action is Action.ACCEPT:
        stage = due
    elif action in (Action.RETURN, Action.REQUEST_REASSIGN, Action.FAIL_VERIFICATION):
        stage = lim(limits.dispatch_h)
    elif action is Action.REPORT_FIX:
        handled = now
        stage = lim(limits.verify_h)
    elif action is Action.VERIFY:
        verified = now
        stage = lim(limits.close_h)
    elif action is Action.CLOSE:
        closed = now
        stage = None
    elif action is Action.PARK:
        stage = None
    elif action is Action.RESUME:
        due = lim(limits.handle_h)
        stage = due
    elif action is Action.APPROVE_EXTENSION:
        # extend from the old due time, or from now when it has already passed
        due = deadline(cal, max(due if due is not None else now, now), limits.extension_h, limits.basis)
        stage = due
        ext += 1
    if to in (State.REJECTED, State.CANCELLED, State.CLOSED):
        stage = None
    return Clocks(stage, due, filed, dispatched, handled, verified, closed, ext)


def initial_deadline(limits: Limits, cal: WorkingCalendar, now: float) -> float:
    """Stage deadline of a freshly reported case: the filing limit (核实立案)."""
    return deadline(cal, now, limits.file_h, limits.basis)


class Verdict(StrEnum):
    WAIT = "wait"
    VERIFY = "verify"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class AlarmView:
    """The latest known state of one alarm linked to a case."""

    alarm_id: str
    device: str
    rule: str
    active: bool
    severity: str
    last_t: float
    value: float | None
    cleared_at: float | None
    raised_at: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    evidence: dict[str, Any]
    normal_since: float | None = None


def verification(
    handled_at: float, alarms: list[AlarmView], hold_s: float, now: float, grace_s: float = 0.0
) -> Decision:
    """Sensor verification of a reported fix.

    The fix holds when none of the case's alarms is active and the newest of (fix reported,
    last clear) is at least ``hold_s`` ago. An alarm still active ``grace_s`` after the fix
    (the rule engine's clear can lag the repair by a reading or two), or raised again after
    it, fails the verification with the alarm's readings as evidence.
    """
    active = [a for a in alarms if a.active]
    if active and now - handled_at < grace_s and all((a.raised_at or 0) <= handled_at for a in active):
        return Decision(Verdict.WAIT, {}, None)
    if active:
        return Decision(
            Verdict.FAIL,
            {
                "reason": "alarm still active" if all((a.raised_at or 0) <= handled_at for a in active)
                else "alarm raised again inside the hold time",
                "alarms": [_alarm_evidence(a) for a in active],
            },
        )
    normal_since = max([handled_at, *[a.cleared_at for a in alarms if a.cleared_at is not None]])
    if now - normal_since >= hold_s:
        return Decision(
            Verdict.VERIFY,
            {
                "reason": f"sensor normal for {now - normal_since:.0f} s (hold {hold_s:.0f} s)",
                "normal_since": normal_since,
                "hold_s": hold_s,
                "alarms": [_alarm_evidence(a) for a in alarms],
            },
            normal_since,
        )
    return Decision(Verdict.WAIT, {}, normal_since)


def _alarm_evidence(a: AlarmView) -> dict[str, Any]:
    return {
        "alarm_id": a.alarm_id,
        "device": a.device,
        "rule": a.rule,
        "active": a.active,
        "severity": a.severity,
        "t": a.last_t,
        "value": a.value,
        "cleared_at": a.cleared_at,
        "evidence": a.evidence,
    }
