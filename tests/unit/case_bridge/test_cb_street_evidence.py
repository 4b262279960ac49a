"""Verification the street confirms: the readings-based gate, the auto-return's evidence, 督办. Pure,
except the store tests, which run on an in-memory SQLite case store (no sockets)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest

from case_bridge.bridge import urge_notice
from case_bridge.config import NotifySettings, load_catalog
from case_bridge.errors import IllegalTransition, SensorNotClear
from case_bridge.lifecycle import AlarmView
from case_bridge.model import AuditEntry
from case_bridge.notify import Notifier
from case_bridge.policy import (
    ClearCondition,
    PolicyConfig,
    Situation,
    StreetReading,
    Transition,
    VerificationDue,
    decide,
    event_window,
    sensor_gate,
)
from case_bridge.store import CaseStore, open_case_store
from case_bridge.workflow import Action, Role, check_urge
from tests.support.cases import T0, a_case

DEPTH = ClearCondition("road-water-depth", "depth", 0.12)  # the alarm clears below 0.12 m
EVIDENCE = {"metric": "depth", "value": 0.25, "threshold": 0.15, "clear_at": 0.12, "direction": "above"}
# cleared by the rule engine (staleness, a manual clear) while the water still stands at 0.2 m
CLEARED = AlarmView("wl-0001:road-water-depth:1", "wl-0001", "road-water-depth", False, "major", T0 + 60, 0.2,
                    T0 + 60, T0, {"metric": "depth", "value": 0.2, "clear_at": 0.12, "direction": "above"})
ACTIVE = replace(CLEARED, active=True, cleared_at=None, value=0.25, evidence=EVIDENCE)


def utc(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# ------------------------------------------------------------------ the readings-based gate


@pytest.mark.parametrize("action", [Action.VERIFY, Action.CLOSE])
def test_cleared_alarm_but_latest_reading_above_clear_level_refuses_and_shows_it(action: Action) -> None:
    high = StreetReading("wl-0001", DEPTH, 0.2, T0 + 900)
    with pytest.raises(SensorNotClear) as err:
        sensor_gate(a_case(state="handled"), action, Role.SUPERVISOR, [CLEARED], None, readings=[high])
    msg = str(err.value)
    assert err.value.alarms == ()
    assert f"wl-0001 depth 0.2 at {utc(T0 + 900)} (clears at depth < 0.12)" in msg
    assert "override with a written reason" in msg


def test_reading_inside_the_clear_condition_or_unknown_lets_it_through() -> None:
    case = a_case(state="handled")
    low = StreetReading("wl-0001", DEPTH, 0.05, T0 + 900)
    unknown = StreetReading("wl-0001", DEPTH, None, None)
    assert sensor_gate(case, Action.VERIFY, Role.SUPERVISOR, [CLEARED], None, readings=[low, unknown]) is None
    # exactly at the clear level is not clear: the engine clears strictly below it
    at = StreetReading("wl-0001", DEPTH, 0.12, T0 + 900)
    with pytest.raises(SensorNotClear):
        sensor_gate(case, Action.VERIFY, Role.SUPERVISOR, [CLEARED], None, readings=[at])


def test_below_rule_clears_above_its_level() -> None:
    low_battery = ClearCondition("battery-low", "battery", 3.4, above=False)
    assert low_battery.holds(3.5) and not low_battery.holds(3.4) and low_battery.text == "battery > 3.4"


def test_supervisor_override_records_the_readings_and_handler_may_not() -> None:
    case = a_case(state="handled")
    high = StreetReading("wl-0001", DEPTH, 0.2, T0 + 900)
    rec = sensor_gate(case, Action.VERIFY, Role.SUPERVISOR, [CLEARED], "gauge silted up; road dry", readings=[high])
    assert rec is not None and rec["alarms"] == []
    assert rec["readings"] == [{"device": "wl-0001", "metric": "depth", "value": 0.2, "t": T0 + 900, "clear": False,
                                "condition": {"rule": "road-water-depth", "metric": "depth", "clear_at": 0.12,
                                              "direction": "above", "text": "depth < 0.12"}}]
    with pytest.raises(IllegalTransition, match="may not override"):
        sensor_gate(case, Action.VERIFY, Role.HANDLER, [CLEARED], "trust me", readings=[high])


def test_citizen_case_ignores_sensor_readings() -> None:
    case = replace(a_case(state="handled"), source="citizen")
    assert sensor_gate(case, Action.VERIFY, Role.SUPERVISOR, [], None,
                       readings=[StreetReading("wl-0001", DEPTH, 0.9, T0)]) is None


def test_clear_condition_from_alarm_evidence() -> None:
    assert ClearCondition.from_evidence("r", EVIDENCE) == ClearCondition("r", "depth", 0.12, True)
    assert ClearCondition.from_evidence("r", {"metric": "battery", "clear_at": 3.4, "direction": "below"}) == \
        ClearCondition("r", "battery", 3.4, False)
    assert ClearCondition.from_evidence("r", {"fault": "lamp"}) is None  # an event alarm names no level


# ------------------------------------------------------------------ the automatic return's evidence

CFG = PolicyConfig(load_catalog(), verify_hold_s=600.0, verify_grace_s=300.0)


def test_auto_return_attaches_failing_readings_condition_and_chart_window() -> None:
    case = a_case(state="handled", handled_at=T0 + 3600)
    d = decide(VerificationDue(case, (ACTIVE,)), Situation(), CFG, T0 + 3600 + 301)
    (cmd,) = d.commands
    assert isinstance(cmd, Transition) and cmd.action is Action.FAIL_VERIFICATION
    assert cmd.note == f"alarm still active: wl-0001 depth 0.25 at {utc(T0 + 60)} (clears at depth < 0.12)"
    data: dict[str, Any] = cmd.data or {}
    assert data["readings"] == [{"device": "wl-0001", "metric": "depth", "value": 0.25, "t": T0 + 60, "clear": False,
                                 "condition": {"rule": "road-water-depth", "metric": "depth", "clear_at": 0.12,
                                               "direction": "above", "text": "depth < 0.12"}}]
    chart = data["chart"]
    assert chart["device"] == "wl-0001" and chart["metric"] == "depth" and chart["clear_at"] == 0.12
    assert chart["mark"] == T0  # the alarm's raise, inside the window with room on both sides
    assert chart["start"] == T0 - 3 * 3600 and chart["end"] >= T0 + 60 + 3600
    assert data["alarms"][0]["alarm_id"] == ACTIVE.alarm_id  # the verdict's own evidence is kept


def test_readings_passed_in_win_over_the_alarms_own_sample() -> None:
    case = a_case(state="handled", handled_at=T0 + 3600)
    latest = StreetReading("wl-0001", DEPTH, 0.31, T0 + 3800)
    d = decide(VerificationDue(case, (ACTIVE,), (latest,)), Situation(), CFG, T0 + 3600 + 301)
    (cmd,) = d.commands
    assert isinstance(cmd, Transition) and "0.31" in cmd.note and (cmd.data or {})["readings"][0]["t"] == T0 + 3800


def test_alarm_cleared_but_its_last_sample_outside_clear_condition_waits() -> None:
    case = a_case(state="handled", handled_at=T0 + 3600, auto_close=True)
    assert decide(VerificationDue(case, (CLEARED,)), Situation(), CFG, T0 + 3 * 3600).effect == "wait"
    dry = replace(CLEARED, evidence={**CLEARED.evidence, "value": 0.05})
    d = decide(VerificationDue(case, (dry,)), Situation(), CFG, T0 + 3 * 3600)
    assert d.actions == ("verify", "close")


def test_event_window_keeps_the_event_inside() -> None:
    start, end = event_window(T0, None)
    assert (start, end) == (T0 - 3 * 3600, T0 + 3 * 3600)
    start, end = event_window(T0, T0 + 10 * 3600, pad_s=3600)
    assert start == T0 - 3600 and end == T0 + 10 * 3600 + 1200  # the last reading is not at the edge either


# ------------------------------------------------------------------ 督办


def test_urge_only_when_overdue_or_nearly_due() -> None:
    check_urge("dispatched", T0, T0 + 60, 4 * 3600)  # overdue
    check_urge("dispatched", T0 + 4 * 3600, T0, 4 * 3600)  # due within the window
    with pytest.raises(IllegalTransition, match=r"due in 5\.0 h; urging is for cases overdue or due within 4 h"):
        check_urge("dispatched", T0 + 5 * 3600, T0, 4 * 3600)
    with pytest.raises(IllegalTransition, match="no deadline"):
        check_urge("parked", None, T0, 4 * 3600)


@pytest.fixture
def store() -> Any:
    s = open_case_store("sqlite://:memory:")
    yield s
    s.close()


def dispatched(store: CaseStore) -> int:
    c = store.create_reported("S0111", "积水 30 cm", grid="330106001001", now=T0)
    store.transition(c.id, "file", "sup", role="supervisor", now=T0 + 60)
    return store.transition(c.id, "dispatch", "cmd", role="command", now=T0 + 120).id


def test_store_urge_records_lateness_keeps_state_and_clock(store: CaseStore) -> None:
    cid = dispatched(store)
    before = store.get(cid)
    assert before.deadline is not None
    with pytest.raises(IllegalTransition, match="urging is for cases overdue"):
        store.transition(cid, "urge", "cmd", role="command", now=T0 + 180)
    with pytest.raises(IllegalTransition, match="role 'handler' may not 'urge'"):
        store.transition(cid, "urge", "ha", role="case_handler", now=before.deadline + 60)
    after = store.transition(cid, "urge", "cmd", role="command", note="today, please", now=before.deadline + 60)
    assert (after.state, after.deadline, after.due_at) == (before.state, before.deadline, before.due_at)
    last = store.timeline(cid)[-1]
    assert (last.action, last.actor, last.note) == ("urge", "cmd", "today, please")
    assert last.data == {"unit": before.unit, "deadline": before.deadline, "overdue_s": 60.0}
    ((entry, case),) = store.urges_since(before.deadline, before.deadline + 61)
    assert entry.id == last.id and case.id == cid
    assert store.urges_since(before.deadline + 60, before.deadline + 120) == []


def test_urge_notice_names_the_lateness_and_goes_to_the_units_channels(store: CaseStore) -> None:
    cid = dispatched(store)
    case = store.get(cid)
    entry = AuditEntry(9, cid, T0, "cmd", "dispatcher", "urge", "dispatched", "dispatched", "today", None,
                       {"overdue_s": 7200.0})
    n = urge_notice(case, entry, "灵隐街道办事处")
    assert n.key == f"urge:{cid}:9" and n.title.startswith("督办 案件")
    assert n.lines[:3] == ("派遣 @ 灵隐街道办事处", "已超期 overdue 2.0 h", "督办 cmd: today")
    soon = urge_notice(case, replace(entry, data={"overdue_s": -1800.0}, note=""), "x")
    assert soon.lines[1:3] == ("距时限 due in 0.5 h", "督办 cmd")
    targets = [{"name": n_, "type": "webhook", "url": f"http://127.0.0.1:9/{n_}"} for n_ in ("duty", "unit-a")]
    settings = NotifySettings.model_validate({"targets": targets, "primary": ["duty"],
                                              "unit_targets": {case.unit: ["unit-a"]}})
    notifier = Notifier(settings, store.notices, clock=lambda: T0)
    assert notifier.notify_unit(n, case.unit) == ["unit-a"]
    assert notifier.notify_unit(replace(n, key="other"), "hubin-street") == ["duty"]  # no channel: the duty room


def test_unit_targets_must_name_known_targets() -> None:
    with pytest.raises(ValueError, match=r"unit_targets.lingyin-street\[0\]: unknown notify target 'nope'"):
        NotifySettings.model_validate({"unit_targets": {"lingyin-street": ["nope"]}})



def test_unit_targets_must_name_units_of_the_units_table() -> None:
    from case_bridge.cli import check_unit_targets
    from contracts.errors import ConfigError

    targets = [{"name": "t", "type": "webhook", "url": "http://127.0.0.1:9/t"}]
    ok = NotifySettings.model_validate({"targets": targets, "unit_targets": {"lingyin-street": ["t"]}})
    check_unit_targets(ok, load_catalog(), "cloud.yaml")
    bad = NotifySettings.model_validate({"targets": targets, "unit_targets": {"lingyin": ["t"]}})
    with pytest.raises(ConfigError, match=r"cloud.yaml: notify.unit_targets.lingyin: not a unit of the units table"):
        check_unit_targets(bad, load_catalog(), "cloud.yaml")
