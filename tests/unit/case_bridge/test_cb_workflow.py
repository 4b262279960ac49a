"""Every (state, action) pair: legal ones land where the table says, illegal ones are refused."""

from __future__ import annotations

import itertools

import pytest

from case_bridge.errors import IllegalTransition
from case_bridge.workflow import (
    OPEN_STATES,
    ROLE_ACTIONS,
    TERMINAL,
    TRANSITIONS,
    Action,
    Position,
    Role,
    State,
    allowed_actions,
    apply,
)

EXT = {Action.REQUEST_EXTENSION, Action.APPROVE_EXTENSION, Action.DENY_EXTENSION}


def _legal(pos: Position, action: Action) -> bool:
    if (pos.state, action) not in TRANSITIONS:
        return False
    if action is Action.REQUEST_EXTENSION:
        return not pos.extension_pending
    if action in (Action.APPROVE_EXTENSION, Action.DENY_EXTENSION):
        return pos.extension_pending
    return True


ALL = [
    (Position(s, p), a)
    for s, p, a in itertools.product(State, (False, True), Action)
    if not p or s in (State.DISPATCHED, State.IN_HANDLING)
]


@pytest.mark.parametrize(("pos", "action"), ALL, ids=str)
def test_every_pair(pos: Position, action: Action) -> None:
    if _legal(pos, action):
        after = apply(pos, action)
        assert after.state is TRANSITIONS[(pos.state, action)]
        if action is Action.REQUEST_EXTENSION:
            assert after.extension_pending
        elif action in (Action.APPROVE_EXTENSION, Action.DENY_EXTENSION):
            assert not after.extension_pending
        assert action.value in [a.value for a in allowed_actions(pos)]
    else:
        with pytest.raises(IllegalTransition) as err:
            apply(pos, action)
        assert err.value.state == pos.state.value
        assert err.value.action == action.value
        assert set(err.value.allowed) == {a.value for a in allowed_actions(pos)}
        assert action.value in str(err.value)


def test_main_path() -> None:
    pos = Position(State.REPORTED)
    for action, state in [
        (Action.FILE, State.FILED),
        (Action.DISPATCH, State.DISPATCHED),
        (Action.ACCEPT, State.IN_HANDLING),
        (Action.REPORT_FIX, State.HANDLED),
        (Action.VERIFY, State.VERIFIED),
        (Action.CLOSE, State.CLOSED),
    ]:
        pos = apply(pos, action)
        assert pos.state is state
    assert not pos.state.is_open


def test_return_and_redispatch_and_park() -> None:
    pos = apply(Position(State.DISPATCHED), Action.RETURN)
    assert pos.state is State.RETURNED
    assert apply(pos, Action.DISPATCH).state is State.DISPATCHED
    parked = apply(Position(State.IN_HANDLING), Action.PARK)
    assert parked.state is State.PARKED
    assert apply(parked, Action.RESUME).state is State.DISPATCHED


def test_extension_cycle() -> None:
    pos = apply(Position(State.IN_HANDLING), Action.REQUEST_EXTENSION)
    assert pos == Position(State.IN_HANDLING, True)
    with pytest.raises(IllegalTransition, match="already pending"):
        apply(pos, Action.REQUEST_EXTENSION)
    assert apply(pos, Action.APPROVE_EXTENSION) == Position(State.IN_HANDLING, False)
    with pytest.raises(IllegalTransition, match="no extension request is pending"):
        apply(Position(State.IN_HANDLING), Action.APPROVE_EXTENSION)
    # leaving the handling stage drops the pending request
    assert apply(pos, Action.REPORT_FIX) == Position(State.HANDLED, False)


def test_terminal_states_allow_nothing() -> None:
    for s in TERMINAL:
        assert allowed_actions(Position(s)) == ()
    for s in OPEN_STATES:
        assert allowed_actions(Position(s)), s


@pytest.mark.parametrize("role", list(Role))
def test_roles(role: Role) -> None:
    for (state, action), _to in TRANSITIONS.items():
        pos = Position(state, action in (Action.APPROVE_EXTENSION, Action.DENY_EXTENSION))
        if action in ROLE_ACTIONS[role]:
            apply(pos, action, role)
        else:
            with pytest.raises(IllegalTransition, match=f"role '{role.value}'"):
                apply(pos, action, role)


def test_handler_cannot_close_supervisor_cannot_accept() -> None:
    assert Action.CLOSE not in allowed_actions(Position(State.VERIFIED), Role.HANDLER)
    assert allowed_actions(Position(State.DISPATCHED), Role.SUPERVISOR) == (Action.CANCEL,)
    assert Action.ACCEPT in allowed_actions(Position(State.DISPATCHED), Role.HANDLER)


def test_unknown_action_is_refused_clearly() -> None:
    with pytest.raises(IllegalTransition, match="unknown action"):
        apply(Position(State.REPORTED), "teleport")


def test_extension_actions_keep_the_state() -> None:
    for (state, action), to in TRANSITIONS.items():
        if action in EXT:
            assert to is state
