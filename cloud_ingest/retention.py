"""Retention: compact hot days, drop compacted days of a metric class once past its raw retention.

The decision is pure (:func:`plan`): it takes what is stored, the rollup and stored counts, the
time and the holds, and returns actions with reasons. :func:`run` is the thin shell that asks a
store and carries the plan out. Rules the plan keeps:

* a hot day is compacted once older than ``compact_after_days`` (never sooner than the ingest
  late limit, so no reading arrives for a compacted day through ingest);
* a compacted (class, day) table is dropped once older than the class's ``raw_days``, and only
  when the 1-minute rollups count exactly the readings it holds (nothing stored is unrolled) and
  no hold covers the day (evidence a case refers to);
* events are not subject to retention (they are few and are case evidence themselves);
* 1-minute rollups are dropped by whole days after ``rollup_1m_days`` (at least every class's
  ``raw_days``, so the count check above always has them); hourly rollups are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import Field, field_validator, model_validator

from cloud_ingest.store.lifecycle import CLASS_NAME, DAY_MS, DEFAULT_CLASS, Partitions
from contracts.config import StrictModel
from contracts.metrics import METRIC_UNITS


class MetricClass(StrictModel):
    """Metrics that share a raw retention (e.g. ``hydro``: water depths kept a year)."""

    metrics: list[str] = Field(min_length=1)
    raw_days: int = Field(ge=1)

    @field_validator("metrics")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(METRIC_UNITS))
        if unknown:
            raise ValueError(f"unknown metrics {unknown} (known: {sorted(METRIC_UNITS)})")
        return value


class RetentionSettings(StrictModel):
    """The ``retention`` section of the ingest config."""

    compact_after_days: int = Field(default=15, ge=1)
    #: raw retention of metrics in no class
    default_raw_days: int = Field(default=90, ge=1)
    #: 1-minute rollups are dropped by whole days after this; hourly rollups are kept
    rollup_1m_days: int = Field(default=400, ge=1)
    classes: dict[str, MetricClass] = Field(default_factory=dict)

    @field_validator("classes")
    @classmethod
    def _names(cls, value: dict[str, MetricClass]) -> dict[str, MetricClass]:
        for name in value:
            if name == DEFAULT_CLASS or not CLASS_NAME.match(name):
                raise ValueError(f"class name {name!r} must match [a-z][a-z0-9]{{0,30}} and not be {DEFAULT_CLASS!r}")
        seen: dict[str, str] = {}
        for name, mc in value.items():
            for m in mc.metrics:
                if m in seen:
                    raise ValueError(f"metric {m!r} is in classes {seen[m]!r} and {name!r}")
                seen[m] = name
        return value

    @model_validator(mode="after")
    def _raw_outlives_hot(self) -> RetentionSettings:
        for name, days in self.raw_days().items():
            if days < self.compact_after_days:
                raise ValueError(
                    f"raw_days of {name!r} ({days}) is below compact_after_days ({self.compact_after_days}): "
                    "raw data is dropped by whole compacted days"
                )
            if days > self.rollup_1m_days:
                raise ValueError(
                    f"rollup_1m_days ({self.rollup_1m_days}) is below raw_days of {name!r} ({days}): "
                    "raw data is only dropped once the 1-minute rollups are checked to count it"
                )
        return self

    def class_metrics(self) -> dict[str, list[str]]:
        return {name: list(mc.metrics) for name, mc in self.classes.items()}

    def raw_days(self) -> dict[str, int]:
        return {DEFAULT_CLASS: self.default_raw_days, **{n: mc.raw_days for n, mc in self.classes.items()}}

    def check_late_limit(self, late_limit_s: float) -> None:
        """Compaction must wait out the ingest late limit; raises ``ValueError`` naming both keys."""
        if self.compact_after_days * 86_400 < late_limit_s:
            raise ValueError(
                f"retention.compact_after_days ({self.compact_after_days}) must cover ingest.late_limit_s "
                f"({late_limit_s:g} s = {late_limit_s / 86400:g} days)"
            )


@dataclass(frozen=True, slots=True)
class Hold:
    """Stored data a case refers to: a device's readings in [start, end) (Unix seconds)."""

    device: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Action:
    kind: Literal["compact", "drop", "keep", "expire_rollups"]
    day: int
    cls: str | None  # None for compaction (a hot day holds every class)
    reason: str


def held_days(holds: Iterable[Hold]) -> set[int]:
    days: set[int] = set()
    for h in holds:
        first, last = int(h.start * 1000) // DAY_MS, (int(h.end * 1000) - 1) // DAY_MS
        days.update(range(first, max(first, last) + 1))
    return days


def compactions(parts: Partitions, now: float, settings: RetentionSettings) -> list[Action]:
    """Hot days old enough to compact."""
    today = int(now * 1000) // DAY_MS
    return [
        Action("compact", d, None, f"older than {settings.compact_after_days} days")
        for d in sorted(parts.raw_days)
        if d < today - settings.compact_after_days
    ]


def rollup_expiry(parts: Partitions, now: float, settings: RetentionSettings) -> list[Action]:
    """Days of 1-minute rollups older than ``rollup_1m_days`` (never one whose raw data is still stored)."""
    today = int(now * 1000) // DAY_MS
    stored = parts.raw_days | {d for _, d in parts.packed}
    return [
        Action("expire_rollups", d, None, f"1-minute rollups older than {settings.rollup_1m_days} days")
        for d in sorted(parts.rollup_days)
        if d < today - settings.rollup_1m_days and d not in stored
    ]


def drops(
    parts: Partitions,
    now: float,
    settings: RetentionSettings,
    counts: Callable[[str, int], tuple[int, int]],
    holds: Iterable[Hold] = (),
) -> list[Action]:
    """Compacted (class, day) tables past their class's retention: drop, or keep with the reason.

    ``counts(cls, day)`` gives (readings the 1-minute rollups count, readings stored).
    """
    today = int(now * 1000) // DAY_MS
    held = held_days(holds)
    raw_days = settings.raw_days()
    actions = []
    for cls, day in sorted(parts.packed, key=lambda p: (p[1], p[0])):
        keep_days = raw_days.get(cls)
        if keep_days is None or day >= today - keep_days:
            continue  # a class no longer configured keeps its data until someone decides
        if day in held:
            actions.append(Action("keep", day, cls, "a case refers to readings of this day"))
        elif day in parts.raw_days:
            actions.append(Action("keep", day, cls, "the day still has hot readings: compact first"))
        else:
            rolled, stored = counts(cls, day)
            if rolled != stored:
                actions.append(Action("keep", day, cls, f"rollups count {rolled} readings, {stored} stored"))
            else:
                actions.append(Action("drop", day, cls, f"older than {keep_days} days, {stored} readings rolled up"))
    return actions


class LifecycleStore(Protocol):
    def partitions(self) -> Partitions: ...

    def compact_day(self, day: int, classes: Mapping[str, Sequence[str]]) -> int: ...

    def drop_packed(self, cls: str, day: int) -> None: ...

    def drop_rollup_day(self, day: int) -> None: ...

    def day_counts(self, cls: str, day: int, classes: Mapping[str, Sequence[str]]) -> tuple[int, int]: ...


def run(store: LifecycleStore, settings: RetentionSettings, now: float, holds: Iterable[Hold] = ()) -> list[Action]:
    """Compact, then drop what is past retention; returns what was done and what was kept, with reasons."""
    classes = settings.class_metrics()
    done = compactions(store.partitions(), now, settings)
    for action in done:
        store.compact_day(action.day, classes)
    decided = drops(store.partitions(), now, settings, lambda c, d: store.day_counts(c, d, classes), holds)
    for action in decided:
        if action.kind == "drop" and action.cls is not None:
            store.drop_packed(action.cls, action.day)
    expired = rollup_expiry(store.partitions(), now, settings)
    for action in expired:
        store.drop_rollup_day(action.day)
    return done + decided + expired
