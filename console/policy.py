"""Roles, permissions and object-level access: a pure table the handlers consult.

Route-level permission is not enough (OWASP API1/API5): every handler that touches a case
also calls :func:`case_visible` with the case's unit, so a handler of unit A can neither
read nor change a case of unit B. A case the user may not see is reported as *not found*
(404), never as *forbidden*, so ids of other units' cases leak nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from case_bridge import workflow
from case_bridge.workflow import APPROVAL_ACTIONS, Action


class Role(StrEnum):
    DUTY_OFFICER = "duty_officer"
    CASE_HANDLER = "case_handler"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"
    SUPERVISION = "supervision"  # 监督中心: 受理/立案, 核查, 结案
    COMMAND = "command"  # 指挥中心: 派遣, 改派, 督办, 延期/挂账 approval


class Perm(StrEnum):
    DEVICES_READ = "devices:read"
    ALARMS_READ = "alarms:read"
    ALARMS_ACK = "alarms:ack"
    CASES_READ = "cases:read"
    CASES_ACT = "cases:act"
    CASES_APPROVE = "cases:approve"  # approve/deny an extension (延期审批)
    STATS_READ = "stats:read"
    LAMPS_CONTROL = "lamps:control"  # switch / dim street lamps (the duty room and the supervisor)
    USERS_ADMIN = "users:admin"
    CONFIG_RELOAD = "config:reload"
    AUDIT_READ = "audit:read"
    CONTACT_READ = "contact:read"  # a reporter's name, phone, e-mail (supervision and command only)
    DOCS_READ = "docs:read"


_COMMON = frozenset({Perm.DEVICES_READ, Perm.ALARMS_READ, Perm.DOCS_READ})

ROLE_PERMS: dict[Role, frozenset[Perm]] = {
    Role.DUTY_OFFICER: _COMMON | {Perm.ALARMS_ACK, Perm.CASES_READ, Perm.STATS_READ, Perm.LAMPS_CONTROL,
                                  Perm.CONTACT_READ},
    Role.CASE_HANDLER: _COMMON | {Perm.CASES_READ, Perm.CASES_ACT},
    Role.SUPERVISOR: _COMMON | {Perm.CASES_READ, Perm.CASES_ACT, Perm.CASES_APPROVE, Perm.STATS_READ, Perm.AUDIT_READ,
                                Perm.LAMPS_CONTROL, Perm.CONTACT_READ},
    Role.ADMIN: _COMMON | {Perm.USERS_ADMIN, Perm.CONFIG_RELOAD, Perm.STATS_READ, Perm.AUDIT_READ, Perm.CONTACT_READ},
    Role.SUPERVISION: _COMMON | {Perm.CASES_READ, Perm.CASES_ACT, Perm.STATS_READ, Perm.CONTACT_READ},
    Role.COMMAND: _COMMON | {Perm.CASES_READ, Perm.CASES_ACT, Perm.CASES_APPROVE, Perm.STATS_READ, Perm.CONTACT_READ},
}

# roles whose case rights are limited to their own unit
UNIT_SCOPED: frozenset[Role] = frozenset({Role.CASE_HANDLER})

# workflow actions only an approving role (command centre) may take, whatever the state machine allows
SUPERVISOR_ACTIONS: frozenset[str] = frozenset(a.value for a in APPROVAL_ACTIONS | {Action.URGE})


def centre_grants(seats: Mapping[str, Sequence[workflow.Role]]) -> dict[Role, frozenset[Perm]]:
    """Case permissions a city's ``roles`` config adds to a login role beyond :data:`ROLE_PERMS`.

    A role that acts for a centre or a unit needs ``cases:act``; one in the command centre also
    ``cases:approve``. This is how a duty officer of a city that merges the duty room and the
    command centre gets case rights; the default config grants nothing new.
    """
    out: dict[Role, frozenset[Perm]] = {}
    for role in Role:
        wf = seats.get(role.value, ())
        extra: set[Perm] = set()
        if wf:
            extra |= {Perm.CASES_READ, Perm.CASES_ACT}
        if workflow.Role.DISPATCHER in wf:
            extra.add(Perm.CASES_APPROVE)
        extra -= ROLE_PERMS[role]
        if extra:
            out[role] = frozenset(extra)
    return out


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a person (role, unit) or a machine client (``api_key`` set)."""

    username: str
    role: Role | None
    unit: str | None = None
    api_key: bool = False
    grants: frozenset[Perm] = field(default=frozenset(), compare=False)  # from the city's roles config

    @property
    def actor(self) -> str:
        return f"apikey:{self.username}" if self.api_key else self.username


def has(principal: Principal, perm: Perm) -> bool:
    return principal.role is not None and (perm in ROLE_PERMS[principal.role] or perm in principal.grants)


def case_scope(principal: Principal) -> str | None:
    """The single unit whose cases this principal may see, or None for all units."""
    if principal.role in UNIT_SCOPED:
        return principal.unit or "\x00no-unit"  # a handler without a unit sees nothing
    return None


def case_visible(principal: Principal, case_unit: str | None) -> bool:
    if not has(principal, Perm.CASES_READ):
        return False
    scope = case_scope(principal)
    return scope is None or scope == case_unit


def may_act(principal: Principal, case_unit: str | None, action: str) -> bool:
    """Object-level check for one workflow action on one case."""
    if not case_visible(principal, case_unit) or not has(principal, Perm.CASES_ACT):
        return False
    return action not in SUPERVISOR_ACTIONS or has(principal, Perm.CASES_APPROVE)


def filter_actions(principal: Principal, case_unit: str | None, actions: list[str]) -> list[str]:
    """The workflow actions (already allowed by the state machine) this user may take here."""
    return [a for a in actions if may_act(principal, case_unit, a)]


def may_take(principal: Principal, case_unit: str | None, pos: workflow.Position, action: str,
             seats: Mapping[str, Sequence[workflow.Role]] = workflow.SEAT_ROLES) -> bool:
    """One cell of the role x action x own/foreign unit x state matrix: the state machine, the
    centre(s) the login role acts for (the city's ``roles`` config) and the object-level check."""
    if principal.role is None:
        return False
    mine = workflow.seat_actions(pos, principal.role.value, {k: tuple(v) for k, v in seats.items()})
    return action in {a.value for a in mine} and may_act(principal, case_unit, action)


def contact_visible(principal: Principal, case_unit: str | None) -> bool:
    """Whether a reporter's contact (name, phone, e-mail) on this case is shown to ``principal``:
    only to the command and supervision seats that may read the case — never to a handler (who
    reaches the reporter through the centre), never to a machine client or the public Open311 GETs."""
    return not principal.api_key and case_visible(principal, case_unit) and has(principal, Perm.CONTACT_READ)


def media_upload_allowed(principal: Principal, case_unit: str | None) -> bool:
    """Attaching a photo is acting on the case: the same object-level rule as a workflow action."""
    return case_visible(principal, case_unit) and has(principal, Perm.CASES_ACT)
