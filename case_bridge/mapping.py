"""Alarm -> case mapping: category, urgency, responsible unit, correlation key. Pure.

Responsibility follows "属地管理、责随权走、责任主体唯一": a 部件 (component) goes to its
owner (属主) first — the device's owner from the birth message, else the category's
default owner — then to the locality; an 事件 (event) goes to the locality first (grid →
street → district), then to the owning agency. Whoever is left is the command centre.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from case_bridge.config import CaseKind, CaseRule, Catalog, CategoryDef, Urgency
from contracts.alarms import AlarmTransition, Severity
from contracts.reading import DeviceInfo


@dataclass(frozen=True, slots=True)
class Locality:
    grid: str | None
    street: str | None
    district: str | None


@dataclass(frozen=True, slots=True)
class CaseDraft:
    """What an alarm would become: everything the store needs to open (or attach to) a case."""

    category: CategoryDef
    urgency: Urgency
    unit: str
    locality: Locality
    corr_key: str
    auto_dispatch: bool
    auto_close: bool
    description: str
    lat: float | None = None
    lon: float | None = None


def match_rule(catalog: Catalog, rule: str, device_kind: str | None) -> CaseRule | None:
    """The first case rule matching this alarm rule name and device kind.

    For a device the bridge has not seen a birth message for (``device_kind`` None), a rule
    narrowed by device kind still matches by an explicit rule name, never by a bare ``*``.
    """
    for r in catalog.table.rules:
        kind_differs = r.device_kind is not None and r.device_kind != device_kind
        if kind_differs and (device_kind is not None or r.rule == "*"):
            continue
        if fnmatchcase(rule, r.rule):
            return r
    return None


def component_category(catalog: Catalog, component_id: str | None) -> CategoryDef | None:
    """The 部件 category named by a 16-digit component id (county 6 + major 2 + minor 2 + serial 6)."""
    if not component_id or len(component_id) != 16 or not component_id.isdigit():
        return None
    return catalog.find(CaseKind.COMPONENT, component_id[6:10])


def locality(catalog: Catalog, grid: str | None) -> Locality:
    g = catalog.units.grids.get(grid) if grid else None
    if g is None:
        return Locality(grid, None, catalog.units.default_district)
    return Locality(grid, g.street, g.district)


def responsible_unit(catalog: Catalog, category: CategoryDef, owner: str | None, grid: str | None) -> str:
    """部件: owner first, then locality. 事件: locality first (street, district), then agency,
    unless the category routes to its agency first (an enforcement matter a street office cannot act on)."""
    loc = locality(catalog, grid)
    local_chain = [loc.street, loc.district]
    if category.kind is CaseKind.COMPONENT:
        chain = [owner, category.owner_unit, *local_chain]
    elif category.route == "agency_first":
        chain = [category.agency_unit, *local_chain]
    else:
        chain = [*local_chain, category.agency_unit]
    for unit in chain:
        if unit is not None and catalog.unit(unit) is not None:
            return unit
    return catalog.units.fallback_unit


def vehicle_identity(evidence: Mapping[str, Any] | None) -> str | None:
    """The weighed vehicle an alarm is about (``evidence.vehicle.id``, else the record's event id)."""
    if not evidence:
        return None
    vehicle = evidence.get("vehicle")
    if isinstance(vehicle, Mapping) and isinstance(vehicle.get("id"), str) and vehicle["id"]:
        return str(vehicle["id"])
    record = evidence.get("record")
    if isinstance(record, Mapping) and isinstance(record.get("event_id"), str) and record["event_id"]:
        return str(record["event_id"])
    return None


def correlation_key(case_rule: CaseRule, rule: str, device: str, info: DeviceInfo | None,
                    evidence: Mapping[str, Any] | None = None) -> str:
    """One open case per key: per (device, condition), per device incident, per grid and condition,
    per circuit, or per weighed vehicle.

    A vehicle is one enforcement case whichever of its overload rules fired (gross and axle
    overload of one truck): the key is the vehicle's identity from the alarm evidence, without the
    rule name; each further truck on the same scale opens its own case. An alarm without a vehicle
    identity falls back to the per-(device, condition) key.

    An incident is what one device says in several conditions about one thing in the street (a
    manhole's cover open, tilt and displacement): the key carries no rule name, so the rule's
    conditions share the case.

    A circuit is one maintenance job whatever its lamps report: a dead feeder makes every lamp
    raise both ``supplyVoltage`` and ``lampFailure`` (relay on, no current), and the city wants
    one case for it, so the circuit key carries no rule name.
    """
    if case_rule.correlate == "circuit" and info is not None and info.circuit:
        return f"circuit:{info.circuit}"
    if case_rule.correlate == "vehicle":
        vehicle = vehicle_identity(evidence)
        if vehicle is not None:
            return f"vehicle:{device}:{vehicle}"
    if case_rule.correlate == "incident":
        return f"incident:{device}"
    if case_rule.correlate == "grid" and info is not None and info.grid:
        return f"grid:{info.grid}:{rule}"
    return f"device:{device}:{rule}"


def vehicle_summary(vehicle: Mapping[str, Any]) -> str:
    """A weighed vehicle in one line for the case description: plate, lane, axles, gross vs limit."""
    parts: list[str] = []
    if vehicle.get("plate"):
        parts.append(f"plate {vehicle['plate']}")
    if vehicle.get("lane") is not None:
        parts.append(f"lane {vehicle['lane']}")
    if vehicle.get("axles"):
        parts.append(f"{vehicle['axles']} axles")
    gross, limit, pct = vehicle.get("gross_kg"), vehicle.get("gross_limit_kg"), vehicle.get("gross_over_pct")
    if isinstance(gross, int | float):
        text = f"gross {gross:g} kg"
        if isinstance(limit, int | float) and isinstance(pct, int | float):
            text += f" / limit {limit:g} kg ({pct:+g} %)"
        parts.append(text)
    return f" — {', '.join(parts)}" if parts else ""


def urgency_for(case_rule: CaseRule, severity: Severity) -> Urgency:
    return case_rule.urgency.get(severity, Urgency.NORMAL)


def should_auto_dispatch(case_rule: CaseRule, severity: Severity) -> bool:
    return case_rule.auto_dispatch_from is not None and severity.rank >= case_rule.auto_dispatch_from.rank


def map_alarm(catalog: Catalog, tr: AlarmTransition, info: DeviceInfo | None) -> CaseDraft | None:
    """The case an alarm would open, or ``None`` when its rule maps to no case."""
    case_rule = match_rule(catalog, tr.rule, info.kind if info else None)
    if case_rule is None or case_rule.category is None:
        return None
    category = catalog.category(case_rule.category)
    if case_rule.from_component and info is not None:
        category = component_category(catalog, info.component_id) or category
    grid = info.grid if info else None
    owner = info.owner if info else None
    unit = responsible_unit(catalog, category, owner, grid)
    value = "" if tr.value is None else f" value={tr.value:g}"
    vehicle = tr.evidence.get("vehicle") if isinstance(tr.evidence, dict) else None
    if isinstance(vehicle, dict):
        value += vehicle_summary(vehicle)
    return CaseDraft(
        category=category,
        urgency=urgency_for(case_rule, tr.severity),
        unit=unit,
        locality=locality(catalog, grid),
        corr_key=correlation_key(case_rule, tr.rule, tr.device, info, tr.evidence),
        auto_dispatch=should_auto_dispatch(case_rule, tr.severity),
        auto_close=case_rule.auto_close,
        description=f"[IoT] {category.name}: {tr.rule} on {tr.device} ({tr.severity.value}){value}",
        lat=info.lat if info else None,
        lon=info.lon if info else None,
    )
