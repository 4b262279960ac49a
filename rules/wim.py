"""The evidence of one weighed vehicle: axle loads and spacings against the configured limits. Pure.

An enforcement case needs the table an officer reads (治超 evidence): per axle its load and the
spacing to the next axle, per axle group (single, 二轴组, 三轴组) its load against the limit of
its configuration (GB 1589-2016 as :class:`rules.specs.AxleLimits` configures it), the gross
weight against the limit for the axle count, lane, speed, time, and what a camera next to the
scale supplied (plate, image references). Every alarm a vehicle raises carries the same table
under ``evidence["vehicle"]``; its ``id`` (device + record id) is the vehicle's identity, which
the case bridge correlates on (``correlate: vehicle``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rules.specs import AxleBand, AxleLimits, WimOverloadRule


def _num(x: Any) -> float | None:
    return None if isinstance(x, bool) or not isinstance(x, int | float) else float(x)


def over_pct(load_kg: float, limit_kg: float | None) -> float | None:
    """How far ``load_kg`` is above (positive) or below (negative) ``limit_kg``, in %, 0.1 % steps."""
    if limit_kg is None:
        return None
    return round((load_kg / limit_kg - 1.0) * 100.0, 1)


def _band(bands: Sequence[AxleBand], spacing_m: float) -> float | None:
    return next((b.limit_kg for b in bands if spacing_m < b.below_m), None)


def group_axles(spacing_m: Sequence[float], n_axles: int, group_spacing_m: float) -> list[list[int]]:
    """0-based axle indices grouped: consecutive axles closer than ``group_spacing_m`` share a group."""
    groups: list[list[int]] = []
    for i in range(n_axles):
        close = i > 0 and i - 1 < len(spacing_m) and spacing_m[i - 1] < group_spacing_m
        if close and groups:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def group_limit(limits: AxleLimits, axles: Sequence[int], spacing_m: Sequence[float]) -> tuple[str, float | None]:
    """The configuration name and the limit (kg, None: none configured) of one axle group."""
    if len(axles) == 1:
        return ("steer", limits.steer_kg) if axles[0] == 0 else ("single", limits.single_kg)
    inner = max(spacing_m[i] for i in axles[:-1])
    if len(axles) == 2:
        return "tandem", _band(limits.tandem, inner)
    if len(axles) == 3:
        return "tridem", _band(limits.tridem, inner)
    return f"{len(axles)}-axle group", None


def vehicle_evidence(device: str, event_id: str, t: float, body: Mapping[str, Any],
                     rule: WimOverloadRule) -> dict[str, Any]:
    """The evidence table of one vehicle record (JSON-ready). Tolerant: bad keys are left out."""
    loads = [float(x) for x in body.get("axle_kg") or [] if _num(x) is not None]
    spacing = [float(x) for x in body.get("spacing_m") or [] if _num(x) is not None]
    axles_raw = body.get("axles", len(loads))
    n_axles = axles_raw if isinstance(axles_raw, int) and not isinstance(axles_raw, bool) else len(loads)
    combination = bool(body.get("combination", False))
    gross = _num(body.get("gross_kg"))
    gross_limit = rule.limit_kg(n_axles, combination)
    out: dict[str, Any] = {
        "id": f"{device}/{event_id}", "device": device, "event_id": event_id, "t": t,
        "lane": body.get("lane"), "speed_kmh": _num(body.get("speed_kmh")), "axles": n_axles,
        "combination": combination, "gross_kg": gross, "gross_limit_kg": gross_limit,
        "gross_over_pct": None if gross is None else over_pct(gross, gross_limit),
        "tolerance_pct": rule.tolerance_pct,
        "axle_rows": [{"axle": i + 1, "load_kg": w, "spacing_m": spacing[i] if i < len(spacing) else None}
                      for i, w in enumerate(loads)],
        "groups": [],
        "limits_source": "configured" if rule.axle_limits is not None else None,
    }
    if isinstance(body.get("plate"), str):
        out["plate"] = body["plate"]
    images = body.get("images")
    if isinstance(images, list):
        out["images"] = [x for x in images if isinstance(x, str)]
    limits = rule.axle_limits
    complete = len(loads) == n_axles and len(spacing) >= n_axles - 1
    if limits is None or not complete:
        return out
    for g, members in enumerate(group_axles(spacing, n_axles, limits.group_spacing_m), start=1):
        kind, limit = group_limit(limits, members, spacing)
        load = sum(loads[i] for i in members)
        for i in members:
            out["axle_rows"][i]["group"] = g
        out["groups"].append({
            "group": g, "axles": [i + 1 for i in members], "config": kind, "load_kg": load, "limit_kg": limit,
            "over_pct": over_pct(load, limit),
            "inner_spacing_m": max(spacing[i] for i in members[:-1]) if len(members) > 1 else None,
        })
    return out
