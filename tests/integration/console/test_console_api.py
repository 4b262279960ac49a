"""REST API against real SQLite stores: every route, auth, limits, errors, audit."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from tests.support.console_demo import PASSWORD, DemoEnv

pytestmark = pytest.mark.integration
Auth = Callable[[str], dict[str, str]]


def test_login_me_and_bad_password(client: TestClient, as_user: Auth) -> None:
    h = as_user("handler-a")
    me = client.get("/api/v1/auth/me", headers=h).json()
    assert me == {"username": "handler-a", "role": "case_handler", "unit": "lingyin-street"}
    r = client.post("/api/v1/auth/login", json={"username": "handler-a", "password": "nope"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = client.post("/api/v1/auth/login", json={"username": "ghost", "password": "nope"})
    assert r.status_code == 401


def test_unauthenticated_and_bad_tokens(client: TestClient) -> None:
    assert client.get("/api/v1/devices").status_code == 401
    r = client.get("/api/v1/devices", headers={"Authorization": "Bearer abc.def"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_token_expiry(env: DemoEnv) -> None:
    clock = [1_800_000_000.0]
    env.app.state.ctx.clock = lambda: clock[0]
    with TestClient(env.app) as c:
        tok = c.post("/api/v1/auth/login", json={"username": "duty", "password": PASSWORD}).json()
        h = {"Authorization": f"Bearer {tok['access_token']}"}
        assert c.get("/api/v1/auth/me", headers=h).status_code == 200
        clock[0] += env.settings.token_ttl_s + 1
        r = c.get("/api/v1/auth/me", headers=h)
        assert r.status_code == 401 and "expired" in r.json()["error"]["message"]


def test_login_rate_limit_and_lockout(client: TestClient) -> None:
    codes = [client.post("/api/v1/auth/login", json={"username": "sup", "password": "guess"}).status_code
             for _ in range(8)]
    assert codes[:5] == [401] * 5
    assert codes[-1] == 429
    r = client.post("/api/v1/auth/login", json={"username": "sup", "password": PASSWORD})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1  # even the right password waits


def test_write_rate_limit(env: DemoEnv, client: TestClient, as_user: Auth) -> None:
    h = as_user("duty")
    alarm = env.demo.alarm_ids[0]
    codes = [client.post(f"/api/v1/alarms/{alarm}/ack", headers=h, json={}).status_code for _ in range(40)]
    assert codes[0] == 202 and 429 in codes


def test_devices_and_readings(env: DemoEnv, client: TestClient, as_user: Auth) -> None:
    h = as_user("duty")
    body = client.get("/api/v1/devices", headers=h, params={"kind": "water_gauge"}).json()
    assert body["total"] == 4
    d = body["items"][0]
    assert d["online"] is True and d["lat"] is not None and "depth" in d["latest"]
    r = client.get(f"/api/v1/devices/{d['id']}/readings", headers=h, params={"metric": "depth", "max_points": 50})
    pts = r.json()["points"]
    assert 0 < len(pts) <= 51 and all(p[2] <= p[1] <= p[3] for p in pts)
    assert client.get("/api/v1/devices/nope", headers=h).status_code == 404
    r = client.get(f"/api/v1/devices/{d['id']}/readings", headers=h, params={"start": 0, "end": 1e9, "bucket_s": 1})
    assert r.status_code == 422 and r.json()["error"]["field"] == "query.bucket_s"


def test_validation_errors_name_the_field(client: TestClient, as_user: Auth) -> None:
    h = as_user("sup")
    r = client.get("/api/v1/cases", headers=h, params={"limit": "many"})
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "query.limit"
    r = client.get("/api/v1/cases", headers=h, params={"limit": 100000})
    assert r.status_code == 422 and r.json()["error"]["field"] == "query.limit"
    r = client.post("/api/v1/cases/1/actions", headers=h, json={"action": "file", "owner": "me"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "body.owner"  # no mass assignment


def test_body_size_limit(client: TestClient, as_user: Auth) -> None:
    h = as_user("sup")
    r = client.post("/api/v1/cases/1/actions", headers={**h, "Content-Type": "application/json"},
                    content=b'{"note": "' + b"x" * 200_000 + b'"}')
    assert r.status_code == 413


def test_alarms_sorted_and_ack_published(env: DemoEnv, client: TestClient, as_user: Auth) -> None:
    h = as_user("duty")
    items = client.get("/api/v1/alarms", headers=h).json()["items"]
    assert [a["severity"] for a in items] == ["critical", "major"]
    r = client.post(f"/api/v1/alarms/{items[0]['alarm_id']}/ack", headers=h, json={"note": "seen"})
    assert r.status_code == 202
    assert env.acks.sent[0][:3] == (items[0]["alarm_id"], items[0]["device"], "duty")
    assert client.post("/api/v1/alarms/none/ack", headers=h, json={}).status_code == 404
    audit = client.get("/api/v1/audit", headers=as_user("sup")).json()
    assert audit["chain_ok"] and any(e["action"] == "alarm.ack" and e["result"] == 202 for e in audit["items"])


def test_worklist_filters_and_order(env: DemoEnv, client: TestClient, as_user: Auth) -> None:
    h = as_user("sup")
    body = client.get("/api/v1/cases", headers=h, params={"open_only": True}).json()
    deadlines = [(not c["overdue"], c["time_to_deadline_s"]) for c in body["items"]]
    assert deadlines == sorted(deadlines, key=lambda x: (x[0], x[1] if x[1] is not None else 1e18))
    hubin = client.get("/api/v1/cases", headers=h, params={"unit": "hubin-street"}).json()
    assert hubin["total"] == 3 and {c["unit"] for c in hubin["items"]} == {"hubin-street"}
    st = client.get("/api/v1/cases", headers=h, params={"state": "dispatched"}).json()
    assert st["items"] and all(c["state"] == "dispatched" for c in st["items"])
    cat = client.get("/api/v1/cases", headers=h, params={"category": "S0111"}).json()
    assert cat["total"] == body["total"]
    r = client.get("/api/v1/cases", headers=h, params={"state": "bogus"})
    assert r.status_code == 400


def test_case_detail_timeline_and_workflow(env: DemoEnv, client: TestClient, as_user: Auth) -> None:
    ha = as_user("handler-a")
    sup = as_user("sup")
    cid = env.demo.case_ids["lingyin-street"][0]
    detail = client.get(f"/api/v1/cases/{cid}", headers=ha).json()
    assert detail["case"]["state"] == "dispatched"
    assert [e["action"] for e in detail["timeline"]] == ["report", "file", "dispatch"]
    assert "accept" in detail["actions"] and "verify" not in detail["actions"]
    for action in ("accept", "report_fix"):
        r = client.post(f"/api/v1/cases/{cid}/actions", headers=ha, json={"action": action, "note": "done"})
        assert r.status_code == 200, r.text
    r = client.post(f"/api/v1/cases/{cid}/actions", headers=ha, json={"action": "verify"})
    assert r.status_code == 409 and "allowed" in r.json()["error"]["message"]
    for action in ("verify", "close"):
        assert client.post(f"/api/v1/cases/{cid}/actions", headers=sup, json={"action": action}).status_code == 200
    final = client.get(f"/api/v1/cases/{cid}", headers=sup).json()
    assert final["case"]["state"] == "closed" and final["actions"] == []
    assert final["case"]["on_time"] is True and final["case"]["closed_at"] is not None
    page = client.get(f"/cases/{cid}", headers=sup).text
    assert "办结时间 Closed" in page and "按时 on time" in page and "Deadline" not in page
    assert [e["actor"] for e in final["timeline"][-4:]] == ["handler-a", "handler-a", "sup", "sup"]
    assert {a["action"] for a in final["audit"]} >= {"case.accept", "case.close"}


def test_sensor_case_verify_refused_while_alarm_active_unless_overridden(env: DemoEnv, client: TestClient,
                                                                         as_user: Auth) -> None:
    sup = as_user("sup")
    case = env.case_store.case_for_alarm(env.demo.alarm_ids[0])
    assert case is not None and case.state == "dispatched"
    env.case_store.transition(case.id, "report_fix", "h", role="handler")
    url = f"/api/v1/cases/{case.id}/actions"
    r = client.post(url, headers=sup, json={"action": "verify"})
    assert r.status_code == 409, r.text
    msg = r.json()["error"]["message"]
    assert env.demo.alarm_ids[0] in msg and "0.31" in msg and "override" in msg
    page = client.get(f"/cases/{case.id}", headers=sup)
    assert page.status_code == 200 and 'name="override_reason"' in page.text
    r = client.post(url, headers=sup, json={"action": "verify", "override_reason": "gauge silted; road dry"})
    assert r.status_code == 200 and r.json()["case"]["state"] == "verified"
    timeline = client.get(f"/api/v1/cases/{case.id}", headers=sup).json()["timeline"]
    assert [(e["action"], e["note"]) for e in timeline[-2:]] == [("override", "gauge silted; road dry"),
                                                                 ("verify", "")]
    r = client.post(url, headers=sup, json={"action": "close", "override_reason": "as verified"})
    assert r.status_code == 200 and r.json()["case"]["overridden"] and r.json()["case"]["on_time"] is False
    assert "强制核查 sensor overridden" in client.get(f"/cases/{case.id}", headers=sup).text


def test_reassign_by_the_command_centre_and_a_handlers_request(env: DemoEnv, client: TestClient,
                                                               as_user: Auth) -> None:
    ha, hb, sup = as_user("handler-a"), as_user("handler-b"), as_user("sup")
    cid = env.demo.case_ids["lingyin-street"][0]
    url = f"/api/v1/cases/{cid}/actions"
    assert client.post(url, headers=ha, json={"action": "request_reassign"}).status_code == 409  # no reason
    r = client.post(url, headers=ha, json={"action": "request_reassign", "note": "not ours: hubin's drain"})
    assert r.status_code == 200 and r.json()["case"]["state"] == "returned"
    assert "reassign" not in r.json()["actions"]
    page = client.get(f"/cases/{cid}", headers=sup).text
    assert 'name="unit"' in page and 'value="hubin-street"' in page
    assert client.post(url, headers=sup, json={"action": "reassign", "note": "hubin's"}).status_code == 409
    assert client.post(url, headers=sup, json={"action": "reassign", "note": "x", "unit": "nowhere"}).status_code == 400
    r = client.post(url, headers=sup, json={"action": "reassign", "note": "hubin's drain", "unit": "hubin-street"})
    assert r.status_code == 200, r.text
    assert r.json()["case"]["state"] == "dispatched" and r.json()["case"]["unit"] == "hubin-street"
    assert client.get(f"/api/v1/cases/{cid}", headers=ha).status_code in (403, 404)
    detail = client.get(f"/api/v1/cases/{cid}", headers=hb).json()
    assert "accept" in detail["actions"]
    (entry,) = [e for e in env.case_store.timeline(cid) if e.action == "reassign"]
    assert entry.data["deadline_rule"] == "restart" and entry.data["unit"] == {"from": "lingyin-street",
                                                                                "to": "hubin-street"}
    assert entry.note == "hubin's drain"


def test_idempotent_request_id(env: DemoEnv, client: TestClient, as_user: Auth) -> None:
    ha = as_user("handler-a")
    cid = env.demo.case_ids["lingyin-street"][0]
    body = {"action": "accept", "request_id": "retry-1"}
    assert client.post(f"/api/v1/cases/{cid}/actions", headers=ha, json=body).status_code == 200
    # the retry is refused by the console (accept is no longer allowed) — the state moved once
    again = client.post(f"/api/v1/cases/{cid}/actions", headers=ha, json=body)
    assert again.status_code == 409
    assert [e["action"] for e in client.get(f"/api/v1/cases/{cid}", headers=ha).json()["timeline"]].count("accept") == 1


def test_extension_approval_is_supervisor_only(env: DemoEnv, client: TestClient, as_user: Auth) -> None:
    ha, sup = as_user("handler-a"), as_user("sup")
    cid = env.demo.case_ids["lingyin-street"][0]
    r = client.post(f"/api/v1/cases/{cid}/actions", headers=ha, json={"action": "request_extension"})
    assert r.status_code == 200
    detail = client.get(f"/api/v1/cases/{cid}", headers=ha).json()
    assert "approve_extension" not in detail["actions"]
    assert client.post(f"/api/v1/cases/{cid}/actions", headers=ha,
                       json={"action": "approve_extension"}).status_code == 409
    assert client.post(f"/api/v1/cases/{cid}/actions", headers=sup,
                       json={"action": "approve_extension"}).status_code == 200


def test_statistics_and_overview(client: TestClient, as_user: Auth) -> None:
    st = client.get("/api/v1/statistics", headers=as_user("sup")).json()
    assert {r["key"] for r in st["by_unit"]} >= {"lingyin-street", "hubin-street"}
    assert st["by_hour"] and all(0 <= c["hour"] < 24 for c in st["by_hour"])
    ov = client.get("/api/v1/overview", headers=as_user("duty")).json()
    assert ov["counts"]["water_gauge"]["alarm"] == 2
    assert ov["gauges"][0]["severity"] == "critical" and len(ov["gauges"][0]["trend"]) > 10


def test_admin_users_never_show_hashes(client: TestClient, as_user: Auth) -> None:
    users = client.get("/api/v1/admin/users", headers=as_user("admin")).json()
    assert {u["username"] for u in users} >= {"duty", "admin"}
    assert "argon2" not in str(users)


def test_admin_reload(env: DemoEnv, client: TestClient, as_user: Auth) -> None:
    from tests.support.console_demo import demo_settings

    h = as_user("admin")
    env.app.state.ctx.reload = lambda: demo_settings(users=[
        u.model_dump() for u in env.settings.users if u.username != "handler-b"])
    hb = as_user("handler-b")
    assert client.post("/api/v1/admin/reload", headers=h).json()["users"] == 4
    r = client.get("/api/v1/auth/me", headers=hb)
    assert r.status_code == 401  # a removed user's token stops working at once


def test_cookie_writes_need_csrf(client: TestClient, env: DemoEnv) -> None:
    r = client.post("/api/v1/auth/login", json={"username": "duty", "password": PASSWORD})
    csrf = r.json()["csrf_token"]
    alarm = env.demo.alarm_ids[0]
    assert client.get("/api/v1/alarms").status_code == 200  # cookie works for reads
    assert client.post(f"/api/v1/alarms/{alarm}/ack", json={}).status_code == 403
    assert client.post(f"/api/v1/alarms/{alarm}/ack", json={}, headers={"X-CSRF-Token": csrf}).status_code == 202


def test_openapi_and_docs_need_login_in_production(tmp_path: object) -> None:
    import time

    from tests.support.console_demo import build_demo, demo_settings

    env = build_demo(str(tmp_path), now=time.time(), settings=demo_settings(production=True))
    with TestClient(env.app) as c:
        assert c.get("/api/openapi.json").status_code == 401
        assert c.get("/docs").status_code == 404
        c.post("/api/v1/auth/login", json={"username": "duty", "password": PASSWORD})
        spec = c.get("/api/openapi.json").json()
        assert "/api/v1/cases/{case_id}/actions" in spec["paths"]
        assert "/open311/v2/requests.{fmt}" in spec["paths"]
        assert c.get("/api/docs").status_code == 200
    env.close()


def test_security_headers(client: TestClient) -> None:
    r = client.get("/login")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in r.headers["content-security-policy"]


def test_refused_writes_are_audited(env: DemoEnv, client: TestClient, as_user: Auth) -> None:
    alarm = env.demo.alarm_ids[0]
    assert client.post(f"/api/v1/alarms/{alarm}/ack", headers=as_user("handler-a"), json={}).status_code == 403
    entries = env.app.state.ctx.stores.audit.entries(limit=5)
    assert entries[0].actor == "handler-a" and entries[0].result == 403 and entries[0].action == "denied:POST"


@pytest.mark.parametrize("case_id", ["%C2%B2", "%D9%A1%D9%A2", "12%20", "-1", "1e3", "9" * 19])
def test_case_ids_are_ascii_digits_only(env: DemoEnv, client: TestClient, as_user: Auth, case_id: str) -> None:
    """'²'.isdigit() and '١٢'.isdigit() are true in Python; neither may reach int() (500) or case 12."""
    sup = as_user("sup")
    assert client.get(f"/api/v1/cases/{case_id}", headers=sup).status_code == 404
    r = client.post(f"/api/v1/cases/{case_id}/actions", headers=sup, json={"action": "file"})
    assert r.status_code in (404, 422), r.text
