"""The centres as the city works them (一级监督、二级指挥), walked cell by cell.

Every login role x every workflow action x own/foreign unit x every state (with and without a
pending extension) against a table written from the duties, not from the code: the supervision
centre files, verifies and closes; the command centre dispatches, re-assigns, urges and decides
extensions and parking; the unit works its own cases. Once with the default roles config, once
with a city that merges its duty room into the command centre.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from case_bridge.config import CategoryTable, CentreRoles, load_catalog
from case_bridge.workflow import Action, Position, State
from console.policy import Perm, Principal, Role, centre_grants, has, may_take

SUPERVISION = {"file", "reject", "verify", "fail_verification", "close", "cancel"}
COMMAND = {"file", "dispatch", "park", "resume", "cancel", "approve_extension", "deny_extension", "reassign", "urge"}
UNIT = {"accept", "return", "report_fix", "request_extension", "request_reassign"}
HANDLING = {"dispatched", "in_handling"}

# action -> the states it may be taken in (pending: only with / only without a pending extension)
STATES_OF: dict[str, set[str]] = {
    "file": {"reported"}, "reject": {"reported"},
    "cancel": {"reported", "filed", "dispatched", "in_handling", "returned", "parked"},
    "dispatch": {"filed", "returned"}, "accept": {"dispatched"}, "return": HANDLING, "report_fix": HANDLING,
    "verify": {"handled"}, "fail_verification": {"handled"}, "close": {"verified"},
    "park": {"filed", "dispatched", "in_handling", "returned"}, "resume": {"parked"},
    "request_extension": HANDLING, "approve_extension": HANDLING, "deny_extension": HANDLING,
    "reassign": {"dispatched", "in_handling", "returned"}, "request_reassign": HANDLING, "urge": HANDLING,
}
NEEDS_PENDING = {"approve_extension", "deny_extension"}
NEEDS_NO_PENDING = {"request_extension"}

DEFAULT_DUTIES: dict[str, set[str]] = {
    "duty_officer": set(), "case_handler": UNIT, "supervisor": SUPERVISION | COMMAND, "admin": set(),
    "supervision": SUPERVISION, "command": COMMAND,
}
MERGED_DUTIES = {**DEFAULT_DUTIES, "duty_officer": COMMAND}
MERGED = CentreRoles(command=("command", "supervisor", "duty_officer"))

OWN, FOREIGN = "lingyin-street", "hubin-street"


def expected(duties: dict[str, set[str]], role: Role, action: str, own: bool, state: str, pending: bool) -> bool:
    if action not in duties[role.value] or state not in STATES_OF[action]:
        return False
    if (action in NEEDS_PENDING and not pending) or (action in NEEDS_NO_PENDING and pending):
        return False
    return own or role is not Role.CASE_HANDLER  # a unit acts on its own unit's cases only


def principal(role: Role, grants: dict[Role, frozenset[Perm]]) -> Principal:
    return Principal("u", role, OWN if role is Role.CASE_HANDLER else None, grants=grants.get(role, frozenset()))


@pytest.mark.parametrize(("config", "duties"), [(CentreRoles(), DEFAULT_DUTIES), (MERGED, MERGED_DUTIES)],
                         ids=["default", "duty-room-is-command-centre"])
@pytest.mark.parametrize("role", list(Role))
def test_matrix_cell_by_cell(config: CentreRoles, duties: dict[str, set[str]], role: Role) -> None:
    seats = config.seats()
    p = principal(role, centre_grants(seats))
    cells = 0
    for action in Action:
        for own in (True, False):
            for state in State:
                for pending in (False, True):
                    if pending and state.value not in HANDLING:
                        continue  # an extension is pending only while the unit handles the case
                    got = may_take(p, OWN if own else FOREIGN, Position(state, pending), action.value, seats)
                    want = expected(duties, role, action.value, own, state.value, pending)
                    assert got is want, (role.value, action.value, "own" if own else "foreign", state.value, pending)
                    cells += 1
    assert cells == len(Action) * 2 * (len(State) + len(HANDLING))


def test_every_action_and_role_is_in_the_table() -> None:
    assert set(STATES_OF) == {a.value for a in Action}
    assert set(DEFAULT_DUTIES) == {r.value for r in Role}


def test_the_shipped_config_is_the_documented_default() -> None:
    roles = load_catalog().table.roles
    assert roles.seats() == CentreRoles().seats()
    assert roles.seats()["duty_officer"] == ()


def test_merged_duty_room_gets_case_rights_only_there() -> None:
    grants = centre_grants(MERGED.seats())
    assert grants == {Role.DUTY_OFFICER: frozenset({Perm.CASES_ACT, Perm.CASES_APPROVE})}
    assert centre_grants(CentreRoles().seats()) == {}
    duty = Principal("duty", Role.DUTY_OFFICER, grants=grants[Role.DUTY_OFFICER])
    assert has(duty, Perm.CASES_ACT) and not has(Principal("duty", Role.DUTY_OFFICER), Perm.CASES_ACT)


@pytest.mark.parametrize(("roles", "where"), [
    ({"command": ["command", "admin"]}, "roles.command[1]: 'admin'"),
    ({"supervision": ["case_handler"]}, "roles.supervision[0]: 'case_handler'"),
    ({"unit": ["admin"]}, "roles.unit[0]: 'admin'"),
    ({"command": ["mayor"]}, "mayor"),
    ({"urge_window_h": 0}, "urge_window_h"),
    ({"commnd": ["command"]}, "commnd"),
])
def test_roles_config_is_validated_not_fixed(roles: dict[str, object], where: str) -> None:
    with pytest.raises(ValidationError) as err:
        CategoryTable.model_validate({"categories": [], "roles": roles})
    assert where in str(err.value)


def test_centre_seats_read_the_reporters_contact_handlers_do_not() -> None:
    from console.policy import contact_visible

    for role in (Role.SUPERVISION, Role.COMMAND):
        assert contact_visible(Principal("c", role), FOREIGN)
    assert not contact_visible(Principal("h", Role.CASE_HANDLER, OWN), OWN)
