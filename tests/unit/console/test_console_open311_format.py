"""Open311 formatting: field lists from the GeoReport v2 spec, XML shape, datetimes, status mapping."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from zoneinfo import ZoneInfo

import pytest

from console import open311
from console.errors import BadRequest
from console.views import CaseView, Category

TZ = ZoneInfo("Asia/Shanghai")
CASE = CaseView(id="42", category="S0111", category_name="道路积水", unit="lingyin-street", unit_name="灵隐街道办事处",
                state="dispatched", urgency="urgent", created_at=1764057600.0, updated_at=1764057900.0,
                deadline=1764061200.0, device="wl-0001", description="积水 <0.3 m> & rising", lat=30.25, lon=120.13,
                due_at=1764072000.0)


def test_request_has_exactly_the_spec_fields() -> None:
    req = open311.request(CASE, TZ, now=1764058000.0)
    assert tuple(req) == open311.REQUEST_FIELDS
    assert req["status"] == "open"
    assert req["agency_responsible"] == "灵隐街道办事处"
    assert req["requested_datetime"] == "2025-11-25T16:00:00+08:00"
    assert req["expected_datetime"] == "2025-11-25T20:00:00+08:00"  # overall limit, not the stage deadline
    assert req["long"] == 120.13


def test_overdue_and_state_in_status_notes() -> None:
    req = open311.request(CASE, TZ, now=1764061201.0)
    assert "派遣 dispatched" in req["status_notes"]
    assert "overdue" in req["status_notes"]


@pytest.mark.parametrize(("state", "status"), [("reported", "open"), ("in_handling", "open"), ("parked", "open"),
                                                ("closed", "closed"), ("rejected", "closed")])
def test_status_mapping(state: str, status: str) -> None:
    assert open311.status_of(state) == status


def test_closed_request_updated_datetime_is_close_time() -> None:
    from dataclasses import replace

    closed = replace(CASE, state="closed", closed_at=1764064800.0, updated_at=1764064900.0)
    assert open311.request(closed, TZ, now=0.0)["updated_datetime"] == "2025-11-25T18:00:00+08:00"


def test_service_fields() -> None:
    svc = open311.service(Category("S0111", "道路积水", "事件", "市容环境 道路积水", "市容环境"))
    assert tuple(svc) == open311.SERVICE_FIELDS
    assert svc["metadata"] is False and svc["type"] == "realtime"


def test_xml_declaration_escaping_and_shape() -> None:
    body = open311.xml_list("requests", [open311.request(CASE, TZ, now=0.0)])
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(body)
    assert root.tag == "service_requests"
    (req,) = root.findall("request")
    assert [c.tag for c in req] == list(open311.REQUEST_FIELDS)
    assert req.findtext("description") == "积水 <0.3 m> & rising"
    assert req.findtext("lat") == "30.25"


def test_xml_booleans_and_errors() -> None:
    root = ET.fromstring(open311.xml_list("services", [{"metadata": False}]))
    assert root.find("service/metadata").text == "false"  # type: ignore[union-attr]
    err = ET.fromstring(open311.xml_list("errors", [open311.error(404, "not found")]))
    assert err.tag == "errors" and err.findtext("error/code") == "404"


def test_parse_iso_needs_timezone() -> None:
    assert open311.parse_iso("2025-11-25T08:00:00Z", "start_date") == 1764057600.0
    assert open311.parse_iso("2025-11-25T16:00:00+08:00", "start_date") == 1764057600.0
    with pytest.raises(BadRequest, match="timezone"):
        open311.parse_iso("2025-11-25T16:00:00", "start_date")
    with pytest.raises(BadRequest, match="ISO 8601"):
        open311.parse_iso("yesterday", "start_date")


def test_parse_form() -> None:
    form = open311.parse_form(b"service_code=S0111&description=%E7%A7%AF%E6%B0%B4&lat=30.2")
    assert form == {"service_code": "S0111", "description": "积水", "lat": "30.2"}
    with pytest.raises(BadRequest):
        open311.parse_form(b"a=%00")
    with pytest.raises(BadRequest):
        open311.parse_form(b"\xff\xfe")


def test_split_ids_bounded() -> None:
    assert open311.split_ids(" 1, 2,,3 ", 10) == ["1", "2", "3"]
    with pytest.raises(BadRequest):
        open311.split_ids(",".join(str(i) for i in range(11)), 10)
