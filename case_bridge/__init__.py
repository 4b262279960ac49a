"""case_bridge: alarms become 数字城管 cases (立案 → 派遣 → 处置 → 核查 → 结案).

Public API (what the console and other packages call)::

    from case_bridge import open_case_store, CaseStore, Case, Page, workflow, deadlines

    store = open_case_store("sqlite:///data/cases.db")          # or "postgresql://user@host/db"
    # open_case_store(url, catalog=None, *, verify_hold_s=600.0, migrate_schema=True) -> CaseStore
    #   catalog: case_bridge.config.load_catalog(categories_path, units_path); default: configs/*.yaml

    store.create_reported(category="S0111", description="路面积水", lat=30.25, lon=120.13,
                          address="灵隐路 12 号", source="open311", source_key=token,
                          reporter=None, urgency="normal", grid="330106001001", unit=None,
                          actor=None, request_id=None, data=None, now=None) -> Case
    store.get(case_id, now=None) -> Case                        # CaseNotFound
    store.worklist(*, unit=None, state=None, category=None, overdue=None, sort="deadline",
                   limit=50, offset=0, now=None, include_closed=False, grid=None,
                   source=None) -> Page(items, total, limit, offset)
        # state None = all open states; sort in deadline, -deadline, created_at, -created_at,
        # -updated_at, id, -id; every Case carries overdue and time_to_deadline_s at `now`
    store.transition(case_id, action, actor, *, note="", request_id=None, now=None,
                     role=None, unit=None, expected_version=None, data=None) -> Case
        # IllegalTransition (state/role forbids; .allowed lists what is possible),
        # CaseConflict (stale expected_version); a repeated request_id is a no-op
    store.timeline(case_id) -> list[AuditEntry]                 # alias store.audit
    store.stats.report(since, until, now=None, unit=None) -> Statistics
    store.notices: NoticeOutbox; store.devices.remember(devices, now) / .known() -> {id: DeviceInfo}
    store.categories() -> list[CategoryDef]   (.service_code "B0101"/"S0111", .name, .kind, .limits)
    store.units() -> list[UnitDef]
    store.allowed_actions(case, role=None) -> tuple[str, ...]
    store.linked_alarms(case_id) -> list[AlarmView]             # sensor evidence for the case page
    store.apply_alarm(AlarmTransition, DeviceInfo | None, now=None) -> AlarmOutcome   (the bridge)
    store.apply_alarms([(AlarmTransition, DeviceInfo | None)], now=None) -> [AlarmOutcome]  # a backlog, one tx
    store.due_verifications(now=None, hold_s=None, grace_s=None) -> list[AlarmOutcome]   (the bridge)
    store.case_for_alarm(alarm_id) -> Case | None; store.open_cases_for(devices) -> {device: {rule: id}}
    store.dead_letters(limit=100)                               # messages the bridge could not use

Notifications (:mod:`case_bridge.notify`): ``Notifier(NotifySettings, store.notices)`` queues a
``Notice`` in the store's outbox ``store.notices`` (``notify(notice, escalate_alarm=None)``) and ``run(stop)``
sends it (webhook, DingTalk, WeCom, e-mail) with retries; the bridge is
``case_bridge.bridge.CaseBridge(store, mqtt_settings, cases_settings, notifier)``.

Categories are addressed by service code: ``B<code>`` for a 部件 (component), ``S<code>`` for
an 事件 (event); the bare codes overlap (B0111 燃气井盖, S0111 道路积水). That service code is
the Open311 ``service_code``; ``Case.unit`` maps to ``agency_responsible`` and
``Case.due_at`` (the overall handling deadline; else the stage ``deadline``) to
``expected_datetime``. One name per concept across packages: ``deadline`` is the current
stage deadline, ``due_at`` the overall handling deadline; ``Case.overdue`` is
:func:`case_bridge.deadlines.is_overdue` of the stage deadline.

Pure modules: :mod:`case_bridge.policy` (every alarm -> case rule: ``decide`` returns the
commands the store executes), :mod:`case_bridge.workflow` (states, actions, roles, labels,
console seats, who may do what),
:mod:`case_bridge.deadlines` (working-calendar arithmetic), :mod:`case_bridge.mapping`
(alarm -> category/unit/urgency), :mod:`case_bridge.lifecycle` (clocks per transition,
sensor verification). Errors: :mod:`case_bridge.errors` (all under ``CaseError``).
"""

from __future__ import annotations

from case_bridge import deadlines, workflow
from case_bridge.config import Catalog, CategoryDef, UnitDef, Urgency, load_catalog
from case_bridge.errors import (
    CaseConflict,
    CaseError,
    CaseNotFound,
    IllegalTransition,
    SensorNotClear,
    StoreError,
    UnknownCategory,
)
from case_bridge.model import AlarmOutcome, AuditEntry, Case, Page
from case_bridge.stats import RateRow, Statistics
from case_bridge.store import CaseStore, open_case_store
from case_bridge.workflow import Action, Role, State

__all__ = [
    "Action",
    "AlarmOutcome",
    "AuditEntry",
    "Case",
    "CaseConflict",
    "CaseError",
    "CaseNotFound",
    "CaseStore",
    "Catalog",
    "CategoryDef",
    "IllegalTransition",
    "Page",
    "RateRow",
    "Role",
    "SensorNotClear",
    "State",
    "Statistics",
    "StoreError",
    "UnitDef",
    "UnknownCategory",
    "Urgency",
    "deadlines",
    "load_catalog",
    "open_case_store",
    "workflow",
]
