"""The two centres through the console: who may do what, 督办 on the case, the readings-based gate.

Real SQLite stores seeded by the demo; the time-series store's latest reading is what the gate
reads, so a gauge whose alarm was cleared but whose water still stands refuses 核查通过.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from case_bridge.config import CentreRoles
from cloud_ingest.store import WriteBatch
from contracts.alarms import AlarmTransition, Severity, TransitionKind
from contracts.reading import Reading
from tests.support.console_demo import (
    DEMO_USERS,
    PASSWORD,
    DemoEnv,
    RecordingAcks,
    _demo_hash,
    build_demo,
    demo_settings,
)

pytestmark = pytest.mark.integration

USERS = [*DEMO_USERS, ("cmd", "command", None), ("supv", "supervision", None)]


@pytest.fixture
def clock() -> list[float]:
    return [time.time()]


@pytest.fixture
def env(tmp_path: Path, clock: list[float]) -> Iterator[DemoEnv]:
    users = [{"username": u, "password_hash": _demo_hash(), "role": r, "unit": unit} for u, r, unit in USERS]
    e = build_demo(str(tmp_path), now=clock[0], settings=demo_settings(users=users), clock=lambda: clock[0])
    yield e
    e.close()


def login(client: TestClient, username: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def act(client: TestClient, who: dict[str, str], cid: int, action: str, **body: object) -> tuple[int, Any]:
    r = client.post(f"/api/v1/cases/{cid}/actions", headers=who, json={"action": action, **body})
    return r.status_code, r.json()


def test_supervision_files_command_dispatches_urges_unit_sees_it(env: DemoEnv, clock: list[float]) -> None:
    with TestClient(env.app) as client:
        cmd, supv, duty = login(client, "cmd"), login(client, "supv"), login(client, "duty")
        cid = env.demo.case_ids["hubin-street"][1]  # reported
        assert act(client, cmd, cid, "reject")[0] == 409  # 不予立案 is the supervision centre's
        assert act(client, supv, cid, "file")[0] == 200
        assert act(client, supv, cid, "dispatch")[0] == 409
        assert act(client, duty, cid, "dispatch")[0] == 403  # default: the duty room is not the command centre
        status, body = act(client, cmd, cid, "dispatch")
        assert status == 200 and "urge" in body["actions"] and "reassign" in body["actions"]
        status, body = act(client, cmd, cid, "urge", note="too early")
        assert status == 409 and "urging is for cases overdue or due within 4 h" in body["error"]["message"]
        deadline = env.case_store.get(cid).deadline
        assert deadline is not None
        clock[0] = deadline + 600  # ten minutes overdue (hours later: log in again)
        cmd, supv = login(client, "cmd"), login(client, "supv")
        assert act(client, supv, cid, "urge", note="x")[0] == 409  # 督办 is the command centre's
        status, _ = act(client, cmd, cid, "urge", note="今日内处置")
        assert status == 200
        hb = login(client, "handler-b")  # the unit's handler sees the urging
        detail = client.get(f"/api/v1/cases/{cid}", headers=hb).json()
        assert detail["urges"]["count"] == 1 and detail["urges"]["last"]["actor"] == "cmd"
        assert detail["urges"]["last"]["overdue_s"] == 600.0
        assert detail["timeline"][-1]["action"] == "urge" and detail["timeline"][-1]["data"]["overdue_s"] == 600.0
        page = client.get(f"/cases/{cid}", headers=hb).text
        assert "督办 urged ×1" in page and "今日内处置" in page


def test_cleared_alarm_with_water_still_standing_refuses_verify_and_shows_the_reading(env: DemoEnv,
                                                                                     clock: list[float]) -> None:
    now = clock[0]
    aid = env.demo.alarm_ids[0]
    case = env.case_store.case_for_alarm(aid)
    assert case is not None and case.device is not None
    # the alarm is cleared (a manual clear) but the gauge still reads 0.30 m (clears below 0.13)
    env.case_store.apply_alarm(AlarmTransition(aid, case.device, "road-water-depth", TransitionKind.CLEARED,
                                               Severity.CRITICAL, now - 60, 0.3, {}), None, now - 60)
    env.ts_store.write(WriteBatch(readings=[Reading(case.device, "depth", now + 1, 0.3, "m")]))  # the newest
    env.case_store.transition(case.id, "report_fix", "h", role="handler", now=now - 20)
    with TestClient(env.app) as client:
        sup = login(client, "sup")
        status, body = act(client, sup, case.id, "verify")
        msg = body["error"]["message"]
        assert status == 409 and "latest readings outside the clear condition" in msg
        assert f"{case.device} depth 0.3 at " in msg and "(clears at depth < 0.13)" in msg
        status, _ = act(client, sup, case.id, "verify", override_reason="gauge silted; road dry on site")
        assert status == 200
        timeline = client.get(f"/api/v1/cases/{case.id}", headers=sup).json()["timeline"]
        override = next(e for e in timeline if e["action"] == "override")
        assert override["data"]["readings"][0]["value"] == 0.3 and override["data"]["alarms"] == []
        page = client.get(f"/cases/{case.id}", headers=sup).text
        assert "data-thresholds='[{" in page and '"rule": "road-water-depth"' in page
        assert f'data-mark="{case.data["alarm"]["t"]}"' in page  # the chart centres on the alarm


def test_a_city_that_merges_duty_room_and_command_centre(env: DemoEnv, tmp_path: Path, clock: list[float]) -> None:
    from console.adapters import CaseAdapter, DeviceAdapter, RulesAlarmAdapter
    from console.app import create_app
    from console.audit import AuditLog
    from console.context import Stores

    cat = env.case_store.catalog
    merged = cat.table.model_copy(update={"roles": CentreRoles(command=("command", "supervisor", "duty_officer"))})
    env.case_store.catalog = dataclasses.replace(cat, table=merged)
    stores = Stores(devices=DeviceAdapter(env.ts_store, cache_s=0.0), alarms=RulesAlarmAdapter(env.alarm_store),
                    cases=CaseAdapter(env.case_store), audit=AuditLog(f"sqlite:///{tmp_path}/console2.db"),
                    acks=RecordingAcks())
    app = create_app(env.settings, stores, clock=lambda: clock[0])
    with TestClient(app) as client:
        duty = login(client, "duty")
        cid = env.demo.case_ids["hubin-street"][1]
        assert act(client, duty, cid, "file")[0] == 200  # 立案 is the command centre's too
        status, body = act(client, duty, cid, "dispatch")
        assert status == 200 and "verify" not in body["actions"]
        assert act(client, duty, cid, "accept")[0] == 409  # the unit's work stays the unit's
