"""The case workflow (GB/T 30428.8 立案、处置和结案) as a pure state machine.

Main path::

    reported ─file→ filed ─dispatch→ dispatched ─accept→ in_handling ─report_fix→ handled
        │              │                 │                  │                      │
      reject         park/cancel     return/park         return/park          verify / fail_verification
        ▼                                ▼                                         ▼
     rejected                         returned ─dispatch→ dispatched           verified ─close→ closed

- ``return`` (回退): the unit says the case is not theirs (wrong dispatch); the command
  centre re-dispatches it. A failed verification (``fail_verification``, the sensor still
  reads abnormal) also lands in ``returned`` with the evidence.
- ``reassign`` (改派): the command centre sends a dispatched, in-handling or returned case to
  another unit, with a reason; ``request_reassign`` (申请退回/改派) is the unit asking for it,
  with a reason, which hands the case back to the command centre (``returned``). Whether the
  handling clock restarts is the city's rule (``reassign_clock`` in the category table).
- ``park`` (挂账): unsolvable within the limit (season, engineering works); the clock stops.
  ``resume`` brings it back to ``dispatched`` with a fresh handling limit.
- 延期 (extension) is not a state: ``request_extension`` sets a pending flag while the case
  stays where it is; ``approve_extension`` / ``deny_extension`` clear it (approval extends
  the deadline).
- ``urge`` (督办/催办) is not a state either: the command centre presses the unit on a dispatched or
  in-handling case that is overdue or due within the city's ``roles.urge_window_h``
  (:func:`check_urge`); the audit row records it and the bridge notifies the unit.
- ``rejected`` (注销 at filing), ``cancelled`` and ``closed`` are terminal.

Roles (who may do what) follow the classic split: the supervision centre (监督中心) files,
verifies and closes; the command centre (指挥中心) dispatches, parks and approves extensions;
the responsible unit (责任单位) accepts, returns, reports the fix and asks for extensions;
``system`` is the bridge itself (auto-filing, auto-dispatch, sensor verification).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from case_bridge.errors import IllegalTransition


class State(StrEnum):
    REPORTED = "reported"  # 上报
    FILED = "filed"  # 立案
    REJECTED = "rejected"  # 不予立案 / 注销
    DISPATCHED = "dispatched"  # 派遣
    IN_HANDLING = "in_handling"  # 处置中
    HANDLED = "handled"  # 处置反馈 (fix reported)
    VERIFIED = "verified"  # 核查通过
    CLOSED = "closed"  # 结案
    RETURNED = "returned"  # 回退 (awaiting re-dispatch)
    PARKED = "parked"  # 挂账
    CANCELLED = "cancelled"  # 作废

    @property
    def label_zh(self) -> str:
        return _STATE_LABELS[self][0]

    @property
    def label_en(self) -> str:
        return _STATE_LABELS[self][1]

    @property
    def is_open(self) -> bool:
        return self not in TERMINAL


# (中文, English): the one place that names a state for people (console, notices, Open311 notes)
_STATE_LABELS: dict[State, tuple[str, str]] = {
    State.REPORTED: ("上报", "reported"),
    State.FILED: ("立案", "filed"),
    State.REJECTED: ("不予立案", "rejected"),
    State.DISPATCHED: ("派遣", "dispatched"),
    State.IN_HANDLING: ("处置中", "in handling"),
    State.HANDLED: ("已处置", "handled"),
    State.VERIFIED: ("已核查", "verified"),
    State.CLOSED: ("结案", "closed"),
    State.RETURNED: ("回退", "returned"),
    State.PARKED: ("挂账", "parked"),
    State.CANCELLED: ("作废", "cancelled"),
}

TERMINAL: frozenset[State] = frozenset({State.REJECTED, State.CLOSED, State.CANCELLED})
OPEN_STATES: tuple[State, ...] = tuple(s for s in State if s not in TERMINAL)


class Action(StrEnum):
    FILE = "file"
    REJECT = "reject"
    DISPATCH = "dispatch"
    ACCEPT = "accept"
    RETURN = "return"
    REPORT_FIX = "report_fix"
    VERIFY = "verify"
    FAIL_VERIFICATION = "fail_verification"
    CLOSE = "close"
    PARK = "park"
    RESUME = "resume"
    CANCEL = "cancel"
    REQUEST_EXTENSION = "request_extension"
    APPROVE_EXTENSION = "approve_extension"
    DENY_EXTENSION = "deny_extension"
    REASSIGN = "reassign"
    REQUEST_REASSIGN = "request_reassign"
    URGE = "urge"

    @property
    def label_zh(self) -> str:
        return ACTION_LABELS[self.value][0]

    @property
    def label_en(self) -> str:
        return ACTION_LABELS[self.value][1]


# (中文, English) of every workflow action, and of the audit entries the system writes that are
# not workflow actions (``report`` opens a case, ``attach`` links an alarm, ``escalate`` raises urgency,
# ``override`` records a supervisor's verify/close against an active alarm)
ACTION_LABELS: dict[str, tuple[str, str]] = {
    "file": ("立案", "file"),
    "reject": ("不予立案", "reject"),
    "dispatch": ("派遣", "dispatch"),
    "accept": ("接收", "accept"),
    "return": ("回退", "return"),
    "report_fix": ("处置反馈", "report fixed"),
    "verify": ("核查通过", "verify"),
    "fail_verification": ("核查不通过", "fail verification"),
    "close": ("结案", "close"),
    "park": ("挂账", "park"),
    "resume": ("恢复处置", "resume"),
    "cancel": ("作废", "cancel"),
    "request_extension": ("申请延期", "request extension"),
    "approve_extension": ("批准延期", "approve extension"),
    "deny_extension": ("驳回延期", "deny extension"),
    "reassign": ("改派", "reassign"),
    "request_reassign": ("申请退回/改派", "request reassignment"),
    "urge": ("督办", "urge"),
    "report": ("上报", "report"),
    "attach": ("关联告警", "alarm attached"),
    "escalate": ("升级", "escalated"),
    "override": ("强制核查", "sensor overridden"),
}


class Role(StrEnum):
    SUPERVISOR = "supervisor"  # 监督中心
    DISPATCHER = "dispatcher"  # 指挥中心
    HANDLER = "handler"  # 责任单位 (case handler of the responsible unit)
    SYSTEM = "system"  # the bridge: auto-file, auto-dispatch, sensor verification
    ADMIN = "admin"


# the console's login roles, mapped onto workflow roles: the duty officer sits in the command centre
ROLE_ALIASES: dict[str, Role] = {"duty_officer": Role.DISPATCHER, "case_handler": Role.HANDLER,
                                 "supervision": Role.SUPERVISOR, "command": Role.DISPATCHER}


def parse_role(value: Role | str) -> Role:
    """A workflow role from its name or a console role name (``duty_officer``, ``case_handler``)."""
    if isinstance(value, Role):
        return value
    if value in ROLE_ALIASES:
        return ROLE_ALIASES[value]
    try:
        return Role(value)
    except ValueError:
        known = ", ".join([*(r.value for r in Role), *ROLE_ALIASES])
        raise ValueError(f"unknown role {value!r}; one of {known}") from None


# (from state, action) -> to state. Extension actions keep the state (see module docstring).
TRANSITIONS: dict[tuple[State, Action], State] = {
    (State.REPORTED, Action.FILE): State.FILED,
    (State.REPORTED, Action.REJECT): State.REJECTED,
    (State.REPORTED, Action.CANCEL): State.CANCELLED,
    (State.FILED, Action.DISPATCH): State.DISPATCHED,
    (State.FILED, Action.PARK): State.PARKED,
    (State.FILED, Action.CANCEL): State.CANCELLED,
    (State.DISPATCHED, Action.ACCEPT): State.IN_HANDLING,
    (State.DISPATCHED, Action.RETURN): State.RETURNED,
    (State.DISPATCHED, Action.REPORT_FIX): State.HANDLED,
    (State.DISPATCHED, Action.PARK): State.PARKED,
    (State.DISPATCHED, Action.CANCEL): State.CANCELLED,
    (State.DISPATCHED, Action.REQUEST_EXTENSION): State.DISPATCHED,
    (State.DISPATCHED, Action.APPROVE_EXTENSION): State.DISPATCHED,
    (State.DISPATCHED, Action.DENY_EXTENSION): State.DISPATCHED,
    (State.IN_HANDLING, Action.RETURN): State.RETURNED,
    (State.IN_HANDLING, Action.REPORT_FIX): State.HANDLED,
    (State.IN_HANDLING, Action.PARK): State.PARKED,
    (State.IN_HANDLING, Action.CANCEL): State.CANCELLED,
    (State.IN_HANDLING, Action.REQUEST_EXTENSION): State.IN_HANDLING,
    (State.IN_HANDLING, Action.APPROVE_EXTENSION): State.IN_HANDLING,
    (State.IN_HANDLING, Action.DENY_EXTENSION): State.IN_HANDLING,
    (State.HANDLED, Action.VERIFY): State.VERIFIED,
    (State.HANDLED, Action.FAIL_VERIFICATION): State.RETURNED,
    (State.VERIFIED, Action.CLOSE): State.CLOSED,
    (State.RETURNED, Action.DISPATCH): State.DISPATCHED,
    (State.RETURNED, Action.PARK): State.PARKED,
    (State.RETURNED, Action.CANCEL): State.CANCELLED,
    (State.DISPATCHED, Action.REASSIGN): State.DISPATCHED,
    (State.IN_HANDLING, Action.REASSIGN): State.DISPATCHED,
    (State.RETURNED, Action.REASSIGN): State.DISPATCHED,
    (State.DISPATCHED, Action.REQUEST_REASSIGN): State.RETURNED,
    (State.IN_HANDLING, Action.REQUEST_REASSIGN): State.RETURNED,
    (State.DISPATCHED, Action.URGE): State.DISPATCHED,
    (State.IN_HANDLING, Action.URGE): State.IN_HANDLING,
    (State.PARKED, Action.RESUME): State.DISPATCHED,
    (State.PARKED, Action.CANCEL): State.CANCELLED,
}

EXTENSION_ACTIONS = frozenset({Action.REQUEST_EXTENSION, Action.APPROVE_EXTENSION, Action.DENY_EXTENSION})
#: decisions on another's request (延期审批, 改派 on a unit's 申请): the console keeps them to its approving roles
APPROVAL_ACTIONS = frozenset({Action.APPROVE_EXTENSION, Action.DENY_EXTENSION, Action.REASSIGN})

ROLE_ACTIONS: dict[Role, frozenset[Action]] = {
    Role.SUPERVISOR: frozenset(
        {Action.FILE, Action.REJECT, Action.VERIFY, Action.FAIL_VERIFICATION, Action.CLOSE, Action.CANCEL}
    ),
    Role.DISPATCHER: frozenset(
        {
            Action.FILE,
            Action.DISPATCH,
            Action.PARK,
            Action.RESUME,
            Action.CANCEL,
            Action.APPROVE_EXTENSION,
            Action.DENY_EXTENSION,
            Action.REASSIGN,
            Action.URGE,
        }
    ),
    Role.HANDLER: frozenset(
        {Action.ACCEPT, Action.RETURN, Action.REPORT_FIX, Action.REQUEST_EXTENSION, Action.REQUEST_REASSIGN}
    ),
    Role.SYSTEM: frozenset(
        {Action.FILE, Action.DISPATCH, Action.VERIFY, Action.FAIL_VERIFICATION, Action.CLOSE, Action.RETURN}
    ),
    Role.ADMIN: frozenset(Action),
}


@dataclass(frozen=True, slots=True)
class Position:
    """Where a case stands in the workflow: its state and whether an extension is pending."""

    state: State
    extension_pending: bool = False


def _allowed_in(pos: Position) -> tuple[Action, ...]:
    out: list[Action] = []
    for (state, action), _to in TRANSITIONS.items():
        if state is not pos.state:
            continue
        if action is Action.REQUEST_EXTENSION and pos.extension_pending:
            continue
        if action in (Action.APPROVE_EXTENSION, Action.DENY_EXTENSION) and not pos.extension_pending:
            continue
        out.append(action)
    return tuple(out)


def allowed_actions(pos: Position, role: Role | None = None) -> tuple[Action, ...]:
    """Actions possible from ``pos``, optionally only those ``role`` may take (stable order)."""
    acts = _allowed_in(pos)
    if role is None:
        return acts
    permitted = ROLE_ACTIONS[role]
    return tuple(a for a in acts if a in permitted)


#: the console's login roles (seats). ``supervision`` (监督中心: 受理/立案, 核查, 结案) and ``command``
#: (指挥中心: 派遣, 改派, 督办, 延期/挂账 approval) are the two centres; ``supervisor`` sits in both;
#: ``duty_officer`` watches alarms and takes no case action unless the city's ``roles`` config puts it
#: in the command centre (a city that merges the two); ``admin`` never acts on cases.
SEATS: tuple[str, ...] = ("duty_officer", "case_handler", "supervisor", "admin", "supervision", "command")

#: the default seat -> workflow roles mapping (``roles:`` in categories.yaml changes it per city)
SEAT_ROLES: dict[str, tuple[Role, ...]] = {
    "case_handler": (Role.HANDLER,),
    "supervisor": (Role.SUPERVISOR, Role.DISPATCHER),
    "duty_officer": (),
    "admin": (),
    "supervision": (Role.SUPERVISOR,),
    "command": (Role.DISPATCHER,),
}


def seat_roles(supervision: Iterable[str], command: Iterable[str], unit: Iterable[str]) -> dict[str, tuple[Role, ...]]:
    """The seat -> workflow roles table from a city's centre lists (which seats act for which centre)."""
    sup, cmd, hdl = set(supervision), set(command), set(unit)
    out: dict[str, tuple[Role, ...]] = {}
    for seat in SEATS:
        centres = ((Role.SUPERVISOR, sup), (Role.DISPATCHER, cmd), (Role.HANDLER, hdl))
        out[seat] = tuple(r for r, seats in centres if seat in seats)
    return out


def seat_actions(pos: Position, seat: str, seats: Mapping[str, tuple[Role, ...]] = SEAT_ROLES) -> tuple[Action, ...]:
    """Actions a console seat may take from ``pos`` through any of its workflow roles (stable order)."""
    out: list[Action] = []
    for role in seats.get(seat, ()):
        out.extend(a for a in allowed_actions(pos, role) if a not in out)
    return tuple(out)


def seat_role(pos: Position, seat: str, action: Action | str,
              seats: Mapping[str, tuple[Role, ...]] = SEAT_ROLES) -> Role | None:
    """The workflow role a console seat takes ``action`` as from ``pos`` (None: it may not)."""
    return next((r for r in seats.get(seat, ()) if action in allowed_actions(pos, r)), None)


def apply(pos: Position, action: Action | str, role: Role | None = None) -> Position:
    """The position after ``action``; :class:`IllegalTransition` if the workflow refuses it."""
    try:
        act = Action(action)
    except ValueError:
        raise IllegalTransition(pos.state.value, str(action), tuple(a.value for a in _allowed_in(pos)),
                                "unknown action") from None
    possible = _allowed_in(pos)
    if act not in possible:
        reason = ""
        if act is Action.REQUEST_EXTENSION and pos.extension_pending:
            reason = "an extension request is already pending"
        elif act in (Action.APPROVE_EXTENSION, Action.DENY_EXTENSION) and not pos.extension_pending:
            reason = "no extension request is pending"
        raise IllegalTransition(pos.state.value, act.value, tuple(a.value for a in possible), reason)
    if role is not None and act not in ROLE_ACTIONS[role]:
        mine = tuple(a.value for a in allowed_actions(pos, role))
        raise IllegalTransition(pos.state.value, act.value, mine, f"role {role.value!r} may not {act.value!r}")
    to = TRANSITIONS[(pos.state, act)]
    if act is Action.REQUEST_EXTENSION:
        return Position(to, True)
    if act in (Action.APPROVE_EXTENSION, Action.DENY_EXTENSION, Action.REASSIGN):
        return Position(to, False)  # a re-assigned case: the old unit's extension request goes with it
    # leaving the handling stage drops a pending extension request: nothing left to extend
    return Position(to, pos.extension_pending and to in (State.DISPATCHED, State.IN_HANDLING))


#: actions that need a written reason (the note)
REASON_REQUIRED = frozenset({Action.REASSIGN, Action.REQUEST_REASSIGN})


def check_details(state: str, action: Action | str, note: str, current_unit: str, unit: str | None) -> None:
    """What an action needs besides state and role: a reason, and a target unit for 改派.

    A dispatch may name a unit; a re-assignment must name another one; no other action names one.
    Raises :class:`IllegalTransition` saying what is missing.
    """
    act = Action(action)
    if act in REASON_REQUIRED and not note.strip():
        raise IllegalTransition(state, act.value, (), "a written reason is required")
    if act is Action.REASSIGN:
        if unit is None or unit == current_unit:
            raise IllegalTransition(state, act.value, (), f"name a unit other than {current_unit!r} to re-assign to")
    elif unit is not None and act is not Action.DISPATCH:
        raise IllegalTransition(state, act.value, (), "only a dispatch or a re-assignment may name a unit")


def check_urge(state: str, deadline: float | None, now: float, window_s: float) -> None:
    """督办 is for a case that is overdue or due within ``window_s``; raises :class:`IllegalTransition` otherwise."""
    if deadline is None:
        raise IllegalTransition(state, Action.URGE.value, (), "the case runs no deadline to urge against")
    left_s = deadline - now
    if left_s > window_s:
        raise IllegalTransition(state, Action.URGE.value, (),
                                f"due in {left_s / 3600:.1f} h; urging is for cases overdue or due within "
                                f"{window_s / 3600:g} h")


class Stage(StrEnum):
    """The timed stages (环节) a state belongs to; each has its own limit."""

    FILE = "file"  # reported -> filed (核实立案)
    DISPATCH = "dispatch"  # filed -> dispatched (派遣)
    HANDLE = "handle"  # dispatched/in_handling -> handled (处置); the overall clock
    VERIFY = "verify"  # handled -> verified (核查)
    CLOSE = "close"  # verified -> closed (结案)


STAGE_OF: dict[State, Stage] = {
    State.REPORTED: Stage.FILE,
    State.FILED: Stage.DISPATCH,
    State.DISPATCHED: Stage.HANDLE,
    State.IN_HANDLING: Stage.HANDLE,
    State.RETURNED: Stage.DISPATCH,  # back with the command centre for re-dispatch
    State.HANDLED: Stage.VERIFY,
    State.VERIFIED: Stage.CLOSE,
}
