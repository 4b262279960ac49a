"""Every ``citywatch`` command shown in README.md runs, as written (paths swapped for tmp dirs).

A command added to the README without an exercise here fails ``test_every_readme_command_is_exercised``.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.services import Mosquitto

REPO = Path(__file__).resolve().parents[3]
CLI = [sys.executable, "-m", "citywatch.cli"]
pytestmark = pytest.mark.e2e


def readme_commands() -> list[list[str]]:
    """argv (after ``citywatch``) of each command line in the README's sh blocks."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for raw in block.splitlines():
            line = raw.split("  #")[0].strip()
            if line.startswith(".venv/bin/citywatch "):
                out.append(shlex.split(line)[1:])
    return out


def run(argv: list[str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *argv], cwd=REPO, capture_output=True, text=True, timeout=timeout_s,
                          check=False)


def swap(argv: list[str], subs: dict[str, str]) -> list[str]:
    out = []
    for arg in argv:
        swapped = arg
        for old, new in subs.items():
            swapped = swapped.replace(old, new)
        out.append(swapped)
    return out


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[tuple[dict[str, str], dict[str, object]]]:
    """The README's `citywatch sim` line, running; yields path substitutions and its endpoints."""
    (line,) = [c for c in readme_commands() if c[0] == "sim"]
    gw_dir = tmp_path / "gw"
    argv = [*swap(line, {"/tmp/gw": str(gw_dir)}), "--json"]
    proc = subprocess.Popen([*CLI, *argv], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        endpoints = json.loads(proc.stdout.readline())
        deadline = time.monotonic() + 10
        while not (gw_dir / "gw-small.yaml").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        pty = endpoints["buses"]["rs485-1"]
        yield {"/tmp/gw": str(gw_dir), "/dev/pts/N": pty}, endpoints
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


EXERCISED = {"plan", "agent", "sim", "probe", "scan", "backtest"}


def test_every_readme_command_is_exercised() -> None:
    cmds = readme_commands()
    assert cmds, "no commands found in README.md"
    assert {c[0] for c in cmds} <= EXERCISED


def test_plan_and_agent_check_as_written() -> None:
    for argv in readme_commands():
        if argv[0] == "plan" or (argv[0] == "agent" and "--check" in argv):
            res = run(argv)
            assert res.returncode == 0, res.stdout + res.stderr


def test_probe_and_scan_against_the_simulator(sim: tuple[dict[str, str], dict[str, object]]) -> None:
    subs, _ = sim
    probes = [swap(c, subs) for c in readme_commands() if c[0] in ("probe", "scan")]
    assert len(probes) == 3
    for argv in probes:
        res = run(argv)
        assert res.returncode == 0, f"{argv}: {res.stdout}{res.stderr}"
        if argv[0] == "probe":
            assert "depth" in res.stdout and "CDAB" in res.stdout, res.stdout
        else:
            found = res.stdout + res.stderr
            assert re.search(r"\b1\b", found) and re.search(r"\b2\b", found), found


def test_agent_runs_and_announces_itself(broker: Mosquitto, tmp_path: Path) -> None:
    (argv,) = [c for c in readme_commands() if c[0] == "agent" and "--check" not in c]
    doc = yaml.safe_load((REPO / argv[2]).read_text(encoding="utf-8"))
    doc["mqtt"] = {"url": broker.url}
    doc["outbox"]["path"] = str(tmp_path / "outbox.db")
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")

    got: list[bytes] = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_message = lambda c, u, m: got.append(m.payload)
    sub.connect(broker.host, broker.port)
    sub.subscribe(f"citywatch/v1/gw/{doc['gateway']['id']}/status", qos=1)
    sub.loop_start()
    proc = subprocess.Popen([*CLI, *swap(argv, {argv[2]: str(cfg)})], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not any(b'"online"' in p for p in got) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any(b'"online"' in p for p in got), "the agent never published its birth message"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        sub.loop_stop()
        sub.disconnect()


def test_backtest_as_written(tmp_path: Path) -> None:
    (argv,) = [c for c in readme_commands() if c[0] == "backtest"]
    mine = tmp_path / "my-rules.yaml"
    mine.write_text((REPO / "configs/rules/default.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    store = f"sqlite:///{tmp_path / 'history.db'}"
    from cloud_ingest.store import open_store

    open_store(store).close()  # an empty history: the report must still come out
    res = run([*swap(argv, {"my-rules.yaml": str(mine)}), "--store", store, "--no-progress"])
    assert res.returncode == 0, res.stdout + res.stderr
    header = res.stdout.splitlines()[0]
    assert "A: configs/rules/default.yaml" in header and "B: " in header, res.stdout
    assert "road-water-depth" in res.stdout
    assert "case_bridge.backtest:cases_would_open" in res.stdout
