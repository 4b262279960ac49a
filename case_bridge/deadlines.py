"""Deadline arithmetic on a working calendar (工作时) or in natural hours (自然时). Pure.

City case limits are mostly stated in working hours ("4 工作时"): the clock only runs on
working days inside office hours, stops over nights, weekends and public holidays, and runs
on the make-up working days (调休) that replace them. Urgent items use natural hours. All
times are Unix seconds (UTC); the calendar is evaluated in a fixed local UTC offset (China
has no DST; a city with DST would need a per-day offset, which this module does not do).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum

_DAY_S = 86400
_MAX_DAYS = 3660  # ten years: a calendar with no working time must fail, not loop


class Basis(StrEnum):
    WORKING = "working"  # 工作时: only inside the calendar's working periods
    NATURAL = "natural"  # 自然时: wall-clock hours


@dataclass(frozen=True, slots=True)
class WorkingCalendar:
    """Working days and hours. ``periods`` are (start, end) seconds after local midnight."""

    utc_offset_s: int = 8 * 3600
    weekdays: frozenset[int] = frozenset({0, 1, 2, 3, 4})  # Monday=0 .. Sunday=6
    periods: tuple[tuple[int, int], ...] = ((8 * 3600 + 1800, 12 * 3600), (13 * 3600 + 1800, 17 * 3600 + 1800))
    holidays: frozenset[dt.date] = field(default_factory=frozenset)
    workdays: frozenset[dt.date] = field(default_factory=frozenset)  # 调休: weekend days that are worked

    def __post_init__(self) -> None:
        last = 0
        for start, end in self.periods:
            if not 0 <= start < end <= _DAY_S or start < last:
                raise ValueError(f"working periods must be ordered, non-overlapping, inside one day: {self.periods}")
            last = end

    def is_working_day(self, day: dt.date) -> bool:
        if day in self.workdays:
            return True
        if day in self.holidays:
            return False
        return day.weekday() in self.weekdays

    def _day_of(self, t: float) -> tuple[dt.date, float]:
        """Local date of ``t`` and the Unix time of that local midnight."""
        local = t + self.utc_offset_s
        day_index = int(local // _DAY_S)
        midnight = day_index * _DAY_S - self.utc_offset_s
        return dt.date(1970, 1, 1) + dt.timedelta(days=day_index), float(midnight)


def add_working(cal: WorkingCalendar, start: float, seconds: float) -> float:
    """The moment when ``seconds`` of working time have elapsed after ``start``.

    Zero seconds returns ``start`` itself, even outside working hours. A limit that ends
    exactly at the close of a period ends there (not at the next morning).
    """
    if seconds < 0:
        raise ValueError(f"negative duration: {seconds}")
    if seconds == 0:
        return start
    remaining = seconds
    day, midnight = cal._day_of(start)
    cursor = start
    for _ in range(_MAX_DAYS):
        if cal.is_working_day(day):
            for p_start, p_end in cal.periods:
                begin = max(midnight + p_start, cursor)
                end = midnight + p_end
                if begin >= end:
                    continue
                avail = end - begin
                if remaining <= avail:
                    return begin + remaining
                remaining -= avail
        day += dt.timedelta(days=1)
        midnight += _DAY_S
        cursor = midnight
    raise ValueError("the working calendar has no working time in ten years")


def working_between(cal: WorkingCalendar, a: float, b: float) -> float:
    """Working seconds in [a, b); negative when b < a."""
    if b < a:
        return -working_between(cal, b, a)
    total = 0.0
    day, midnight = cal._day_of(a)
    while midnight < b:
        if cal.is_working_day(day):
            for p_start, p_end in cal.periods:
                lo = max(midnight + p_start, a)
                hi = min(midnight + p_end, b)
                if hi > lo:
                    total += hi - lo
        day += dt.timedelta(days=1)
        midnight += _DAY_S
    return total


def deadline(cal: WorkingCalendar, start: float, limit_h: float, basis: Basis) -> float:
    """When a limit of ``limit_h`` hours started at ``start`` runs out."""
    if basis is Basis.NATURAL:
        if limit_h < 0:
            raise ValueError(f"negative duration: {limit_h}")
        return start + limit_h * 3600.0
    return add_working(cal, start, limit_h * 3600.0)


def is_overdue(deadline_t: float | None, now: float) -> bool:
    return deadline_t is not None and now > deadline_t


def time_to_deadline(deadline_t: float | None, now: float) -> float | None:
    """Natural seconds left (negative once overdue); ``None`` when no clock runs (parked, closed)."""
    return None if deadline_t is None else deadline_t - now


def handled_on_time(handled_at: float | None, due_at: float | None, overridden: bool = False) -> bool | None:
    """及时解决: the fix was reported within the handling limit (``None``: no limit ran or no fix yet).

    The same rule the statistics count (:mod:`case_bridge.stats`), for one case: a case verified
    or closed over an active alarm (``overridden``) is never on time.
    """
    if handled_at is None or due_at is None:
        return None
    return handled_at <= due_at and not overridden
