"""Role × route × foreign-object matrix (OWASP API1/API5): every cell is an exact status.

``own`` is a case of unit A (lingyin-street, handler-a's unit), ``foreign`` a case of unit B
(hubin-street). A handler of unit A never sees or changes a case of unit B: reads and writes
of it are 404, exactly as for a case that does not exist. One fresh environment per role so
writes in one row cannot change another.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.console_demo import PASSWORD, build_demo

pytestmark = pytest.mark.integration

# (method, path, body) -> {role: expected status}; {case} is filled with the own or foreign case
ROUTES: list[tuple[str, str, dict[str, object] | None, dict[str, tuple[int, int]]]] = [
    # expected (own object, foreign object) per role; for routes without an object both are equal
    ("GET", "/api/v1/auth/me", None,
     {"duty": (200, 200), "handler-a": (200, 200), "sup": (200, 200), "admin": (200, 200)}),
    ("GET", "/api/v1/devices", None,
     {"duty": (200, 200), "handler-a": (200, 200), "sup": (200, 200), "admin": (200, 200)}),
    ("GET", "/api/v1/devices/wl-0000/readings", None,
     {"duty": (200, 200), "handler-a": (200, 200), "sup": (200, 200), "admin": (200, 200)}),
    ("GET", "/api/v1/overview", None,
     {"duty": (200, 200), "handler-a": (200, 200), "sup": (200, 200), "admin": (200, 200)}),
    ("GET", "/api/v1/alarms", None,
     {"duty": (200, 200), "handler-a": (200, 200), "sup": (200, 200), "admin": (200, 200)}),
    ("POST", "/api/v1/alarms/{alarm}/ack", {},
     {"duty": (202, 202), "handler-a": (403, 403), "sup": (403, 403), "admin": (403, 403)}),
    ("GET", "/api/v1/cases?unit={unit}", None,
     {"duty": (200, 200), "handler-a": (200, 403), "sup": (200, 200), "admin": (403, 403)}),
    ("GET", "/api/v1/cases/{case}", None,
     {"duty": (200, 200), "handler-a": (200, 404), "sup": (200, 200), "admin": (403, 403)}),
    ("POST", "/api/v1/cases/{case}/actions", {"action": "accept"},
     {"duty": (403, 403), "handler-a": (200, 404), "sup": (409, 409), "admin": (403, 403)}),
    ("POST", "/api/v1/cases/{case}/actions", {"action": "park", "note": "seasonal"},
     {"duty": (403, 403), "handler-a": (409, 404), "sup": (200, 200), "admin": (403, 403)}),
    # a photo upload: access first (403 no cases:act, 404 another unit's case), then the body (400: not an image)
    ("POST", "/api/v1/cases/{case}/media?stage=after", {},
     {"duty": (403, 403), "handler-a": (400, 404), "sup": (400, 400), "admin": (403, 403)}),
    # a photo read: only through a readable case (test_console_evidence_pg reads real photos)
    ("GET", "/api/v1/cases/{case}/media/{{media_id}}", None,
     {"duty": (404, 404), "handler-a": (404, 404), "sup": (404, 404), "admin": (403, 403)}),
    ("GET", "/api/v1/statistics", None,
     {"duty": (200, 200), "handler-a": (403, 403), "sup": (200, 200), "admin": (200, 200)}),
    ("GET", "/api/v1/admin/users", None,
     {"duty": (403, 403), "handler-a": (403, 403), "sup": (403, 403), "admin": (200, 200)}),
    ("POST", "/api/v1/admin/reload", None,
     {"duty": (403, 403), "handler-a": (403, 403), "sup": (403, 403), "admin": (409, 409)}),
    ("GET", "/api/v1/audit", None,
     {"duty": (403, 403), "handler-a": (403, 403), "sup": (200, 200), "admin": (200, 200)}),
    ("GET", "/cases/{case}", None,
     {"duty": (200, 200), "handler-a": (200, 404), "sup": (200, 200), "admin": (403, 403)}),
    ("GET", "/cases", None,
     {"duty": (200, 200), "handler-a": (200, 200), "sup": (200, 200), "admin": (403, 403)}),
    ("GET", "/overview", None,
     {"duty": (200, 200), "handler-a": (200, 200), "sup": (200, 200), "admin": (200, 200)}),
    ("GET", "/stats", None,
     {"duty": (200, 200), "handler-a": (403, 403), "sup": (200, 200), "admin": (200, 200)}),
    ("GET", "/devices/wl-0000", None,
     {"duty": (200, 200), "handler-a": (200, 200), "sup": (200, 200), "admin": (200, 200)}),
    ("GET", "/api/v1/lamps", None,
     {"duty": (200, 200), "handler-a": (200, 200), "sup": (200, 200), "admin": (200, 200)}),
    # permitted roles get 503 here (this environment has no broker); test_console_lamps sends for real
    ("POST", "/api/v1/lamps/commands", {"action": "on", "device": "lamp-0002", "confirm": True},
     {"duty": (503, 503), "handler-a": (403, 403), "sup": (503, 503), "admin": (403, 403)}),
    ("GET", "/lamps", None,
     {"duty": (200, 200), "handler-a": (200, 200), "sup": (200, 200), "admin": (200, 200)}),
    ("GET", "/api/v1/statistics/tables", None,
     {"duty": (200, 200), "handler-a": (403, 403), "sup": (200, 200), "admin": (200, 200)}),
    ("GET", "/api/v1/statistics/places", None,
     {"duty": (200, 200), "handler-a": (403, 403), "sup": (200, 200), "admin": (200, 200)}),
    ("GET", "/api/v1/statistics/heat?days=30", None,
     {"duty": (200, 200), "handler-a": (403, 403), "sup": (200, 200), "admin": (200, 200)}),
    ("GET", "/api/v1/statistics/export?table=by_unit&format=csv", None,
     {"duty": (200, 200), "handler-a": (403, 403), "sup": (200, 200), "admin": (200, 200)}),
    ("GET", "/api/v1/map/config", None,
     {"duty": (200, 200), "handler-a": (200, 200), "sup": (200, 200), "admin": (200, 200)}),
    ("GET", "/api/v1/map/district", None,
     {"duty": (200, 200), "handler-a": (200, 200), "sup": (200, 200), "admin": (200, 200)}),
    ("GET", "/api/v1/map/devices", None,
     {"duty": (200, 200), "handler-a": (200, 200), "sup": (200, 200), "admin": (200, 200)}),
    ("GET", "/api/v1/map/devices/wl-0000", None,
     {"duty": (200, 200), "handler-a": (200, 200), "sup": (200, 200), "admin": (200, 200)}),
    ("GET", "/api/v1/board", None,
     {"duty": (200, 200), "handler-a": (200, 200), "sup": (200, 200), "admin": (200, 200)}),
    ("POST", "/api/v1/alarms/{alarm}/clear", {"note": "sensor washed away"},  # a flood alarm: its sensor clears it
     {"duty": (409, 409), "handler-a": (403, 403), "sup": (403, 403), "admin": (403, 403)}),
    ("GET", "/api/v1/cockpit", None,
     {"duty": (200, 200), "handler-a": (200, 200), "sup": (200, 200), "admin": (200, 200)}),
    ("GET", "/cockpit", None,
     {"duty": (200, 200), "handler-a": (200, 200), "sup": (200, 200), "admin": (200, 200)}),
]


def _client(tmp: Path, role: str, opened: list[Any]) -> tuple[TestClient, dict[str, str], dict[str, object]]:
    env = build_demo(str(tmp), now=time.time())
    opened.append(env)
    c = TestClient(env.app)
    tok = c.post("/api/v1/auth/login", json={"username": role, "password": PASSWORD}).json()["access_token"]
    ids: dict[str, object] = {"own": env.demo.case_ids["lingyin-street"][0],
                              "foreign": env.demo.case_ids["hubin-street"][0], "alarm": env.demo.alarm_ids[0]}
    return c, {"Authorization": f"Bearer {tok}"}, ids


@pytest.mark.parametrize("role", ["duty", "handler-a", "sup", "admin"])
def test_matrix(role: str, tmp_path: Path) -> None:
    """Reads share one environment; every write gets a fresh one (seeded state, no order effects)."""
    mismatches = []
    opened: list[Any] = []
    shared = _client(tmp_path / "reads", role, opened)
    n = 0
    for which in ("own", "foreign"):
        unit = "lingyin-street" if which == "own" else "hubin-street"
        for method, path, body, expected in ROUTES:
            if method == "POST":
                n += 1
                c, h, ids = _client(tmp_path / f"w{n}", role, opened)
            else:
                c, h, ids = shared
            url = path.format(case=ids[which], unit=unit, alarm=ids["alarm"])
            want = expected[role][0 if which == "own" else 1]
            r = c.request(method, url, headers=h, json=body)
            if r.status_code != want:
                mismatches.append(f"{role} {which} {method} {url}: {r.status_code} != {want} {r.text[:120]}")
    for env in opened:
        env.close()
    assert not mismatches, "\n".join(mismatches)


def test_every_api_route_is_in_the_matrix() -> None:
    from console import api, lamps, onemap, stats

    covered = {p.split("?")[0].replace("{alarm}", "{alarm_id}").replace("{case}", "{case_id}")
               .replace("wl-0000", "{device_id}").replace("{{media_id}}", "{media_id}") for _m, p, _b2, _e in ROUTES}
    routes = {r.path for router in (api.router, lamps.router, onemap.router, stats.router)
              for r in router.routes}  # type: ignore[attr-defined]
    missing = routes - covered - {"/api/v1/auth/login", "/api/v1/live", "/api/v1/categories", "/api/v1/units",
                                  "/api/v1/alarms/{alarm_id}", "/api/v1/devices/{device_id}"}
    assert not missing, missing
