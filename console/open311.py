"""Open311 GeoReport v2 formatting: pure functions from console views to JSON and XML.

The XML is schemaless and namespace-free as the spec asks (root element preceded by the
XML declaration with ``encoding="UTF-8"``); JSON is the Spark-convention mapping of it,
i.e. a top-level list of objects. Datetimes are W3C ISO 8601 with an offset. Our workflow
states map to ``open``/``closed``; the exact state goes into ``status_notes`` (中文 first).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from datetime import datetime, tzinfo
from typing import Any

from case_bridge.workflow import State
from console.errors import BadRequest
from console.labels import STATES, zh_en
from console.views import CaseView, Category

SERVICE_FIELDS = ("service_code", "service_name", "description", "metadata", "type", "keywords", "group")
REQUEST_FIELDS = (
    "service_request_id", "status", "status_notes", "service_name", "service_code", "description",
    "agency_responsible", "service_notice", "requested_datetime", "updated_datetime", "expected_datetime",
    "address", "address_id", "zipcode", "lat", "long", "media_url",
)
POST_RESPONSE_FIELDS = ("service_request_id", "service_notice", "account_id")
TOKEN_FIELDS = ("service_request_id", "token")
MAX_DESCRIPTION = 4000


def iso(ts: float | None, tz: tzinfo) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")


def parse_iso(text: str, field: str) -> float:
    """W3C datetime with a timezone (``Z`` or ``+HH:MM``); a naive time is an error, not a guess."""
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise BadRequest(f"{field}: not an ISO 8601 datetime: {text[:40]!r}") from exc
    if dt.tzinfo is None:
        raise BadRequest(f"{field}: datetime needs a timezone (Z or +HH:MM): {text[:40]!r}")
    return dt.timestamp()


def status_of(state: str) -> str:
    return "open" if State(state).is_open else "closed"


def service(cat: Category) -> dict[str, Any]:
    return {
        "service_code": cat.code,
        "service_name": cat.name,
        "description": cat.description or cat.name,
        "metadata": False,
        "type": "realtime",
        "keywords": ", ".join(k for k in (cat.kind, cat.group) if k),
        "group": cat.group or cat.kind,
    }


def service_definition(cat: Category) -> dict[str, Any]:
    """We ask for no extra attributes: the definition lists none (metadata=false)."""
    return {"service_code": cat.code, "attributes": []}


def request(case: CaseView, tz: tzinfo, now: float) -> dict[str, Any]:
    notes = zh_en(STATES, case.state)
    if case.overdue(now):
        notes += " · 超期 overdue"
    if case.status_note:
        notes += f" · {case.status_note}"
    closed = status_of(case.state) == "closed"
    return {
        "service_request_id": case.id,
        "status": status_of(case.state),
        "status_notes": notes,
        "service_name": case.category_name,
        "service_code": case.category,
        "description": case.description[:MAX_DESCRIPTION],
        "agency_responsible": case.unit_name or case.unit or "",
        "service_notice": "",
        "requested_datetime": iso(case.created_at, tz),
        "updated_datetime": iso(case.closed_at if closed and case.closed_at else case.updated_at, tz),
        "expected_datetime": iso(case.due_at if case.due_at is not None else case.deadline, tz),
        "address": case.address,
        "address_id": case.device or "",
        "zipcode": "",
        "lat": case.lat,
        "long": case.lon,
        # the reporter's own link only: photos uploaded to the case are private (case access rules)
        "media_url": case.media_url,
    }


MAX_MEDIA_URL = 1000


def media_url(text: str) -> str:
    """A reporter's ``media_url``: kept (and shown publicly, it is theirs) when it is an http(s) URL."""
    url = text.strip()
    if not url:
        return ""
    if len(url) > MAX_MEDIA_URL or not re.match(r"^https?://[^\s<>\"]+$", url):
        raise BadRequest(f"media_url must be an http(s) URL of at most {MAX_MEDIA_URL} characters")
    return url


def error(code: int, description: str) -> dict[str, Any]:
    return {"code": code, "description": description}


# XML element names: the list root and its item element for each resource
ROOTS = {
    "services": ("services", "service"),
    "requests": ("service_requests", "request"),
    "errors": ("errors", "error"),
}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _fill(parent: ET.Element, obj: dict[str, Any]) -> None:
    for key, value in obj.items():
        child = ET.SubElement(parent, key)
        if isinstance(value, list):
            # service definition: <attributes><attribute>..</attribute></attributes>
            for item in value:
                _fill(ET.SubElement(child, key.rstrip("s")), item)
        elif isinstance(value, dict):
            _fill(child, value)
        else:
            child.text = _text(value)


def _declared(root: ET.Element) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode").encode("utf-8")


def xml_list(resource: str, items: Iterable[dict[str, Any]]) -> bytes:
    root_name, item_name = ROOTS[resource]
    root = ET.Element(root_name)
    for obj in items:
        _fill(ET.SubElement(root, item_name), obj)
    return _declared(root)


def xml_object(root_name: str, obj: dict[str, Any]) -> bytes:
    root = ET.Element(root_name)
    _fill(root, obj)
    return _declared(root)


def parse_form(body: bytes) -> dict[str, str]:
    """application/x-www-form-urlencoded, UTF-8; a repeated key keeps its last value."""
    from urllib.parse import parse_qsl

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("body is not UTF-8") from exc
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=200)
    except ValueError as exc:
        raise BadRequest(f"bad form body: {exc}") from exc
    out: dict[str, str] = {}
    for key, value in pairs:
        if "\x00" in key or "\x00" in value:
            raise BadRequest(f"{key[:40]}: NUL character not allowed")
        out[key] = value
    return out


def split_ids(text: str, limit: int) -> list[str]:
    ids = [p.strip() for p in text.split(",") if p.strip()]
    if len(ids) > limit:
        raise BadRequest(f"service_request_id: at most {limit} ids")
    return ids


def select_fields(obj: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    return {f: obj.get(f) for f in fields}
