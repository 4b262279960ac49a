"""``citywatch up`` twice on the same data directory (the embedded broker restarted with existing data).

The second start used to lose uplinks to amqtt's ``dictionary changed size during iteration``
(a client's CONNECT racing another's SUBSCRIBE), and every clean stop logged reconnect warnings
for connections we closed on purpose. Both runs must connect every gateway once, print no
traceback, and stop without a single reconnect/disconnect warning.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.services import free_port

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.e2e
NOISE = re.compile(r"reconnect|disconnected|uplink lost|uplink down|Traceback|RuntimeError")


_tokens: dict[str, str] = {}  # one login per console: polling must not trip the login rate limit


def _open_case(text: str) -> bool:
    """True once the console lists a case: the next start then begins with retained case-open messages."""
    url = re.search(r"console: (http://\S+)", text)
    assert url, text[-3000:]
    base = url.group(1).rstrip("/")
    with httpx.Client(base_url=base, timeout=10) as http:
        if base not in _tokens:
            token = http.post("/api/v1/auth/login", json={"username": "duty", "password": "citywatch-demo"})
            _tokens[base] = token.json()["access_token"]
        auth = {"Authorization": f"Bearer {_tokens[base]}"}
        return bool(http.get("/api/v1/cases", headers=auth).json().get("items"))


def _run_once(data: Path, log_path: Path, *, until_case: bool) -> str:
    port = free_port()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "citywatch.cli", "up", "--data", str(data), "--port", str(port),
             "--speed", "30", "--duration", "240"],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 150
        n_gw = None
        while time.monotonic() < deadline:
            text = log_path.read_text(errors="replace")
            m = re.search(r"simulator: \d+ devices on (\d+) gateways", text)
            n_gw = int(m.group(1)) if m else None
            if n_gw and "Ctrl-C stops" in text and text.count("uplink connected to") >= n_gw and (
                    not until_case or _open_case(text)):
                break
            assert proc.poll() is None, text[-3000:]
            time.sleep(0.5)
        time.sleep(3)  # let births, acks and subscriptions settle: the race window
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    text = log_path.read_text(errors="replace")
    assert rc == 0 and "stopped cleanly" in text, text[-3000:]
    assert n_gw, text[-3000:]
    assert text.count("uplink connected to") == n_gw, text[-5000:]
    # Every warning - tracebacks, lost uplinks, reconnects, an unanswered CONNECT (once a refused
    # link's late clean-up unregistering a reused descriptor: tests/integration/mqttlink), noise at
    # the clean stop - fails the test.
    noise = [line for line in text.splitlines() if NOISE.search(line)]
    assert not noise, "\n".join(noise[:40])
    return text


def test_up_again_on_existing_data_connects_every_uplink_and_stops_quietly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _run_once(data, tmp_path / "up1.log", until_case=True)
    assert any((data / "outbox").iterdir())  # the second run starts on the first run's stores and outboxes
    _run_once(data, tmp_path / "up2.log", until_case=False)
