"""Per-vehicle enforcement cases, case photos and reporter contact, against a real PostgreSQL case store.

The rule engine evaluates real WIM records (the shipped rule file), the case store on a throwaway
PostgreSQL database applies its alarms, and the console API (TestClient) serves the cases: one
case per truck with its axle table; photos checked by content and size, stored under the
configured directory, readable only through the case; the reporter's contact only for the command
and supervision seats, never in the public Open311 output.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from case_bridge import CaseStore, open_case_store
from case_bridge.config import load_catalog
from contracts.reading import DeviceInfo, Event
from rules.evaluate import EngineState, GatewayStatus, RuleSet, evaluate
from rules.specs import load_rules
from tests.integration.console.conftest import bearer
from tests.support.console_demo import DEMO_API_KEY, RULES, DemoEnv, build_demo, demo_settings
from tests.support.services import pg_database

pytestmark = pytest.mark.integration
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4
GIF = b"GIF89a" + b"\x00" * 64
MAX_BYTES = 4096
WIM = DeviceInfo("wim-0001", "wim", "wim", 30.2801, 120.1633, grid="330106001001")


@pytest.fixture
def pg_env(tmp_path: Path) -> Iterator[DemoEnv]:
    table = load_catalog()
    cats = tuple(c.model_copy(update={"photos_required": True}) if c.service_code == "S0111" else c
                 for c in table.table.categories)
    catalog = type(table)(table.table.model_copy(update={"categories": cats}), table.units, table.calendar)
    with pg_database() as dsn:
        cs: CaseStore = open_case_store(dsn, catalog)
        settings = demo_settings(media_dir=str(tmp_path / "media"), media_max_bytes=MAX_BYTES)
        env = build_demo(str(tmp_path), n_devices=4, now=time.time(), settings=settings, case_store=cs)
        try:
            yield env
        finally:
            env.close()


def test_each_truck_is_one_case_with_its_axle_table(pg_env: DemoEnv) -> None:
    rs = RuleSet(load_rules([RULES]))
    t0 = time.time() - 60
    trucks = [  # truck 1: gross AND axle overload (two alarms); truck 2: gross only; truck 3: legal
        Event("wim-0001", "vehicle", "101-1", t0, {"lane": 1, "speed_kmh": 48.0, "axles": 2, "gross_kg": 24000,
                                                   "axle_kg": [8000, 16000], "spacing_m": [3.8], "plate": "浙A12345",
                                                   "images": ["anpr/101-front.jpg"]}),
        Event("wim-0001", "vehicle", "102-2", t0 + 5, {"lane": 2, "speed_kmh": 52.0, "axles": 3, "gross_kg": 30000,
                                                       "axle_kg": [7000, 11500, 11500], "spacing_m": [3.5, 1.35]}),
        Event("wim-0001", "vehicle", "103-3", t0 + 9, {"lane": 1, "speed_kmh": 60.0, "axles": 2, "gross_kg": 15000,
                                                       "axle_kg": [6000, 9000], "spacing_m": [3.8]}),
    ]
    _, trs = evaluate(rs, EngineState(), [GatewayStatus("gw", "online", t0 - 1, (WIM,)), *trucks], t0 + 10)
    assert sorted((tr.rule, tr.evidence["vehicle"]["event_id"]) for tr in trs) == [
        ("wim-axle-overload", "101-1"), ("wim-overload", "101-1"), ("wim-overload", "102-2")]
    effects = [pg_env.case_store.apply_alarm(tr, WIM, now=tr.t).effect for tr in trs]
    assert sorted(effects) == ["attached", "created", "created"]
    for tr in trs:  # a redelivery raises nothing twice
        assert pg_env.case_store.apply_alarm(tr, WIM, now=tr.t + 1).effect == "duplicate"
    with TestClient(pg_env.app) as client:
        duty = bearer(client, "duty")
        items = client.get("/api/v1/cases", params={"device": "wim-0001"}, headers=duty).json()["items"]
        assert len(items) == 2
        by_event = {c["vehicle"]["event_id"]: c for c in items}
        first = client.get(f"/api/v1/cases/{by_event['101-1']['id']}", headers=duty).json()["case"]
        v = first["vehicle"]
        assert (v["plate"], v["images"], v["lane"], v["speed_kmh"]) == ("浙A12345", ["anpr/101-front.jpg"], 1, 48.0)
        assert (v["gross_limit_kg"], v["gross_over_pct"]) == (18000.0, 33.3)
        assert [(g["config"], g["limit_kg"], g["over_pct"]) for g in v["groups"]] == [
            ("steer", 7000.0, 14.3), ("single", 11500.0, 39.1)]
        assert "plate 浙A12345" in first["description"]
        linked = {a.rule for a in pg_env.case_store.linked_alarms(int(first["id"]))}
        assert linked == {"wim-overload", "wim-axle-overload"}
        page = client.get(f"/cases/{first['id']}", headers=duty)
        assert page.status_code == 200 and "浙A12345" in page.text and "39.1" in page.text


def test_photos_are_checked_stored_and_served_only_through_the_case(pg_env: DemoEnv, tmp_path: Path) -> None:
    case_id = pg_env.demo.case_ids["lingyin-street"][0]  # dispatched to lingyin-street (handler-a), S0111
    url = f"/api/v1/cases/{case_id}/media"
    with TestClient(pg_env.app) as client:
        a, b, duty = bearer(client, "handler-a"), bearer(client, "handler-b"), bearer(client, "duty")
        jpeg = {"Content-Type": "image/jpeg"}
        assert client.post(url, content=JPEG, headers={**b, **jpeg}).status_code == 404  # another unit's case
        assert client.post(url, content=JPEG, headers={**duty, **jpeg}).status_code == 403  # no cases:act
        gif = client.post(url, content=GIF, headers={**a, **jpeg})  # claims JPEG, is not
        assert gif.status_code == 400 and "not a JPEG, PNG or WebP" in gif.text
        big = client.post(url, content=JPEG + b"\x00" * MAX_BYTES, headers={**a, **jpeg})
        assert big.status_code == 400 and f"over the limit of {MAX_BYTES} bytes" in big.text
        assert client.post(url, content=JPEG + b"\x00" * 70_000, headers={**a, **jpeg}).status_code == 413  # BodyLimit
        assert client.post(f"/api/v1/cases/{case_id}/actions", json={"action": "accept"}, headers=a).status_code == 200
        refused = client.post(f"/api/v1/cases/{case_id}/actions", json={"action": "report_fix", "note": "pumped"},
                              headers=a)
        assert refused.status_code == 409 and "attach before, after first" in refused.text
        before = client.post(url, params={"stage": "before"}, content=JPEG, headers={**a, **jpeg})
        assert before.status_code == 201, before.text
        after = client.post(url, params={"stage": "after"}, content=JPEG, headers={**a, **jpeg}).json()["media"]
        fixed = client.post(f"/api/v1/cases/{case_id}/actions", json={"action": "report_fix", "note": "pumped"},
                            headers=a)
        assert fixed.status_code == 200, fixed.text
        stored = list((tmp_path / "media" / str(case_id)).iterdir())
        assert [p.read_bytes() for p in stored] == [JPEG]  # content-addressed: one file for the same bytes
        got = client.get(after["url"], headers=duty)
        assert got.status_code == 200 and got.content == JPEG and got.headers["content-type"] == "image/jpeg"
        assert client.get(after["url"], headers=b).status_code == 404  # handler of another unit
        client.cookies.clear()  # the logins above left a session cookie
        assert client.get(after["url"]).status_code == 401  # no login
        detail = client.get(f"/api/v1/cases/{case_id}", headers=a).json()
        assert [m["stage"] for m in detail["case"]["media"]] == ["before", "after"]
        assert "attach_media" in [e["action"] for e in detail["timeline"]]
        public = client.get(f"/open311/v2/requests/{case_id}.json").text
        assert "/media/" not in public and after["id"] not in public


def test_reporter_contact_only_for_command_and_supervision(pg_env: DemoEnv) -> None:
    form = {"api_key": DEMO_API_KEY, "service_code": "S0111", "lat": "30.2601", "long": "120.1401",
            "description": "积水", "first_name": "Li", "last_name": "Wei", "phone": "13800000000",
            "email": "li.wei@example.cn", "media_url": "https://photos.example.cn/li/1.jpg"}
    with TestClient(pg_env.app) as client:
        r = client.post("/open311/v2/requests.json", data=form)
        assert r.status_code == 201, r.text
        case_id = r.json()[0]["service_request_id"]
        contact = {"first_name": "Li", "last_name": "Wei", "phone": "13800000000", "email": "li.wei@example.cn"}
        auth = {who: bearer(client, who) for who in ("duty", "sup", "handler-a", "handler-b")}  # 4 logins: rate limit
        for who in ("duty", "sup"):
            assert client.get(f"/api/v1/cases/{case_id}", headers=auth[who]).json()["case"]["contact"] == contact
        pg_env.case_store.transition(int(case_id), "file", "sup", role="supervisor")
        pg_env.case_store.transition(int(case_id), "dispatch", "sup", role="dispatcher", unit="lingyin-street")
        client.cookies.clear()  # pages below must use the given bearer, not the last login's cookie
        own = client.get(f"/api/v1/cases/{case_id}", headers=auth["handler-a"])
        assert own.status_code == 200 and "contact" not in own.json()["case"]  # its handler: the case, no contact
        assert "13800000000" not in client.get(f"/cases/{case_id}", headers=auth["handler-a"]).text
        assert "13800000000" in client.get(f"/cases/{case_id}", headers=auth["sup"]).text
        assert client.get(f"/api/v1/cases/{case_id}", headers=auth["handler-b"]).status_code == 404
        listed = client.get("/api/v1/cases", headers=auth["duty"]).text
        for fmt in ("json", "xml"):
            public = client.get(f"/open311/v2/requests/{case_id}.{fmt}").text + \
                client.get(f"/open311/v2/requests.{fmt}").text
            for secret in contact.values():
                assert secret not in public and secret not in listed
            assert "https://photos.example.cn/li/1.jpg" in public  # the reporter's own link is kept and shown
        bad = client.post("/open311/v2/requests.json", data={**form, "media_url": "javascript:alert(1)"})
        assert bad.status_code == 400
