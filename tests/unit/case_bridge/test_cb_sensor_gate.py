"""Street-confirmed verification: a person's verify/close of a sensor case against its alarms."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from case_bridge.errors import IllegalTransition, SensorNotClear
from case_bridge.lifecycle import AlarmView
from case_bridge.policy import OVERRIDE_ROLES, SENSOR_GATED, sensor_gate
from case_bridge.workflow import Action, Role
from tests.support.cases import T0, a_case

ACTIVE = AlarmView("wl-0001:road-water-depth:1", "wl-0001", "road-water-depth", True, "major", T0 + 60, 0.21,
                   None, T0)
CLEARED = replace(ACTIVE, active=False, cleared_at=T0 + 30, value=0.01)


@pytest.mark.parametrize("action", sorted(SENSOR_GATED))
@pytest.mark.parametrize("role", list(Role))
def test_active_alarm_refuses_without_reason_naming_alarm_value_and_time(action: Action, role: Role) -> None:
    with pytest.raises(SensorNotClear) as err:
        sensor_gate(a_case(state="handled"), action, role, [CLEARED, ACTIVE], None)
    assert err.value.alarms == ((ACTIVE.alarm_id, 0.21, T0 + 60),)
    msg = str(err.value)
    when = dt.datetime.fromtimestamp(T0 + 60, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    assert ACTIVE.alarm_id in msg and "latest value 0.21 at " + when in msg
    assert isinstance(err.value, IllegalTransition)


@pytest.mark.parametrize("action", sorted(SENSOR_GATED))
@pytest.mark.parametrize("role", list(Role))
def test_only_supervisor_roles_override_with_a_reason(action: Action, role: Role) -> None:
    case = a_case(state="handled")
    if role in OVERRIDE_ROLES:
        rec = sensor_gate(case, action, role, [ACTIVE], "  gauge fouled by silt, road dry on site  ")
        assert rec == {"reason": "gauge fouled by silt, road dry on site",
                       "alarms": [{"alarm_id": ACTIVE.alarm_id, "device": "wl-0001", "rule": "road-water-depth",
                                   "value": 0.21, "t": T0 + 60}]}
    else:
        with pytest.raises(IllegalTransition, match=f"role '{role.value}' may not override"):
            sensor_gate(case, action, role, [ACTIVE], "road dry")


def test_blank_reason_is_no_reason() -> None:
    with pytest.raises(SensorNotClear):
        sensor_gate(a_case(state="handled"), Action.VERIFY, Role.SUPERVISOR, [ACTIVE], "   ")


@pytest.mark.parametrize("action", sorted(SENSOR_GATED))
def test_cleared_alarms_or_a_non_sensor_case_need_no_override(action: Action) -> None:
    assert sensor_gate(a_case(state="handled"), action, Role.SUPERVISOR, [CLEARED], None) is None
    assert sensor_gate(a_case(state="handled"), action, Role.SUPERVISOR, [], None) is None
    citizen = replace(a_case(state="handled"), source="open311")
    assert sensor_gate(citizen, action, Role.SUPERVISOR, [ACTIVE], None) is None


@pytest.mark.parametrize("action", sorted(set(Action) - SENSOR_GATED))
def test_other_actions_are_not_gated_and_take_no_override_reason(action: Action) -> None:
    assert sensor_gate(a_case(state="handled"), action, Role.SUPERVISOR, [ACTIVE], None) is None
    with pytest.raises(IllegalTransition, match="applies only to verify or close"):
        sensor_gate(a_case(state="handled"), action, Role.SUPERVISOR, [ACTIVE], "because")
