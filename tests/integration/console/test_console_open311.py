"""Open311 GeoReport v2 conformance, driven from the spec's field lists, in both formats."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from fastapi.testclient import TestClient

from console.open311 import POST_RESPONSE_FIELDS, REQUEST_FIELDS, SERVICE_FIELDS
from tests.support.console_demo import DEMO_API_KEY as API_KEY
from tests.support.console_demo import DemoEnv

pytestmark = pytest.mark.integration
BASE = "/open311/v2"
ISO = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)$"


def items(client: TestClient, fmt: str, path: str, root: str, item: str, **params: Any) -> list[dict[str, Any]]:
    """Fetch a list resource and return it as dicts, checking the format's headers and shape."""
    r = client.get(f"{BASE}/{path}.{fmt}", params=params)
    assert r.status_code == 200, r.text
    if fmt == "json":
        assert r.headers["content-type"].startswith("application/json")
        data = r.json()
        assert isinstance(data, list)
        return data
    assert r.headers["content-type"].startswith("text/xml")
    assert r.content.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    doc = ET.fromstring(r.content)
    assert doc.tag == root
    return [{c.tag: c.text for c in el} for el in doc.findall(item)]


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_services(client: TestClient, fmt: str) -> None:
    services = items(client, fmt, "services", "services", "service")
    assert services
    for s in services:
        assert list(s) == list(SERVICE_FIELDS)
        assert str(s["metadata"]).lower() == "false" and s["type"] == "realtime"
    codes = {s["service_code"] for s in services}
    assert {"S0111", "B0101", "B0118"} <= codes


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_service_definition_and_unknown(client: TestClient, fmt: str) -> None:
    r = client.get(f"{BASE}/services/S0111.{fmt}")
    assert r.status_code == 200
    if fmt == "xml":
        assert ET.fromstring(r.content).findtext("service_code") == "S0111"
    else:
        assert r.json() == {"service_code": "S0111", "attributes": []}
    r = client.get(f"{BASE}/services/X9999.{fmt}")
    assert r.status_code == 404
    if fmt == "xml":
        assert ET.fromstring(r.content).findtext("error/code") == "404"
    else:
        assert r.json()[0]["code"] == 404


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_requests_fields_and_datetimes(client: TestClient, fmt: str) -> None:
    import re

    reqs = items(client, fmt, "requests", "service_requests", "request")
    assert len(reqs) == 8
    for q in reqs:
        assert list(q) == list(REQUEST_FIELDS)
        assert q["status"] in ("open", "closed")
        for key in ("requested_datetime", "updated_datetime"):
            assert re.match(ISO, q[key]), (key, q[key])
        assert q["agency_responsible"]


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_request_filters(env: DemoEnv, client: TestClient, fmt: str) -> None:
    ids = env.demo.case_ids["hubin-street"]
    got = items(client, fmt, "requests", "service_requests", "request",
                service_request_id=f"{ids[0]},{ids[1]}", status="closed")  # the id list overrides other filters
    assert sorted(q["service_request_id"] for q in got) == sorted(str(i) for i in ids[:2])
    assert items(client, fmt, "requests", "service_requests", "request", status="closed") == []
    assert len(items(client, fmt, "requests", "service_requests", "request", status="open")) == 8
    assert len(items(client, fmt, "requests", "service_requests", "request", service_code="B0101")) == 0
    future = items(client, fmt, "requests", "service_requests", "request", start_date="2100-01-01T00:00:00Z",
                   end_date="2100-01-02T00:00:00+08:00")
    assert future == []
    r = client.get(f"{BASE}/requests.{fmt}", params={"start_date": "2025-01-01T00:00:00"})
    assert r.status_code == 400  # a datetime without timezone is refused, not guessed


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_post_request_creates_reported_case(env: DemoEnv, client: TestClient, fmt: str) -> None:
    form = {"api_key": API_KEY, "service_code": "S0111", "lat": "30.2501", "long": "120.1402",
            "description": "涵洞积水 水深约 30 cm", "email": "citizen@example.org", "first_name": "王"}
    r = client.post(f"{BASE}/requests.{fmt}", data=form, headers={"Idempotency-Key": f"ticket-{fmt}"})
    assert r.status_code == 201, r.text
    created = (r.json()[0] if fmt == "json"
               else {c.tag: c.text for c in ET.fromstring(r.content).find("request")})  # type: ignore[union-attr]
    assert set(POST_RESPONSE_FIELDS) <= set(created)
    rid = created["service_request_id"]
    case = env.case_store.get(int(rid))
    assert case.state == "reported" and case.source == "open311" and case.service_code == "S0111"
    # the retry with the same idempotency key returns the same request
    again = client.post(f"{BASE}/requests.{fmt}", data=form, headers={"Idempotency-Key": f"ticket-{fmt}"})
    assert (again.json()[0]["service_request_id"] if fmt == "json"
            else ET.fromstring(again.content).findtext("request/service_request_id")) == rid
    (one,) = items(client, fmt, f"requests/{rid}", "service_requests", "request")
    assert one["status"] == "open" and one["description"] == "涵洞积水 水深约 30 cm"
    assert "citizen@example.org" not in str(one)  # reporter contact never goes out
    (tok,) = items(client, fmt, f"tokens/{created['token']}", "service_requests", "request")
    assert tok["service_request_id"] == rid


@pytest.mark.parametrize(("form", "status"), [
    ({"service_code": "S0111", "lat": "30", "long": "120"}, 403),  # no key
    ({"api_key": "wrong", "service_code": "S0111", "lat": "30", "long": "120"}, 403),
    ({"api_key": API_KEY, "lat": "30", "long": "120"}, 400),  # no service code
    ({"api_key": API_KEY, "service_code": "Z0000", "lat": "30", "long": "120"}, 400),
    ({"api_key": API_KEY, "service_code": "S0111"}, 400),  # no location
    ({"api_key": API_KEY, "service_code": "S0111", "lat": "30"}, 400),  # half a location
    ({"api_key": API_KEY, "service_code": "S0111", "lat": "95", "long": "120"}, 400),
    ({"api_key": API_KEY, "service_code": "S0111", "address_string": "灵隐路 1 号", "description": "x" * 4001}, 400),
])
def test_post_errors(client: TestClient, form: dict[str, str], status: int) -> None:
    r = client.post(f"{BASE}/requests.xml", data=form)
    assert r.status_code == status, r.text
    err = ET.fromstring(r.content)
    assert err.tag == "errors" and err.findtext("error/code") == str(status)
    assert err.findtext("error/description")


def test_post_with_address_and_header_key(client: TestClient) -> None:
    r = client.post(f"{BASE}/requests.json", data={"service_code": "B0101", "address_string": "灵隐路 1 号"},
                    headers={"X-API-Key": API_KEY})
    assert r.status_code == 201


def test_unknown_format_and_request(client: TestClient) -> None:
    assert client.get(f"{BASE}/services.csv").status_code == 422
    r = client.get(f"{BASE}/requests/999999.xml")
    assert r.status_code == 404 and ET.fromstring(r.content).findtext("error/code") == "404"
    assert client.get(f"{BASE}/tokens/nope.json").status_code == 404


def test_post_is_audited(env: DemoEnv, client: TestClient) -> None:
    client.post(f"{BASE}/requests.json", data={"api_key": API_KEY, "service_code": "B0101", "address_id": "A-1"})
    entries = env.app.state.ctx.stores.audit.entries(limit=5)
    assert entries[0].actor == "apikey:hotline-12319" and entries[0].action == "open311.post"
