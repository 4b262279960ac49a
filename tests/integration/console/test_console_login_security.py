"""Login limits and log-out against the real app and stores (and a real uvicorn, as `citywatch up` serves it)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from console.cli import server_config
from console.context import SESSION_COOKIE
from tests.support.console_demo import PASSWORD, DemoEnv, build_demo, demo_settings
from tests.support.services import free_port

pytestmark = pytest.mark.integration


def _login(c: TestClient, user: str, password: str, xff: str | None = None) -> int:
    headers = {"X-Forwarded-For": xff} if xff else {}
    return c.post("/api/v1/auth/login", json={"username": user, "password": password}, headers=headers).status_code


def test_forwarded_for_does_not_bypass_the_limit(client: TestClient) -> None:
    codes = [_login(client, f"nobody{i}", "guess", xff=f"203.0.113.{i}") for i in range(8)]
    assert codes[:5] == [401] * 5 and codes[-1] == 429


def test_trusted_proxy_forwarded_for_is_believed(tmp_path: Path) -> None:
    frozen = time.time()  # the buckets must not refill while 25 argon2 checks run on a loaded box
    env = build_demo(str(tmp_path), now=frozen, settings=demo_settings(trusted_proxies=["10.0.0.0/24"]),
                     clock=lambda: frozen)
    try:
        with TestClient(env.app, client=("10.0.0.5", 40000)) as c:
            # five clients behind the proxy, one attempt each beyond the burst of one address: all heard
            for i in range(5):
                assert [_login(c, "sup", "guess", xff=f"203.0.113.{i}") for _ in range(5)] == [401] * 5
            # a forged left-hand hop does not give a fresh bucket: the proxy's right-hand entry counts
            assert _login(c, "sup", "guess", xff="1.1.1.1, 203.0.113.0") == 429
            assert _login(c, "duty", PASSWORD, xff="203.0.113.77") == 200
        audit = env.app.state.ctx.stores.audit.entries("user:duty")
        assert audit[0].detail["ip"] == "203.0.113.77"
    finally:
        env.close()


def test_guessing_elsewhere_never_locks_the_owner_out(tmp_path: Path) -> None:
    """Policy (docs/security.md): per (account, address) exponential backoff, capped, reset on success."""
    clock = [1_800_000_000.0]
    settings = demo_settings(trusted_proxies=["10.0.0.0/24"], login_rate={"per_minute": 600, "burst": 1000},
                             login_backoff={"free_failures": 5, "base_s": 2.0, "max_s": 60.0})
    env = build_demo(str(tmp_path), now=time.time(), settings=settings, clock=lambda: clock[0])
    try:
        with TestClient(env.app, client=("10.0.0.5", 40000)) as c:
            attacker, owner = "198.51.100.66", "203.0.113.10"
            codes = [_login(c, "sup", "guess", xff=attacker) for _ in range(7)]
            assert codes == [401] * 6 + [429]
            r = c.post("/api/v1/auth/login", json={"username": "sup", "password": PASSWORD},
                       headers={"X-Forwarded-For": attacker})
            assert r.status_code == 429 and int(r.headers["retry-after"]) == 2  # even the right password waits
            assert _login(c, "sup", PASSWORD, xff=owner) == 200  # the owner elsewhere: not locked out
            for _ in range(30):  # the attacker keeps going, waiting out each delay
                clock[0] += 61.0
                assert _login(c, "sup", "guess", xff=attacker) == 401
                assert _login(c, "sup", "guess", xff=attacker) == 429
            r = c.post("/api/v1/auth/login", json={"username": "sup", "password": "guess"},
                       headers={"X-Forwarded-For": attacker})
            assert int(r.headers["retry-after"]) <= 60  # capped
            clock[0] += 60.0
            assert _login(c, "sup", PASSWORD, xff=attacker) == 200  # the owner at the attacker's address, later
            assert _login(c, "sup", "typo", xff=attacker) == 401  # success reset the count: no wait
            assert _login(c, "sup", PASSWORD, xff=attacker) == 200
        results = [e.result for e in env.app.state.ctx.stores.audit.entries("user:sup", limit=200)]
        assert 429 in results and 401 in results
    finally:
        env.close()


def test_logout_is_a_post_with_csrf(env: DemoEnv, client: TestClient) -> None:
    out = client.post("/api/v1/auth/login", json={"username": "duty", "password": PASSWORD}).json()
    assert client.cookies.get(SESSION_COOKIE)
    assert client.get("/logout", follow_redirects=False).status_code == 405
    assert client.post("/logout", data={}, follow_redirects=False).status_code == 403  # a cross-site form
    assert client.post("/logout", data={"csrf_token": "x" * 24}, follow_redirects=False).status_code == 403
    assert client.get("/api/v1/auth/me").status_code == 200  # still logged in
    page = client.get("/overview", headers={"Accept": "text/html"}).text
    assert 'action="/logout"' in page and out["csrf_token"] in page
    r = client.post("/logout", data={"csrf_token": out["csrf_token"]}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert SESSION_COOKIE in r.headers["set-cookie"] and "Max-Age=0" in r.headers["set-cookie"]
    client.cookies.clear()
    assert client.get("/api/v1/auth/me").status_code == 401
    assert env.app.state.ctx.stores.audit.entries("user:duty")[0].action == "logout"
    # no session: nothing to protect, back to the login page
    assert client.post("/logout", follow_redirects=False).status_code == 303


async def test_served_like_citywatch_up_forwarded_for_is_ignored(tmp_path: Path) -> None:
    """uvicorn's own default would believe X-Forwarded-For from 127.0.0.1: the console's server config does not."""
    env = build_demo(str(tmp_path), now=time.time())
    port = free_port()
    server = uvicorn.Server(server_config(env.app, "127.0.0.1", port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.05)
        assert server.started
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            codes = []
            for i in range(8):
                r = await c.post("/api/v1/auth/login", json={"username": "sup", "password": "guess"},
                                 headers={"X-Forwarded-For": f"203.0.113.{i}"})
                codes.append(r.status_code)
        assert codes[:5] == [401] * 5 and codes[-1] == 429
        assert {e.detail["ip"] for e in env.app.state.ctx.stores.audit.entries("user:sup")} == {"127.0.0.1"}
    finally:
        server.should_exit = True
        await task
        env.close()
