"""Console test environment: real SQLite stores in a temp dir, seeded, and a TestClient."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.support.console_demo import DEMO_API_KEY, PASSWORD, DemoEnv, build_demo


@pytest.fixture
def env(tmp_path: Path) -> Iterator[DemoEnv]:
    e = build_demo(str(tmp_path), now=time.time())
    yield e
    e.close()


@pytest.fixture
def client(env: DemoEnv) -> Iterator[TestClient]:
    with TestClient(env.app) as c:
        yield c


def bearer(client: TestClient, username: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture
def as_user(client: TestClient) -> Callable[[str], dict[str, str]]:
    return lambda username: bearer(client, username)


API_KEY = DEMO_API_KEY
