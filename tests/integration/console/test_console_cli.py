"""``citywatch console``: the app built from a config file over real stores; the operator helpers."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from console.cli import args_console, build, cmd_console
from tests.support.console_demo import PASSWORD, _demo_hash

pytestmark = pytest.mark.integration


def _config(tmp: Path) -> Path:
    cfg = tmp / "cloud.yaml"
    cfg.write_text(f"""
mqtt:
  url: mqtt://127.0.0.1:1
console:
  secret_key: {"k" * 40}
  production: true
  live_feed: false
  ingest_store_url: sqlite:///{tmp}/ts.db
  alarm_store_url: sqlite:///{tmp}/rules.db
  case_store_url: sqlite:///{tmp}/cases.db
  audit_store_url: sqlite:///{tmp}/console.db
  users:
    - {{username: duty, role: duty_officer, password_hash: "{_demo_hash()}"}}
""", encoding="utf-8")
    return cfg


def test_build_from_config(tmp_path: Path) -> None:
    app, settings = build(str(_config(tmp_path)))
    assert settings.production
    with TestClient(app) as c:  # type: ignore[arg-type]
        assert c.get("/api/openapi.json").status_code == 401
        r = c.post("/api/v1/auth/login", json={"username": "duty", "password": PASSWORD})
        h = {"Authorization": f"Bearer {r.json()['access_token']}"}
        assert c.get("/api/v1/devices", headers=h).json() == {"total": 0, "items": []}
        assert c.get("/api/v1/alarms", headers=h).json()["total"] == 0
        assert c.get("/open311/v2/services.json").status_code == 200
        # the reload endpoint re-reads the same file
        assert c.post("/api/v1/admin/reload", headers=h).status_code == 403


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    from contracts.errors import ConfigError

    cfg = tmp_path / "bad.yaml"
    cfg.write_text("console:\n  secret_key: short\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="secret_key"):
        build(str(cfg))


def test_new_api_key(capsys: pytest.CaptureFixture[str]) -> None:
    from console.auth import hash_api_key

    parser = argparse.ArgumentParser()
    args_console(parser)
    assert cmd_console(parser.parse_args(["--new-api-key", "hotline"])) == 0
    out = capsys.readouterr().out.splitlines()
    key = out[0].split(": ", 1)[1]
    assert hash_api_key(key) in out[1]


def test_citywatch_console_serves_and_stops(tmp_path: Path, broker: object) -> None:
    """The real command: ``citywatch console -c ...`` in its own process, over a broker, then SIGTERM."""
    import os
    import signal
    import subprocess
    import sys

    import httpx

    from tests.support.services import free_port, wait_port

    cfg = _config(tmp_path)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("mqtt://127.0.0.1:1", broker.url)  # type: ignore[attr-defined]
                   .replace("live_feed: false", "live_feed: true"), encoding="utf-8")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "citywatch", "console", "-c", str(cfg), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=Path(__file__).resolve().parents[3], env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_port("127.0.0.1", port, 20)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["ok"] is True
        r = httpx.post(f"http://127.0.0.1:{port}/api/v1/auth/login", json={"username": "duty", "password": PASSWORD})
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    # uvicorn shuts down cleanly, then re-raises the signal it caught (exit status -SIGTERM)
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert "Application shutdown complete" in out
    assert "console live feed: connected" in out
