"""The alarm board as a pure function: active alarms -> incidents, in the duty officer's order.

One row per device and condition (rule), however many alarms it raised in the repeat window;
ordered by the configured priority (flood first in the demo), then severity, unacknowledged
before acknowledged, newest first. Values are formatted here, once, for people.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from console.config import PriorityEntry
from console.labels import KINDS, SEVERITIES, alarm_value, rule_label, zh_en
from console.views import AlarmView, DeviceView

SEV_RANK = {"critical": 3, "major": 2, "minor": 1}


@dataclass(frozen=True, slots=True)
class Incident:
    alarm_id: str  # the newest active alarm of this device and rule (what ack/clear act on)
    device: str
    rule: str
    severity: str  # the highest among its active alarms
    state: str  # active (someone must look) | acknowledged
    raised_at: float  # the first active alarm
    updated_at: float
    value: float | None
    repeats: int  # alarms of this device and rule in the repeat window (>= 1)
    acked_by: str | None
    kind: str
    grid: str | None
    priority: int  # index of the first matching priority entry; lower is more urgent


def priority_of(priority: Sequence[PriorityEntry], rule: str, severity: str) -> int:
    return next((i for i, p in enumerate(priority) if p.matches(rule, severity)), len(priority))


def incidents(active: Sequence[AlarmView], recent: Sequence[AlarmView], devices: Mapping[str, DeviceView],
              priority: Sequence[PriorityEntry]) -> list[Incident]:
    """Group ``active`` by (device, rule); ``recent`` (any state, the repeat window) counts repeats."""
    seen: dict[tuple[str, str], set[str]] = {}
    for a in (*recent, *active):
        seen.setdefault((a.device, a.rule), set()).add(a.alarm_id)
    groups: dict[tuple[str, str], list[AlarmView]] = {}
    for a in active:
        if a.state != "cleared":
            groups.setdefault((a.device, a.rule), []).append(a)
    out = []
    for (device, rule), alarms in groups.items():
        newest = max(alarms, key=lambda a: (a.updated_at, a.alarm_id))
        severity = max((a.severity for a in alarms), key=lambda s: SEV_RANK.get(s, 0))
        unacked = [a for a in alarms if a.state == "active"]
        dev = devices.get(device)
        out.append(Incident(
            alarm_id=newest.alarm_id, device=device, rule=rule, severity=severity,
            state="active" if unacked else "acknowledged", raised_at=min(a.raised_at for a in alarms),
            updated_at=newest.updated_at, value=newest.value, repeats=len(seen[(device, rule)]),
            acked_by=None if unacked else newest.acked_by, kind=dev.kind if dev else "", grid=dev.grid if dev else None,
            priority=priority_of(priority, rule, severity),
        ))
    out.sort(key=lambda i: (i.priority, -SEV_RANK.get(i.severity, 0), i.state != "active", -i.updated_at, i.device))
    return out


@dataclass(frozen=True, slots=True)
class BoardFilter:
    kind: str | None = None
    severity: str | None = None
    grid: str | None = None
    acknowledged: bool | None = None

    def keep(self, i: Incident) -> bool:
        return ((self.kind is None or i.kind == self.kind) and (self.severity is None or i.severity == self.severity)
                and (self.grid is None or i.grid == self.grid)
                and (self.acknowledged is None or (i.state == "acknowledged") == self.acknowledged))


def counts_by_kind(items: Sequence[Incident]) -> dict[str, dict[str, int]]:
    """kind -> severity -> incidents, for the counters above the board."""
    out: dict[str, dict[str, int]] = {}
    for i in items:
        per = out.setdefault(i.kind or "other", {"critical": 0, "major": 0, "minor": 0})
        per[i.severity] = per.get(i.severity, 0) + 1
    return out


def to_json(i: Incident, clearable: bool) -> dict[str, object]:
    return {
        "alarm_id": i.alarm_id, "device": i.device, "rule": i.rule, "rule_label": rule_label(i.rule),
        "severity": i.severity, "severity_label": zh_en(SEVERITIES, i.severity), "state": i.state,
        "raised_at": i.raised_at, "updated_at": i.updated_at, "value": i.value,
        "value_text": alarm_value(i.rule, i.value), "repeats": i.repeats, "acked_by": i.acked_by, "kind": i.kind,
        "kind_label": zh_en(KINDS, i.kind) if i.kind else "", "grid": i.grid, "priority": i.priority,
        "clearable": clearable,
    }
