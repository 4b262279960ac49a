"""The role and object-level policy table, checked exhaustively (it is small and pure)."""

from __future__ import annotations

import pytest

from console.policy import ROLE_PERMS, Perm, Principal, Role, case_scope, case_visible, filter_actions, has, may_act

DUTY = Principal("duty", Role.DUTY_OFFICER)
HA = Principal("ha", Role.CASE_HANDLER, "unit-a")
SUP = Principal("sup", Role.SUPERVISOR)
ADMIN = Principal("admin", Role.ADMIN)
KEY = Principal("hotline", None, api_key=True)


@pytest.mark.parametrize(("who", "perm", "expected"), [
    (DUTY, Perm.ALARMS_ACK, True), (HA, Perm.ALARMS_ACK, False), (SUP, Perm.ALARMS_ACK, False),
    (ADMIN, Perm.ALARMS_ACK, False), (DUTY, Perm.CASES_ACT, False), (HA, Perm.CASES_ACT, True),
    (SUP, Perm.CASES_APPROVE, True), (HA, Perm.CASES_APPROVE, False), (ADMIN, Perm.CASES_READ, False),
    (ADMIN, Perm.CONFIG_RELOAD, True), (SUP, Perm.CONFIG_RELOAD, False), (HA, Perm.STATS_READ, False),
    (KEY, Perm.DEVICES_READ, False),
    (DUTY, Perm.LAMPS_CONTROL, True), (SUP, Perm.LAMPS_CONTROL, True), (HA, Perm.LAMPS_CONTROL, False),
    (ADMIN, Perm.LAMPS_CONTROL, False), (KEY, Perm.LAMPS_CONTROL, False),
])
def test_route_permissions(who: Principal, perm: Perm, expected: bool) -> None:
    assert has(who, perm) is expected


def test_every_role_has_an_entry() -> None:
    assert set(ROLE_PERMS) == set(Role)


def test_handler_sees_only_own_unit() -> None:
    assert case_scope(HA) == "unit-a"
    assert case_visible(HA, "unit-a")
    assert not case_visible(HA, "unit-b")
    assert not case_visible(HA, None)


def test_handler_without_unit_sees_nothing() -> None:
    nobody = Principal("x", Role.CASE_HANDLER, None)
    assert not case_visible(nobody, None)
    assert not case_visible(nobody, "unit-a")


def test_supervisor_and_duty_see_all_units_admin_none() -> None:
    for unit in ("unit-a", "unit-b", None):
        assert case_visible(SUP, unit)
        assert case_visible(DUTY, unit)
        assert not case_visible(ADMIN, unit)


def test_object_level_actions() -> None:
    assert may_act(HA, "unit-a", "accept")
    assert not may_act(HA, "unit-b", "accept")
    assert not may_act(HA, "unit-a", "approve_extension")  # supervisor-only, whatever the workflow says
    assert may_act(SUP, "unit-b", "approve_extension")
    assert not may_act(DUTY, "unit-a", "accept")  # read-only on cases
    assert filter_actions(HA, "unit-a", ["accept", "approve_extension"]) == ["accept"]
    assert filter_actions(HA, "unit-b", ["accept"]) == []


# every console seat × the re-assignment actions × every state: which the seat may take
_REASSIGN_CELLS = {
    ("supervisor", "reassign"): {"dispatched", "in_handling", "returned"},
    ("case_handler", "request_reassign"): {"dispatched", "in_handling"},
    ("command", "reassign"): {"dispatched", "in_handling", "returned"},  # 指挥中心 (added with the role)
}


@pytest.mark.parametrize("seat", [r.value for r in Role])
@pytest.mark.parametrize("action", ["reassign", "request_reassign"])
def test_reassignment_seat_matrix_cell_by_cell(seat: str, action: str) -> None:
    from case_bridge.workflow import Position, State, seat_actions, seat_role

    for state in State:
        allowed = state.value in _REASSIGN_CELLS.get((seat, action), set())
        assert (action in [a.value for a in seat_actions(Position(state), seat)]) is allowed, (seat, state)
        assert (seat_role(Position(state), seat, action) is not None) is allowed, (seat, state)


def test_reassign_is_for_approving_roles_only_on_any_unit() -> None:
    assert may_act(SUP, "unit-b", "reassign")
    assert not may_act(HA, "unit-a", "reassign")
    assert may_act(HA, "unit-a", "request_reassign") and not may_act(HA, "unit-b", "request_reassign")
    assert not may_act(DUTY, "unit-a", "reassign")


def test_actor_names_machine_clients() -> None:
    assert KEY.actor == "apikey:hotline"
    assert HA.actor == "ha"


def test_every_console_role_is_a_workflow_seat() -> None:
    """The console names no workflow role of its own: case_bridge says what each login role acts as."""
    from case_bridge.workflow import SEAT_ROLES, Position, State, seat_actions, seat_role

    assert set(SEAT_ROLES) == {r.value for r in Role}
    handled = Position(State.HANDLED)
    assert [a.value for a in seat_actions(handled, "supervisor")] == ["verify", "fail_verification"]
    assert seat_actions(Position(State.DISPATCHED), "duty_officer") == ()
    assert seat_role(Position(State.FILED), "supervisor", "dispatch") is not None
    assert seat_role(Position(State.FILED), "case_handler", "dispatch") is None
