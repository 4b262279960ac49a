"""Statistics API and page against real SQLite stores: tables, places as GeoJSON, CSV and XLSX exports."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import openpyxl
import pytest
from fastapi.testclient import TestClient

from cloud_ingest.store import open_store
from console.adapters import CaseAdapter, DeviceAdapter, RulesAlarmAdapter
from console.app import create_app
from console.audit import AuditLog
from console.context import Stores
from rules.store import open_alarm_store
from tests.integration.console.conftest import bearer
from tests.support.cases import pg_store, sqlite_store
from tests.support.console_demo import DemoEnv, demo_settings, make_devices, seed_cases, seed_timeseries

pytestmark = pytest.mark.integration
Auth = Callable[[str], dict[str, str]]


def _seed(env: DemoEnv) -> None:
    now = time.time()
    for i in range(7):  # one underpass floods again and again over three days
        env.case_store.create_reported("S0111", f"下穿积水 {i}", 30.25101, 120.13201, "灵隐路下穿",
                                       grid="330106001001", now=now - (i % 3) * 86400 - 60 - i)
    env.case_store.create_reported("S0111", "=cmd|' /C calc'!A0", 30.2601, 120.1401, "=cmd|' /C calc'!A0",
                                   grid="330102001001", now=now - 3600)


def test_tables_places_and_exports(env: DemoEnv, client: TestClient, as_user: Auth) -> None:
    _seed(env)
    h = as_user("sup")
    body = client.get("/api/v1/statistics/tables", headers=h, params={"days": 7}).json()
    by_id = {t["id"]: t for t in body["tables"]}
    days = by_id["by_day"]["rows"]
    assert len(days) == 7 and sum(r[1] for r in days) == 8 + 8  # the demo's eight and these
    top = by_id["places"]["rows"][0]
    assert top[1] == "灵隐路下穿" and top[3] == 7
    # seven here and the demo's two gauge alarms in 灵隐 grids
    assert {r[0]: r[2] for r in by_id["by_street"]["rows"]}["lingyin-street"] == 9

    r = client.get("/api/v1/statistics/places", headers=h, params={"days": 7})
    assert r.headers["content-type"].startswith("application/geo+json")
    gj = r.json()
    hottest = max(gj["features"], key=lambda f: f["properties"]["cases"] if f["properties"]["kind"] == "place" else 0)
    assert hottest["geometry"]["coordinates"] == [120.13201, 30.25101] and gj["max_cases"] == 7

    r = client.get("/api/v1/statistics/export", headers=h, params={"table": "places", "format": "csv", "days": 7})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"] and ".csv" in r.headers["content-disposition"]
    text = r.content.decode("utf-8-sig")
    assert "灵隐路下穿" in text and "'=cmd" in text and "\n=cmd" not in text and ",=cmd" not in text

    r = client.get("/api/v1/statistics/export", headers=h, params={"table": "all", "format": "xlsx", "days": 7})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/vnd.openxmlformats")
    wb = openpyxl.load_workbook(io.BytesIO(r.content))
    assert len(wb.sheetnames) == 9 and "高发地点 High-incidence places" in wb.sheetnames
    places = list(wb["高发地点 High-incidence places"].iter_rows(values_only=True))
    assert places[1][1] == "灵隐路下穿" and places[1][3] == 7
    assert any(c.data_type == "s" and str(c.value).startswith("=cmd")
               for row in wb["高发地点 High-incidence places"].iter_rows() for c in row)  # text, not a formula

    exports = [e for e in env.app.state.ctx.stores.audit.entries(limit=20) if e.action == "stats.export"]
    assert [(e.actor, e.obj, e.detail["format"]) for e in exports] == [("sup", "stats:all", "xlsx"),
                                                                       ("sup", "stats:places", "csv")]


def test_period_and_refusals(client: TestClient, as_user: Auth) -> None:
    h = as_user("duty")
    now = time.time()
    r = client.get("/api/v1/statistics/tables", headers=h, params={"start": now - 3 * 86400, "end": now})
    assert r.status_code == 200 and r.json()["start"] == pytest.approx(now - 3 * 86400)
    assert client.get("/api/v1/statistics/tables", headers=h, params={"start": now, "end": now - 1}).status_code == 400
    r = client.get("/api/v1/statistics/export", headers=h, params={"table": "all", "format": "csv"})
    assert r.status_code == 400
    assert client.get("/api/v1/statistics/export", headers=h, params={"table": "nope"}).status_code == 404
    assert client.get("/api/v1/statistics/export", headers=h, params={"format": "pdf"}).status_code == 422
    assert client.get("/api/v1/statistics/places", headers=as_user("handler-a")).status_code == 403


def test_stats_page(env: DemoEnv, client: TestClient, as_user: Auth) -> None:
    _seed(env)
    client.post("/api/v1/auth/login", json={"username": "sup", "password": "citywatch-demo"})  # page cookie
    page = client.get("/stats", params={"days": 7}).text
    assert 'id="trend-day"' in page and 'id="heat"' in page and "<circle" in page
    assert page.count('class="export"') == 16  # CSV and XLSX for each of the eight tables
    assert "灵隐路下穿" in page and "&#39;=cmd" not in page  # the page shows the address as it was written
    page = client.get("/stats", params={"first": "2020-01-01", "last": "2020-01-31"}).text
    assert "2020-01-01 — 2020-01-31" in page and "No located cases" in page
    assert client.get("/stats", params={"first": "2020-13-01"}).status_code == 400


def test_same_tables_over_sqlite_and_postgresql(tmp_path: Path, pg_dsn: str) -> None:
    """The console's statistics over a PostgreSQL case store equal those over SQLite for the same cases."""
    now = time.time()
    devices = make_devices(16)
    bodies = []
    for backend in ("sqlite", "postgresql"):
        work = tmp_path / backend
        work.mkdir()
        ts = open_store(f"sqlite:///{work}/ts.db")
        alarms = open_alarm_store(f"sqlite:///{work}/rules.db")
        stores = sqlite_store(work) if backend == "sqlite" else pg_store(pg_dsn)
        with stores as cs:
            seed_timeseries(ts, devices, now)
            seed_cases(cs, devices, now, alarms=alarms)
            for i in range(7):
                cs.create_reported("S0111", f"下穿积水 {i}", 30.25101, 120.13201, "灵隐路下穿", grid="330106001001",
                                   now=now - (i % 3) * 86400 - 60 - i)
            stores_ = Stores(devices=DeviceAdapter(ts, cache_s=0), alarms=RulesAlarmAdapter(alarms),
                             cases=CaseAdapter(cs), audit=AuditLog(f"sqlite:///{work}/c.db"))
            app = create_app(demo_settings(), stores_, clock=lambda: now)
            with TestClient(app) as c:
                h = bearer(c, "sup")
                body = c.get("/api/v1/statistics/tables", headers=h, params={"days": 7}).json()
                xlsx = c.get("/api/v1/statistics/export", headers=h, params={"days": 7}).content
            assert len(openpyxl.load_workbook(io.BytesIO(xlsx)).sheetnames) == 9
            bodies.append(body)
            app.state.ctx.stores.audit.close()
        ts.close()
        alarms.close()
    assert bodies[0] == bodies[1]
    places = {t["id"]: t for t in bodies[1]["tables"]}["places"]["rows"]
    assert places[0][1:4] == ["灵隐路下穿", "330106001001", 7]
