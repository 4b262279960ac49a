"""Alarm transitions: what the rule engine publishes and the case bridge consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    MINOR = "minor"
    MAJOR = "major"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Severity.MINOR: 1, Severity.MAJOR: 2, Severity.CRITICAL: 3}


class TransitionKind(StrEnum):
    RAISED = "raised"
    ESCALATED = "escalated"
    DEESCALATED = "de-escalated"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"


@dataclass(frozen=True, slots=True)
class AlarmTransition:
    """One step in an alarm's life. ``alarm_id`` is stable across the steps of one alarm."""

    alarm_id: str
    device: str
    rule: str
    kind: TransitionKind
    severity: Severity
    t: float
    value: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    actor: str | None = None  # who acknowledged
