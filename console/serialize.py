"""Views to JSON-able dicts for the REST API (one place, so pages and API agree)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from console.labels import KINDS, SEVERITIES, STATES, URGENCIES, zh_en
from console.views import AlarmView, CaseView, DeviceView, TimelineEntry

SEVERITY_RANK = {"critical": 3, "major": 2, "minor": 1}


def device(d: DeviceView) -> dict[str, Any]:
    return {
        "id": d.id, "kind": d.kind, "kind_label": zh_en(KINDS, d.kind), "profile": d.profile, "gateway": d.gateway,
        "lat": d.lat, "lon": d.lon, "grid": d.grid, "owner": d.owner, "online": d.online, "last_seen": d.last_seen,
        "offline_reason": d.offline_reason,
        "latest": {m: {"ts": v.ts, "value": v.value, "unit": v.unit, "q": v.quality}
                   for m, v in sorted(d.latest.items())},
    }


def alarm(a: AlarmView) -> dict[str, Any]:
    out = asdict(a)
    out["severity_label"] = zh_en(SEVERITIES, a.severity)
    out["severity_rank"] = SEVERITY_RANK.get(a.severity, 0)
    return out


def sort_alarms(alarms: list[AlarmView]) -> list[AlarmView]:
    """Most severe first, unacknowledged before acknowledged, then newest first."""
    return sorted(alarms, key=lambda a: (-SEVERITY_RANK.get(a.severity, 0), a.state == "acknowledged", -a.raised_at))


MEDIA_FIELDS = ("id", "stage", "content_type", "size_bytes", "t", "by")


def media_item(case_id: str, m: dict[str, Any]) -> dict[str, Any]:
    """A photo as the API shows it: its metadata and the case-scoped URL (never the storage path)."""
    out = {k: m.get(k) for k in MEDIA_FIELDS}
    out["url"] = f"/api/v1/cases/{case_id}/media/{m.get('id')}"
    return out


def case(c: CaseView, now: float, *, contact: bool = False) -> dict[str, Any]:
    """The case as JSON; the reporter's ``contact`` only when the caller may see it
    (:func:`console.policy.contact_visible`), so every other output leaves it out by default."""
    out = asdict(c)
    if not contact:
        del out["contact"]
    out["media"] = [media_item(c.id, m) for m in c.media]
    out["state_label"] = zh_en(STATES, c.state)
    out["urgency_label"] = zh_en(URGENCIES, c.urgency)
    out["open"] = c.is_open
    out["overdue"] = c.overdue(now)
    left = c.time_to_deadline_s(now)
    out["time_to_deadline_s"] = None if left is None else round(left, 1)
    return out


def timeline(entries: list[TimelineEntry]) -> list[dict[str, Any]]:
    return [asdict(e) for e in entries]


def urges(entries: list[TimelineEntry]) -> dict[str, Any]:
    """督办 on a case: how often the command centre urged it, and the latest urge (who, when, why)."""
    mine = [e for e in entries if e.action == "urge"]
    last = mine[-1] if mine else None
    return {"count": len(mine), "last": None if last is None else {"t": last.t, "actor": last.actor, "note": last.note,
                                                                     "overdue_s": last.data.get("overdue_s")}}
