"""The alarm lifecycle as pure steps: level latches with delays, then alarm transitions.

Two layers, both deterministic functions of the samples they see:

* a **latch** per severity level: off → on when the raise condition has held at every
  evaluated sample for ``raise_after_s``; on → off when the clear condition has held for
  ``clear_after_s``. The raise and clear conditions are disjoint (hysteresis), so noise
  between them changes nothing.
* the **alarm**: its severity is the highest latched level. 0 → n raises, n → m escalates
  or de-escalates (same alarm id), n → 0 clears. A flapping alarm (raised too often in a
  window) additionally waits ``hold_s`` before clearing. Acknowledgement only marks it.

Alarm ids are derived from (device, rule, raise time in ms), so a restarted engine that
replays the same readings produces the same id, and consumers can deduplicate on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from contracts.alarms import AlarmTransition, Severity, TransitionKind
from contracts.payloads import ts_ms

SEVERITIES: tuple[Severity, ...] = (Severity.MINOR, Severity.MAJOR, Severity.CRITICAL)


def alarm_id_for(device: str, rule: str, raised_t: float) -> str:
    """Deterministic alarm id: ``{device}.{rule}.{raise time in ms}`` (ids and rule names have no dots)."""
    return f"{device}.{rule}.{ts_ms(raised_t)}"


@dataclass(slots=True)
class LatchState:
    """Per (rule, device): which levels are latched and since when their pending condition holds."""

    on: list[bool]
    since: list[float | None]

    @classmethod
    def fresh(cls, n: int) -> LatchState:
        return cls([False] * n, [None] * n)

    def to_json(self) -> list[Any]:
        return [self.on, self.since]

    @classmethod
    def from_json(cls, obj: list[Any]) -> LatchState:
        return cls([bool(x) for x in obj[0]], [None if x is None else float(x) for x in obj[1]])


def step_latch(
    latch: LatchState, i: int, raise_c: bool, clear_c: bool, *, t: float, raise_after_s: float, clear_after_s: float
) -> None:
    """Advance level ``i`` of ``latch`` with one evaluated sample at time ``t``."""
    if not latch.on[i]:
        if raise_c:
            since = latch.since[i]
            if since is None:
                since = latch.since[i] = t
            if t - since >= raise_after_s:
                latch.on[i] = True
                latch.since[i] = None
        else:
            latch.since[i] = None
    elif clear_c:
        since = latch.since[i]
        if since is None:
            since = latch.since[i] = t
        if t - since >= clear_after_s:
            latch.on[i] = False
            latch.since[i] = None
    else:
        latch.since[i] = None


@dataclass(slots=True)
class Alarm:
    """An active alarm. ``severity`` is its current level."""

    alarm_id: str
    device: str
    rule: str
    severity: Severity
    raised_t: float
    value: float | None = None
    flapping: bool = False
    hold_since: float | None = None
    acked_by: str | None = None
    acked_t: float | None = None
    case_id: str | None = None
    auto_clear_t: float | None = None  # event alarms (WIM) clear themselves
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "alarm_id": self.alarm_id,
            "device": self.device,
            "rule": self.rule,
            "severity": self.severity.value,
            "raised_t": self.raised_t,
            "value": self.value,
            "flapping": self.flapping,
            "hold_since": self.hold_since,
            "acked_by": self.acked_by,
            "acked_t": self.acked_t,
            "case_id": self.case_id,
            "auto_clear_t": self.auto_clear_t,
            "evidence": self.evidence,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Alarm:
        return cls(**{**obj, "severity": Severity(obj["severity"])})


def latched_severity(latch: LatchState, severities: tuple[Severity, ...]) -> Severity | None:
    top: Severity | None = None
    for on, sev in zip(latch.on, severities, strict=True):
        if on and (top is None or sev.rank > top.rank):
            top = sev
    return top


@dataclass(frozen=True, slots=True)
class FlapPolicy:
    max_raises: int
    window_s: float
    hold_s: float


def step_alarm(
    alarm: Alarm | None,
    target: Severity | None,
    *,
    device: str,
    rule: str,
    t: float,
    value: float | None,
    evidence: dict[str, Any],
    raises: list[float],
    flap: FlapPolicy | None,
    case_id: str | None,
    out: list[AlarmTransition],
) -> Alarm | None:
    """Move one condition's alarm toward ``target`` severity at sample time ``t``.

    ``raises`` is this condition's recent raise times (updated in place, pruned to the flap
    window). Returns the alarm afterwards (None once cleared); transitions go to ``out``.
    """
    if target is not None:
        if alarm is None:
            if flap is not None:
                raises.append(t)
                cutoff = t - flap.window_s
                while raises and raises[0] < cutoff:
                    raises.pop(0)
            flapping = flap is not None and len(raises) >= flap.max_raises
            ev = dict(evidence)
            if flapping:
                ev["flapping"] = True
            if case_id is not None:
                ev["case_id"] = case_id
                ev["attach"] = True  # an open case exists for this condition: attach, don't notify anew
            aid = alarm_id_for(device, rule, t)
            alarm = Alarm(aid, device, rule, target, t, value, flapping, None, case_id=case_id)
            alarm.evidence = ev
            out.append(AlarmTransition(alarm.alarm_id, device, rule, TransitionKind.RAISED, target, t, value, ev))
            return alarm
        alarm.hold_since = None
        if target != alarm.severity:
            kind = TransitionKind.ESCALATED if target.rank > alarm.severity.rank else TransitionKind.DEESCALATED
            alarm.severity = target
            alarm.value = value
            out.append(AlarmTransition(alarm.alarm_id, device, rule, kind, target, t, value, dict(evidence)))
        return alarm
    if alarm is None:
        return None
    if alarm.flapping and flap is not None and flap.hold_s > 0:
        if alarm.hold_since is None:
            alarm.hold_since = t
        if t - alarm.hold_since < flap.hold_s:
            return alarm
    out.append(
        AlarmTransition(alarm.alarm_id, device, rule, TransitionKind.CLEARED, alarm.severity, t, value, dict(evidence))
    )
    return None


def acknowledge(alarm: Alarm, actor: str, t: float, note: str, out: list[AlarmTransition]) -> None:
    """Mark an active alarm acknowledged once; a repeated ack is a no-op (idempotent)."""
    if alarm.acked_by is not None:
        return
    alarm.acked_by = actor
    alarm.acked_t = t
    ev: dict[str, Any] = {"note": note} if note else {}
    kind = TransitionKind.ACKNOWLEDGED
    sev = alarm.severity
    out.append(AlarmTransition(alarm.alarm_id, alarm.device, alarm.rule, kind, sev, t, alarm.value, ev, actor))
