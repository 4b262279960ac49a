"""The case bridge's error tree.

    CitywatchError
    └── CaseError
        ├── IllegalTransition   the workflow refuses this action in this state (or for this role)
        │   └── SensorNotClear  verify/close refused: a linked alarm is active or the latest reading is not clear
        ├── CaseNotFound        no case with that id
        ├── CaseConflict        the case changed since the caller read it (expected_version)
        ├── UnknownCategory     a category code that is not in the category table
        ├── StoreError          the database failed (sqlite3 / psycopg errors translated once)
        │   └── StoreConflict   a uniqueness constraint lost a race (another writer got there first)
        └── NotifyError         a notification target refused or could not be reached
"""

from __future__ import annotations

import datetime as dt

from contracts.errors import CitywatchError


def _utc(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


class CaseError(CitywatchError):
    """Root of every error the case bridge raises on purpose."""


class IllegalTransition(CaseError):
    """An action not allowed from the case's state (or by the actor's role).

    ``state`` and ``action`` are the offending pair; ``allowed`` lists what is possible,
    so an API can tell the user what to do instead.
    """

    def __init__(self, state: str, action: str, allowed: tuple[str, ...] = (), reason: str = "") -> None:
        self.state = state
        self.action = action
        self.allowed = allowed
        self.reason = reason
        why = f": {reason}" if reason else ""
        hint = f" (allowed: {', '.join(allowed)})" if allowed else " (no action is allowed)"
        super().__init__(f"cannot {action!r} a case in state {state!r}{why}{hint}")


class SensorNotClear(IllegalTransition):
    """核查/结案 of a sensor case refused while a linked alarm is active; names each alarm's latest reading."""

    def __init__(self, state: str, action: str, alarms: tuple[tuple[str, float | None, float], ...],
                 readings: str = "") -> None:
        self.alarms = alarms  # (alarm id, latest value, time of the latest transition)
        self.readings = readings  # the latest readings outside their clear condition, as text
        shown = [f"alarm {a} active, latest value {v} at {_utc(t)}" for a, v, t in alarms]
        if readings:
            shown.append(f"latest readings outside the clear condition: {readings}")
        super().__init__(state, action, (), f"{'; '.join(shown)}; a supervisor may override with a written reason")


class PhotosMissing(IllegalTransition):
    """处置 reported without the before/after photos the category requires; names the missing stages."""

    def __init__(self, state: str, action: str, missing: tuple[str, ...]) -> None:
        self.missing = missing
        super().__init__(state, action, (), f"this category requires photos: attach {', '.join(missing)} first")


class MediaRejected(CaseError):
    """An upload that is not an accepted image (by its magic bytes) or is too large."""


class CaseNotFound(CaseError):
    def __init__(self, case_id: int) -> None:
        self.case_id = case_id
        super().__init__(f"no case with id {case_id}")


class CaseConflict(CaseError):
    def __init__(self, case_id: int, expected: int, actual: int) -> None:
        self.case_id = case_id
        self.expected = expected
        self.actual = actual
        super().__init__(f"case {case_id} is at version {actual}, not {expected}; reload and retry")


class UnknownCategory(CaseError):
    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(f"unknown category code {code!r}")


class StoreError(CaseError):
    """The case store failed; the message names the operation."""


class StoreConflict(StoreError):
    """A unique constraint lost a race with another writer; retrying the operation resolves it."""


class NotifyError(CaseError):
    """A notification could not be delivered; ``retryable`` says whether backing off may help."""

    def __init__(self, target: str, detail: str, retryable: bool = True) -> None:
        self.target = target
        self.retryable = retryable
        super().__init__(f"notify {target}: {detail}")
