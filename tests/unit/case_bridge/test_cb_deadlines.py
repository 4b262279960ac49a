"""Deadline arithmetic across nights, weekends, holidays and make-up days; properties with hypothesis."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from case_bridge.deadlines import (
    Basis,
    WorkingCalendar,
    add_working,
    deadline,
    handled_on_time,
    is_overdue,
    time_to_deadline,
    working_between,
)

CST = dt.timezone(dt.timedelta(hours=8))
H = 3600.0


def t(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> float:
    return dt.datetime(y, mo, d, h, mi, tzinfo=CST).timestamp()


CAL = WorkingCalendar(
    holidays=frozenset({dt.date(2026, 10, 1), dt.date(2026, 10, 2), dt.date(2026, 10, 5)}),
    workdays=frozenset({dt.date(2026, 10, 10)}),  # a Saturday worked (调休)
)


def test_inside_one_period() -> None:
    # Wednesday 2026-11-25 09:00 + 2 h -> 11:00
    assert add_working(CAL, t(2026, 11, 25, 9), 2 * H) == t(2026, 11, 25, 11)


def test_across_lunch() -> None:
    # 11:00 + 2 h: 1 h to 12:00, lunch, 13:30 + 1 h = 14:30
    assert add_working(CAL, t(2026, 11, 25, 11), 2 * H) == t(2026, 11, 25, 14, 30)


def test_across_the_night() -> None:
    # 16:30 + 4 h: 1 h to 17:30, next morning 08:30 + 3 h = 11:30
    assert add_working(CAL, t(2026, 11, 25, 16, 30), 4 * H) == t(2026, 11, 26, 11, 30)


def test_reported_at_night_starts_next_morning() -> None:
    assert add_working(CAL, t(2026, 11, 25, 22), 1 * H) == t(2026, 11, 26, 9, 30)


def test_across_the_weekend() -> None:
    # Friday 2026-11-27 17:00 + 4 h -> 0.5 h Friday, Monday 08:30 + 3.5 h = 12:00
    assert add_working(CAL, t(2026, 11, 27, 17), 4 * H) == t(2026, 11, 30, 12)


def test_saturday_report_counts_from_monday() -> None:
    assert add_working(CAL, t(2026, 11, 28, 10), 4 * H) == t(2026, 11, 30, 14)  # 3.5 h + lunch + 0.5 h


def test_holidays_and_makeup_day() -> None:
    # Wed 2026-09-30 17:00 + 4 h: 0.5 h Wed; Thu 1st, Fri 2nd holiday; Sat/Sun off; Mon 5th holiday;
    # Tue 6th 08:30 + 3.5 h = 12:00
    assert add_working(CAL, t(2026, 9, 30, 17), 4 * H) == t(2026, 10, 6, 12)
    # Friday 9th 17:00 + 2 h: 0.5 h Fri, Saturday 10th is a make-up working day: 08:30 + 1.5 h = 10:00
    assert add_working(CAL, t(2026, 10, 9, 17), 2 * H) == t(2026, 10, 10, 10)


def test_limit_ending_at_close_ends_there() -> None:
    assert add_working(CAL, t(2026, 11, 25, 16, 30), 1 * H) == t(2026, 11, 25, 17, 30)


def test_natural_hours_ignore_the_calendar() -> None:
    assert deadline(CAL, t(2026, 11, 27, 23), 6, Basis.NATURAL) == t(2026, 11, 28, 5)
    assert deadline(CAL, t(2026, 11, 27, 23), 4, Basis.WORKING) == t(2026, 11, 30, 14)


def test_overdue_and_time_left() -> None:
    assert is_overdue(100.0, 101.0)
    assert handled_on_time(100.0, 100.0) is True and handled_on_time(100.5, 100.0) is False
    assert handled_on_time(None, 100.0) is None and handled_on_time(100.0, None) is None
    assert handled_on_time(100.0, 100.0, overridden=True) is False
    assert not is_overdue(100.0, 100.0)
    assert not is_overdue(None, 1e12)
    assert time_to_deadline(100.0, 40.0) == 60.0
    assert time_to_deadline(None, 40.0) is None


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="negative"):
        add_working(CAL, 0.0, -1.0)
    with pytest.raises(ValueError, match="ordered"):
        WorkingCalendar(periods=((10 * 3600, 9 * 3600),))
    with pytest.raises(ValueError, match="no working time"):
        add_working(WorkingCalendar(weekdays=frozenset()), 0.0, 1.0)


def test_between_examples() -> None:
    assert working_between(CAL, t(2026, 11, 27, 17), t(2026, 11, 30, 12)) == 4 * H
    assert working_between(CAL, t(2026, 11, 30, 12), t(2026, 11, 27, 17)) == -4 * H
    assert working_between(CAL, t(2026, 11, 28, 0), t(2026, 11, 29, 23)) == 0.0


START = st.floats(min_value=t(2026, 1, 1), max_value=t(2027, 12, 31), allow_nan=False)
DUR = st.floats(min_value=1.0, max_value=400 * H, allow_nan=False)
CALS = st.sampled_from(
    [
        CAL,
        WorkingCalendar(),
        WorkingCalendar(weekdays=frozenset(range(7)), periods=((0, 86400),)),  # 24/7 = natural time
        WorkingCalendar(utc_offset_s=-5 * 3600, periods=((9 * 3600, 17 * 3600),)),
    ]
)


@given(CALS, START, DUR)
def test_working_time_elapsed_equals_the_limit(cal: WorkingCalendar, start: float, dur: float) -> None:
    end = add_working(cal, start, dur)
    assert end >= start + dur - 1e-6  # working time never runs faster than the wall clock
    assert working_between(cal, start, end) == pytest.approx(dur, abs=1e-3)


@given(CALS, START, DUR, DUR)
def test_additive(cal: WorkingCalendar, start: float, a: float, b: float) -> None:
    assert add_working(cal, add_working(cal, start, a), b) == pytest.approx(add_working(cal, start, a + b), abs=1e-3)


@given(CALS, START, DUR, DUR)
def test_monotonic(cal: WorkingCalendar, start: float, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert add_working(cal, start, lo) <= add_working(cal, start, hi)


@given(CALS, START, DUR)
def test_deadline_lands_inside_working_time(cal: WorkingCalendar, start: float, dur: float) -> None:
    end = add_working(cal, start, dur)
    day, midnight = cal._day_of(end - 1e-3)
    assert cal.is_working_day(day)
    assert any(midnight + s <= end <= midnight + e + 1e-6 for s, e in cal.periods)


def test_24_7_calendar_equals_natural_time() -> None:
    cal = WorkingCalendar(weekdays=frozenset(range(7)), periods=((0, 86400),))
    assert add_working(cal, t(2026, 11, 27, 23), 30 * H) == t(2026, 11, 29, 5)
