"""``citywatch up`` (what ``make up`` runs): the whole district in one process, through its console,
on the embedded SQLite stores and with ``--db postgresql://...``.

Starts the real command on a compressed storm, then, as a newcomer would, logs in to the console
it printed and watches readings, alarms and auto-raised cases arrive; Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.services import free_port, pg_database

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.e2e


def _wait(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_up_runs_a_district_end_to_end(tmp_path: Path, backend: str) -> None:
    with contextlib.ExitStack() as stack:
        db = ["--db", stack.enter_context(pg_database())] if backend == "postgresql" else []
        _run_district(tmp_path, db)


def _run_district(tmp_path: Path, db_args: list[str]) -> None:
    port = free_port()
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "citywatch.cli", "up", "--data", str(tmp_path / "data"), "--port", str(port),
             "--speed", "30", "--duration", "240", *db_args],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        out = _wait(lambda: (t := log_path.read_text(errors="replace")) and "Ctrl-C stops" in t and t, 60,
                    "the start-up banner")
        url = re.search(r"console: (http://\S+)", out)
        assert url, out
        assert "duty" in out and "citywatch-demo" in out  # demo logins are printed
        base = url.group(1).rstrip("/")
        with httpx.Client(base_url=base, timeout=10) as http:
            token = http.post("/api/v1/auth/login", json={"username": "duty", "password": "citywatch-demo"})
            assert token.status_code == 200, token.text
            auth = {"Authorization": f"Bearer {token.json()['access_token']}"}

            # every kind, not just 80 births: the gateways connect in parallel and a late one (CI once
            # had an agent whose first CONNACK was lost) must not turn the count into a kind check too early
            kinds = {"water_gauge", "manhole", "lamp", "wim"}
            devices = _wait(lambda: (r := http.get("/api/v1/devices?limit=200", headers=auth).json())
                            and r["total"] >= 80 and {d["kind"] for d in r["items"]} >= kinds and r, 60,
                            "the demo district's devices of every kind (birth messages)")
            assert {d["kind"] for d in devices["items"]} >= {"water_gauge", "manhole", "lamp", "wim"}
            _wait(lambda: any(d.get("latest") for d in http.get("/api/v1/devices?limit=200",
                                                                headers=auth).json()["items"]),
                  60, "stored readings")
            _wait(lambda: http.get("/api/v1/alarms", headers=auth).json().get("items"), 90, "a live alarm")
            cases = _wait(lambda: http.get("/api/v1/cases", headers=auth).json().get("items"), 90,
                          "an auto-raised case")
            assert all(c["unit"] for c in cases)
            assert http.get("/overview", headers=auth).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    text = log_path.read_text(errors="replace")
    assert rc == 0, text[-3000:]
    assert "stopped cleanly" in text, text[-3000:]
    assert "Traceback" not in text, text[text.index("Traceback") - 200:][:3000]
