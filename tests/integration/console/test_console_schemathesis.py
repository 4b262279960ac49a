"""Schema fuzzing (schemathesis) against the generated OpenAPI spec, with a token of each role: no 5xx.

Bounded: a few examples per operation and role, so the whole file runs in seconds. The SSE
stream is excluded (it never ends by design; tests/integration/console/test_console_live.py
covers it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from tests.support.console_demo import DEMO_USERS, PASSWORD, build_demo, demo_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def fuzz_env(tmp_path: Path) -> Iterator[Any]:
    # generous limits: the fuzzer is not an attacker, and 429s would hide the handlers from it
    settings_ = demo_settings(write_rate={"per_minute": 1e6, "burst": 100000},
                              login_rate={"per_minute": 1e6, "burst": 100000})
    env = build_demo(str(tmp_path), now=time.time(), settings=settings_)
    yield env
    env.close()


@pytest.fixture
def role_headers(fuzz_env: Any) -> dict[str, dict[str, str]]:
    out = {}
    with TestClient(fuzz_env.app) as c:
        for user, _role, _unit in DEMO_USERS:
            tok = c.post("/api/v1/auth/login", json={"username": user, "password": PASSWORD}).json()["access_token"]
            out[user] = {"Authorization": f"Bearer {tok}"}
    return out


def test_no_server_errors(fuzz_env: Any, role_headers: dict[str, dict[str, str]]) -> None:
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", fuzz_env.app)
    failures: list[str] = []
    ops = 0
    calls = [0]
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path == "/api/v1/live":
            continue
        ops += 1

        @given(case=op.as_strategy())
        @settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case: Any) -> None:
            for user, headers in [*role_headers.items(), ("anonymous", {})]:
                response = case.call(headers=headers)
                calls[0] += 1
                if response.status_code >= 500:
                    failures.append(f"{user}: {case.method} {case.formatted_path} {case.query} -> "
                                    f"{response.status_code} {response.text[:200]}")

        run()
    assert ops >= 20 and calls[0] >= ops * 5, (ops, calls)
    assert not failures, "\n".join(failures[:20])
