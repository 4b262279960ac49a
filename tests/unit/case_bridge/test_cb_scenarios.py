"""Seed stories at the store level (SQLite in memory, time as a parameter)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from case_bridge.deadlines import deadline
from case_bridge.store import CaseStore, open_case_store
from tests.support.cases import COVER_GAS, COVER_UNKNOWN, COVER_WATER, CST, GAUGE, T0, alarm


@pytest.fixture
def store() -> Iterator[CaseStore]:
    s = open_case_store("sqlite://:memory:", verify_hold_s=600.0, verify_grace_s=60.0)
    yield s
    s.close()


def test_storm_road_water_case_filed_dispatched_to_street_office(store: CaseStore) -> None:
    # Friday evening storm: 18:40 local, outside working hours
    t = dt.datetime(2026, 11, 27, 18, 40, tzinfo=CST).timestamp()
    minor = store.apply_alarm(alarm("wl-0001", "road-water-depth", severity="minor", value=0.16, t=t), GAUGE, t)
    assert minor.case is not None and minor.case.state == "reported"  # left for a handler at minor
    # normal urgency: filing within 1 working hour -> Monday 09:30 (the weekend does not count)
    assert minor.case.deadline == dt.datetime(2026, 11, 30, 9, 30, tzinfo=CST).timestamp()
    crit_t = t + 1200
    crit = store.apply_alarm(
        alarm("wl-0001", "road-water-depth", "escalated", "critical", t=crit_t, value=0.42), GAUGE, crit_t
    )
    c = crit.case
    assert c is not None and crit.effect == "updated"
    assert (c.state, c.unit, c.service_code, c.urgency) == ("dispatched", "lingyin-street", "S0111", "very_urgent")
    # very urgent road water: 1 natural hour from dispatch, even at night
    assert c.dispatched_at == crit_t and c.due_at == crit_t + 3600.0 and c.deadline == c.due_at
    assert store.worklist(unit="lingyin-street", now=crit_t).items[0].id == c.id
    assert store.worklist(unit="lingyin-street", now=crit_t + 3601).items[0].overdue
    assert store.worklist(unit="lingyin-street", overdue=True, now=crit_t + 3601).total == 1


def test_normal_road_water_uses_working_hours(store: CaseStore) -> None:
    t = dt.datetime(2026, 11, 27, 17, 0, tzinfo=CST).timestamp()  # Friday 17:00
    c = store.create_reported("S0111", "积水", grid="330106001001", now=t)
    c = store.transition(c.id, "file", "s", now=t)
    c = store.transition(c.id, "dispatch", "d", now=t)
    # 4 working hours: 0.5 h Friday, then Monday 08:30 + 3.5 h = 12:00
    assert c.due_at == dt.datetime(2026, 11, 30, 12, 0, tzinfo=CST).timestamp()
    cal = store.catalog.calendar
    assert c.due_at == deadline(cal, t, 4, store.catalog.category("S0111").limits_for("normal").basis)  # type: ignore[arg-type]


def test_cover_lifted_goes_to_the_owner(store: CaseStore) -> None:
    water = store.apply_alarm(alarm("mh-0001", "manhole-cover-open", severity="critical"), COVER_WATER, T0).case
    gas = store.apply_alarm(alarm("mh-0002", "manhole-tilt", severity="major"), COVER_GAS, T0).case
    nobody = store.apply_alarm(alarm("mh-0003", "manhole-tilt", severity="major"), COVER_UNKNOWN, T0).case
    assert water is not None and gas is not None and nobody is not None
    assert (water.service_code, water.category_name, water.unit, water.state) == ("B0101", "上水井盖", "water-supply",
                                                                                 "dispatched")
    assert (gas.service_code, gas.unit) == ("B0111", "gas")
    # an unowned cover (no component id): 0114 无主井盖 goes to the locality (grid -> street)
    assert (nobody.service_code, nobody.unit) == ("B0114", "hubin-street")
    # a cover is 6 natural hours when urgent (Guangzhou regulation), 2 h when very urgent
    assert water.due_at == T0 + 2 * 3600 and gas.due_at == T0 + 6 * 3600


def test_fix_reported_while_cover_still_tilted_is_returned(store: CaseStore) -> None:
    o = store.apply_alarm(alarm("mh-0001", "manhole-tilt", value=32.0), COVER_WATER, T0)
    assert o.case_id is not None
    store.transition(o.case_id, "accept", "h", now=T0 + 600, role="handler")
    store.transition(o.case_id, "report_fix", "h", now=T0 + 1800, role="handler")
    assert store.due_verifications(now=T0 + 1830) == []  # inside the grace period
    (out,) = store.due_verifications(now=T0 + 1900)
    assert out.case is not None and out.case.state == "returned"
    last = store.timeline(o.case_id)[-1]
    assert (last.action, last.actor, last.role) == ("fail_verification", "system", "system")
    assert last.data["alarms"][0]["value"] == 32.0 and last.data["reason"] == "alarm still active"


def test_alarm_back_inside_the_hold_returns_the_case(store: CaseStore) -> None:
    o = store.apply_alarm(alarm("mh-0001", "manhole-tilt", alarm_id="a1", value=32.0), COVER_WATER, T0)
    assert o.case_id is not None
    store.apply_alarm(alarm("mh-0001", "manhole-tilt", "cleared", alarm_id="a1", t=T0 + 900, value=0.3),
                      COVER_WATER, T0 + 900)
    store.transition(o.case_id, "report_fix", "h", now=T0 + 1000)
    back = store.apply_alarm(alarm("mh-0001", "manhole-tilt", alarm_id="a2", t=T0 + 1200, value=25.0), COVER_WATER,
                             T0 + 1200)
    assert back.effect == "attached" and back.case is not None and back.case.state == "returned"
    assert back.actions == ("fail_verification",)


def test_fix_that_holds_is_verified_and_closed(store: CaseStore) -> None:
    o = store.apply_alarm(alarm("mh-0001", "manhole-tilt", value=32.0), COVER_WATER, T0)
    assert o.case_id is not None
    store.transition(o.case_id, "accept", "h", now=T0 + 600)
    store.apply_alarm(alarm("mh-0001", "manhole-tilt", "cleared", t=T0 + 1700, value=0.4), COVER_WATER, T0 + 1700)
    store.transition(o.case_id, "report_fix", "h", now=T0 + 1800)
    assert store.due_verifications(now=T0 + 2300) == []  # hold 600 s not yet over
    (out,) = store.due_verifications(now=T0 + 2400)
    assert out.case is not None and out.case.state == "closed" and out.actions == ("verify", "close")
    tl = store.timeline(o.case_id)
    assert [e.action for e in tl][-2:] == ["verify", "close"]
    assert tl[-2].data["normal_since"] == T0 + 1800 and tl[-2].data["hold_s"] == 600.0
    assert store.open_cases_for(["mh-0001"]) == {"mh-0001": {}}
