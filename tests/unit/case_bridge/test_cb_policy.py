"""The alarm -> case policy as a pure function: every rule, without a database."""

from __future__ import annotations

from dataclasses import replace
from functools import cache

from hypothesis import given
from hypothesis import strategies as st

from case_bridge.config import Catalog, Urgency, load_catalog
from case_bridge.lifecycle import AlarmView
from case_bridge.policy import (
    NEW_CASE,
    AlarmUpdate,
    Decision,
    Escalate,
    LinkAlarm,
    OpenCase,
    PolicyConfig,
    RecordTransition,
    Situation,
    Transition,
    UpdateAlarmState,
    VerificationDue,
    decide,
    lookup_key,
)
from case_bridge.workflow import Action, State
from tests.support.cases import COVER_WATER, GAUGE, LAMP_A, LAMP_B, T0, a_case, alarm


@cache
def _catalog() -> Catalog:
    return load_catalog()


def cfg(hold_s: float = 600.0, grace_s: float = 60.0) -> PolicyConfig:
    return PolicyConfig(_catalog(), hold_s, grace_s)


def kinds(d: Decision) -> list[str]:
    return [type(c).__name__ for c in d.commands]


def actions(d: Decision) -> list[Action]:
    return [c.action for c in d.commands if isinstance(c, Transition)]


def test_a_transition_seen_before_changes_nothing() -> None:
    tr = alarm("wl-0001", "road-water-depth", severity="critical")
    d = decide(tr, Situation(seen=True, linked=a_case()), cfg(), T0)
    assert d == Decision("duplicate")


def test_first_raise_opens_a_case_and_remembers_the_transition() -> None:
    tr = alarm("wl-0001", "road-water-depth", severity="minor")
    d = decide(tr, Situation(device=GAUGE), cfg(), T0)
    assert (d.effect, d.case_id, d.devices) == ("created", NEW_CASE, ("wl-0001",))
    assert d.commands[:2] == (RecordTransition(tr), UpdateAlarmState(tr, AlarmUpdate.INSERT))
    (opened,) = [c for c in d.commands if isinstance(c, OpenCase)]
    assert opened.draft.category.service_code == "S0111" and opened.draft.corr_key == "device:wl-0001:road-water-depth"
    assert actions(d) == []  # minor road water waits for a handler


def test_auto_dispatch_files_and_dispatches_the_new_case() -> None:
    tr = alarm("wl-0001", "road-water-depth", severity="critical")
    d = decide(tr, Situation(device=GAUGE), cfg(), T0)
    assert kinds(d) == ["RecordTransition", "UpdateAlarmState", "OpenCase", "Transition", "Transition"]
    assert actions(d) == [Action.FILE, Action.DISPATCH] and d.actions == ("file", "dispatch")
    assert all(c.case_id == NEW_CASE for c in d.commands if isinstance(c, Transition))


def test_a_rule_that_maps_to_no_case_opens_none() -> None:
    tr = alarm("wl-0001", "battery-low")
    d = decide(tr, Situation(device=GAUGE), cfg(), T0)
    assert d.effect == "no_case" and kinds(d) == ["RecordTransition", "UpdateAlarmState"]
    assert lookup_key(tr, GAUGE, cfg()) is None


def test_a_raise_with_an_open_case_on_its_key_attaches() -> None:
    tr = alarm("wl-0001", "road-water-depth", severity="major", alarm_id="a2")
    open_case = a_case(3, "dispatched", "urgent")
    d = decide(tr, Situation(alarm_last_t=None, correlated=open_case, device=GAUGE), cfg(), T0)
    assert d.effect == "attached" and d.case_id == 3
    assert LinkAlarm(3, tr) in d.commands and not any(isinstance(c, OpenCase) for c in d.commands)


def test_one_lamp_circuit_is_one_case_whatever_the_lamp_or_rule() -> None:
    a = alarm("lamp-0001", "supplyVoltage")
    b = alarm("lamp-0002", "lampFailure")
    assert lookup_key(a, LAMP_A, cfg()) == lookup_key(b, LAMP_B, cfg()) == "circuit:c-7"
    d = decide(b, Situation(correlated=a_case(5, "reported", device="lamp-0001"), device=LAMP_B), cfg(), T0)
    assert d.effect == "attached" and LinkAlarm(5, b) in d.commands


def test_one_manhole_incident_is_one_case_whatever_the_condition() -> None:
    cover = alarm("mh-0001", "manhole-cover-open", severity="critical", alarm_id="c1")
    tilt = alarm("mh-0001", "manhole-tilt", severity="major", alarm_id="t1", t=T0 + 5)
    assert lookup_key(cover, COVER_WATER, cfg()) == lookup_key(tilt, COVER_WATER, cfg()) == "incident:mh-0001"
    d = decide(tilt, Situation(correlated=a_case(6, "dispatched", device="mh-0001"), device=COVER_WATER), cfg(),
               T0 + 5)
    assert d.effect == "attached" and LinkAlarm(6, tilt) in d.commands
    assert not any(isinstance(c, OpenCase) for c in d.commands)
    other = alarm("mh-0002", "manhole-tilt", alarm_id="t2")
    assert lookup_key(other, COVER_WATER, cfg()) != lookup_key(cover, COVER_WATER, cfg())  # device id differs


def test_correlation_is_read_from_the_category_table_not_hard_coded() -> None:
    table = _catalog().table
    rules = tuple(r.model_copy(update={"correlate": "device"}) if r.rule == "manhole-*" else r for r in table.rules)
    per_condition = PolicyConfig(replace(_catalog(), table=table.model_copy(update={"rules": rules})))
    cover = alarm("mh-0001", "manhole-cover-open", alarm_id="c1")
    tilt = alarm("mh-0001", "manhole-tilt", alarm_id="t1")
    assert lookup_key(cover, COVER_WATER, per_condition) == "device:mh-0001:manhole-cover-open"
    assert lookup_key(tilt, COVER_WATER, per_condition) == "device:mh-0001:manhole-tilt"


def test_escalation_raises_urgency_and_auto_dispatches_a_waiting_case() -> None:
    tr = alarm("wl-0001", "road-water-depth", "escalated", "critical")
    d = decide(tr, Situation(alarm_last_t=T0 - 60, linked=a_case(4, "reported", "normal"), device=GAUGE), cfg(), T0)
    assert d.effect == "updated"
    (esc,) = [c for c in d.commands if isinstance(c, Escalate)]
    assert (esc.case_id, esc.from_urgency, esc.to_urgency, esc.alarm) == (4, Urgency.NORMAL, Urgency.VERY_URGENT, tr)
    assert "(critical)" in esc.description and "(minor)" not in esc.description
    assert actions(d) == [Action.FILE, Action.DISPATCH]
    assert UpdateAlarmState(tr, AlarmUpdate.UPDATE) in d.commands


def test_a_filed_case_is_only_dispatched() -> None:
    tr = alarm("wl-0001", "road-water-depth", "escalated", "critical")
    d = decide(tr, Situation(linked=a_case(4, "filed", "very_urgent"), device=GAUGE), cfg(), T0)
    assert actions(d) == [Action.DISPATCH] and not any(isinstance(c, Escalate) for c in d.commands)


def test_urgency_never_goes_down() -> None:
    tr = alarm("wl-0001", "road-water-depth", "escalated", "minor")
    d = decide(tr, Situation(linked=a_case(4, "dispatched", "very_urgent"), device=GAUGE), cfg(), T0)
    assert not any(isinstance(c, Escalate) for c in d.commands) and actions(d) == []


def test_a_raise_after_the_fix_was_reported_returns_the_case() -> None:
    tr = alarm("mh-0001", "manhole-tilt", alarm_id="again")
    case = a_case(9, "handled", "urgent", device="mh-0001", handled_at=T0 - 100)
    d = decide(tr, Situation(correlated=case, device=COVER_WATER), cfg(), T0)
    (ret,) = [c for c in d.commands if isinstance(c, Transition)]
    assert ret.action is Action.FAIL_VERIFICATION and ret.case_id == 9
    assert ret.data is not None and ret.data["alarm"]["alarm_id"] == "again"


def test_a_raise_on_a_closed_case_changes_no_case() -> None:
    tr = alarm("wl-0001", "road-water-depth", "escalated", "critical")
    d = decide(tr, Situation(linked=a_case(4, "closed"), device=GAUGE), cfg(), T0)
    assert (d.effect, d.case_id, d.devices) == ("updated", 4, ())
    assert kinds(d) == ["RecordTransition", "UpdateAlarmState"]


def test_clear_and_acknowledge_only_update_the_alarm() -> None:
    clear = alarm("wl-0001", "road-water-depth", "cleared", t=T0 + 10)
    d = decide(clear, Situation(alarm_last_t=T0, linked=a_case(4, "handled")), cfg(), T0)
    assert (d.effect, d.case_id) == ("updated", 4) and d.commands[1] == UpdateAlarmState(clear, AlarmUpdate.UPDATE)
    ack = alarm("wl-0001", "road-water-depth", "acknowledged", t=T0 + 20)
    assert decide(ack, Situation(alarm_last_t=T0), cfg(), T0).commands[1] == UpdateAlarmState(ack, AlarmUpdate.ACK)
    assert lookup_key(clear, GAUGE, cfg()) is None


def test_a_late_transition_does_not_roll_the_alarm_back() -> None:
    late = alarm("wl-0001", "road-water-depth", "cleared", t=T0)
    d = decide(late, Situation(alarm_last_t=T0 + 30), cfg(), T0 + 40)
    assert kinds(d) == ["RecordTransition"]


def _view(active: bool, *, raised_at: float = T0, cleared_at: float | None = None) -> AlarmView:
    return AlarmView("a1", "wl-0001", "road-water-depth", active, "major", T0, 0.2, cleared_at, raised_at)


def test_verification_passes_after_the_hold_and_closes_when_configured() -> None:
    case = a_case(2, "handled", handled_at=T0, auto_close=True)
    due = VerificationDue(case, (_view(False, cleared_at=T0 - 5),))
    assert decide(due, Situation(), cfg(hold_s=600), T0 + 599).effect == "wait"
    d = decide(due, Situation(), cfg(hold_s=600), T0 + 600)
    assert actions(d) == [Action.VERIFY, Action.CLOSE] and d.devices == ("wl-0001",)
    manual = decide(VerificationDue(a_case(2, "handled", handled_at=T0), due.alarms), Situation(), cfg(), T0 + 600)
    assert actions(manual) == [Action.VERIFY]


def test_verification_fails_an_alarm_still_active_after_the_grace() -> None:
    due = VerificationDue(a_case(2, "handled", handled_at=T0), (_view(True, raised_at=T0 - 100),))
    assert decide(due, Situation(), cfg(grace_s=60), T0 + 30).effect == "wait"
    d = decide(due, Situation(), cfg(grace_s=60), T0 + 61)
    (ret,) = d.commands
    assert isinstance(ret, Transition) and ret.action is Action.FAIL_VERIFICATION
    assert ret.note == "alarm still active" and ret.data is not None and ret.data["alarms"][0]["value"] == 0.2


def test_verification_only_for_a_handled_case() -> None:
    due = VerificationDue(a_case(2, "returned", handled_at=T0), ())
    assert decide(due, Situation(), cfg(), T0 + 10_000) == Decision("wait")


_STATES = [s.value for s in State]


@given(state=st.sampled_from(_STATES), urgency=st.sampled_from([u.value for u in Urgency]),
       severity=st.sampled_from(["minor", "major", "critical"]), linked=st.booleans())
def test_every_system_transition_is_one_the_workflow_allows(state: str, urgency: str, severity: str,
                                                           linked: bool) -> None:
    """Whatever the case's state, the policy never asks the store for an illegal action."""
    from case_bridge import workflow

    tr = alarm("wl-0001", "road-water-depth", "escalated", severity)
    case = a_case(4, state, urgency, handled_at=T0 - 10)
    sit = Situation(linked=case, device=GAUGE) if linked else Situation(correlated=case, device=GAUGE)
    if not case.is_open and not linked:
        return  # the store only loads an open case for a correlation key
    pos = case.position
    for cmd in decide(tr, sit, cfg(), T0).commands:
        if isinstance(cmd, Transition):
            pos = workflow.apply(pos, cmd.action, workflow.Role.SYSTEM)  # raises on an illegal step
        if isinstance(cmd, Escalate):
            assert list(Urgency).index(cmd.to_urgency) > list(Urgency).index(cmd.from_urgency)


@given(seen=st.booleans(), kind=st.sampled_from(["raised", "escalated", "acknowledged", "cleared"]))
def test_nothing_opens_twice_for_a_linked_alarm(seen: bool, kind: str) -> None:
    tr = alarm("wl-0001", "road-water-depth", kind, "critical")
    d = decide(tr, Situation(seen=seen, linked=a_case(4, "dispatched")), cfg(), T0)
    assert not any(isinstance(c, (OpenCase, LinkAlarm)) for c in d.commands)
    assert (d.commands == ()) == seen


def test_an_acknowledgement_does_not_order_the_alarms_transitions() -> None:
    # acks carry the console's wall clock; a clear carries its sample time, which after a backlog
    # is earlier: the clear must still be applied (else the sensor gate sees the alarm active for ever)
    ack = alarm("wl-0001", "road-water-depth", "acknowledged", "critical", t=T0 + 900)
    assert UpdateAlarmState(ack, AlarmUpdate.ACK) in decide(ack, Situation(alarm_last_t=T0 + 10), cfg(), T0).commands
    clear = alarm("wl-0001", "road-water-depth", "cleared", "critical", t=T0 + 400)
    d = decide(clear, Situation(alarm_last_t=T0 + 10, linked=a_case()), cfg(), T0 + 900)
    assert UpdateAlarmState(clear, AlarmUpdate.UPDATE) in d.commands
    late = alarm("wl-0001", "road-water-depth", "cleared", "critical", t=T0 + 5)  # older than the last one
    assert not any(isinstance(c, UpdateAlarmState) for c in decide(late, Situation(alarm_last_t=T0 + 10), cfg(),
                                                                       T0).commands)
