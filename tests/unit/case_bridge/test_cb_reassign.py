"""改派 (re-assignment) and 申请退回/改派: who may, what they need, and what happens to the clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from case_bridge.config import DEFAULT_CATEGORIES, Limits, load_catalog
from case_bridge.deadlines import Basis, WorkingCalendar
from case_bridge.errors import IllegalTransition
from case_bridge.lifecycle import Clocks, after
from case_bridge.workflow import Action, Position, Role, State, allowed_actions, apply, check_details, seat_actions
from contracts.errors import ConfigError

# (role, action, from state) -> allowed; every cell of the two new actions, written out
R, Q = Action.REASSIGN, Action.REQUEST_REASSIGN
MATRIX: dict[tuple[Role, Action], set[State]] = {
    (Role.DISPATCHER, R): {State.DISPATCHED, State.IN_HANDLING, State.RETURNED},
    (Role.ADMIN, R): {State.DISPATCHED, State.IN_HANDLING, State.RETURNED},
    (Role.SUPERVISOR, R): set(),
    (Role.HANDLER, R): set(),
    (Role.SYSTEM, R): set(),
    (Role.HANDLER, Q): {State.DISPATCHED, State.IN_HANDLING},
    (Role.ADMIN, Q): {State.DISPATCHED, State.IN_HANDLING},
    (Role.DISPATCHER, Q): set(),
    (Role.SUPERVISOR, Q): set(),
    (Role.SYSTEM, Q): set(),
}


@pytest.mark.parametrize(("role", "action", "state"),
                         [(r, a, s) for (r, a) in MATRIX for s in State], ids=str)
def test_role_matrix_cell_by_cell(role: Role, action: Action, state: State) -> None:
    pos = Position(state)
    if state in MATRIX[(role, action)]:
        to = apply(pos, action, role)
        assert to.state is (State.DISPATCHED if action is R else State.RETURNED)
        assert action in allowed_actions(pos, role)
    else:
        with pytest.raises(IllegalTransition):
            apply(pos, action, role)
        assert action not in allowed_actions(pos, role)


def test_console_seats() -> None:
    assert Action.REASSIGN in seat_actions(Position(State.RETURNED), "supervisor")
    assert Action.REQUEST_REASSIGN in seat_actions(Position(State.IN_HANDLING), "case_handler")
    assert Action.REASSIGN not in seat_actions(Position(State.IN_HANDLING), "case_handler")


def test_reassign_drops_the_old_units_extension_request() -> None:
    assert apply(Position(State.IN_HANDLING, True), R, Role.DISPATCHER) == Position(State.DISPATCHED, False)


def test_details_reason_and_unit() -> None:
    with pytest.raises(IllegalTransition, match="written reason"):
        check_details("dispatched", R, "  ", "a", "b")
    with pytest.raises(IllegalTransition, match="written reason"):
        check_details("dispatched", Q, "", "a", None)
    with pytest.raises(IllegalTransition, match="other than 'a'"):
        check_details("dispatched", R, "wrong owner", "a", "a")
    with pytest.raises(IllegalTransition, match="other than 'a'"):
        check_details("dispatched", R, "wrong owner", "a", None)
    with pytest.raises(IllegalTransition, match="only a dispatch or a re-assignment"):
        check_details("dispatched", Action.ACCEPT, "", "a", "b")
    check_details("dispatched", R, "wrong owner", "a", "b")
    check_details("dispatched", Q, "not ours: gas main", "a", None)
    check_details("filed", Action.DISPATCH, "", "a", "b")
    check_details("filed", Action.DISPATCH, "", "a", None)


CAL = WorkingCalendar(utc_offset_s=0)  # natural-hour limits below: the working hours do not matter
LIM = Limits(basis=Basis.NATURAL, handle_h=10)
H = 3600.0


@pytest.mark.parametrize(("rule", "due"), [("restart", 5 * H + 10 * H), ("keep", 10 * H)])
def test_reassign_clock_rule(rule: str, due: float) -> None:
    dispatched = Clocks(10 * H, 10 * H, 0.0, 0.0, None, None, None, 0)
    c = after(dispatched, State.DISPATCHED, R, limits=LIM, cal=CAL, now=5 * H, reassign_clock=rule)
    assert (c.due_at, c.deadline, c.dispatched_at) == (due, due, 0.0)
    back = after(dispatched, State.RETURNED, Q, limits=LIM, cal=CAL, now=5 * H)
    assert back.due_at == 10 * H and back.deadline == 5 * H + LIM.dispatch_h * H


def test_rule_from_the_city_table_and_a_category_override(tmp_path: Path) -> None:
    cat = load_catalog()
    assert cat.table.reassign_clock == "restart"
    assert cat.reassign_clock(cat.category("S0111")) == "restart"
    text = DEFAULT_CATEGORIES.read_text(encoding="utf-8").replace("reassign_clock: restart", "reassign_clock: keep", 1)
    text = text.replace("agency_unit: drainage\n", "agency_unit: drainage\n    reassign_clock: restart\n", 1)
    p = tmp_path / "categories.yaml"
    p.write_text(text, encoding="utf-8")
    kept = load_catalog(p)
    assert kept.reassign_clock(kept.category("B0101")) == "keep"
    assert kept.reassign_clock(kept.category("S0111")) == "restart"
    p.write_text(text.replace("reassign_clock: keep", "reassign_clock: sometimes", 1), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_catalog(p)
    assert "reassign_clock" in err.value.key_path and err.value.value == "sometimes"
