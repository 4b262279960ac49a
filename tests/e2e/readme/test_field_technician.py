"""docs/field-technician.md's walkthrough runs as written, against the simulator it starts."""

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

from contracts.payloads import decode_telemetry
from tests.support.services import Mosquitto

REPO = Path(__file__).resolve().parents[3]
CLI = [sys.executable, "-m", "citywatch.cli"]
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def doc_commands() -> list[list[str]]:
    text = (REPO / "docs" / "field-technician.md").read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for raw in block.splitlines():
            line = raw.split("  #")[0].strip()
            if line.startswith(".venv/bin/citywatch "):
                out.append(shlex.split(line)[1:])
    return out


def swap(argv: list[str], subs: dict[str, str]) -> list[str]:
    out = []
    for arg in argv:
        for old, new in subs.items():
            arg = arg.replace(old, new)  # noqa: PLW2901 - a substituted copy
        out.append(arg)
    return out


@pytest.fixture
def site_sim(tmp_path: Path) -> Iterator[dict[str, str]]:
    (line,) = [c for c in doc_commands() if c[0] == "sim"]
    argv = [*swap(line, {"/tmp/gw": str(tmp_path / "gw")}), "--json"]
    proc = subprocess.Popen([*CLI, *argv], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        endpoints = json.loads(proc.stdout.readline())
        yield {"/dev/pts/N": endpoints["buses"]["rs485-site"], "/tmp/": str(tmp_path) + "/"}  # /tmp/gw too
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_the_walkthrough_runs_as_written(site_sim: dict[str, str], tmp_path: Path) -> None:
    steps = [swap(c, site_sim) for c in doc_commands() if c[0] not in ("sim", "agent")]
    assert [s[:2] for s in steps] == [["probe", "--serial"], ["profile", "new"], ["profile", "check"],
                                      ["probe", "--serial"]]
    out: list[str] = []
    for argv in steps:
        started = time.monotonic()
        res = subprocess.run([*CLI, *argv], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
        assert res.returncode == 0, f"{argv}: {res.stdout}{res.stderr}"
        assert time.monotonic() - started < 60
        out.append(res.stdout)
    dump, new, check, probe = out
    assert "CDAB: u32" in dump and "f32" in dump and "saved the registers" in dump
    assert json.loads((tmp_path / "acme-dump.json").read_text(encoding="utf-8"))["holding"]
    draft = (tmp_path / "my_gauge.yaml").read_text(encoding="utf-8")
    assert "name: my_gauge" in draft and "wrote" in new
    assert "every poll: 1 read(s)" in check and "read once" in check and "bus time per poll" in check
    assert "distance" in probe and " m  -> distance" in probe and "'RG7-0042'" in probe
    # the draft itself checks clean, so the technician can iterate on it
    res = subprocess.run([*CLI, "profile", "check", str(tmp_path / "my_gauge.yaml")], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 0 and res.stdout.rstrip().endswith("ok"), res.stdout + res.stderr


def test_the_agent_publishes_every_site_device(site_sim: dict[str, str], broker: Mosquitto, tmp_path: Path) -> None:
    """The issue's new user: four vendors' devices the library does not know, 0 datapoints before."""
    (argv,) = [swap(c, site_sim) for c in doc_commands() if c[0] == "agent"]
    written = Path(argv[2])
    deadline = time.monotonic() + 10
    while not written.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    doc = yaml.safe_load(written.read_text(encoding="utf-8"))
    doc["mqtt"] = {"url": broker.url}
    doc["outbox"] = {"path": str(tmp_path / "outbox.db")}
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    seen: dict[str, set[str]] = {}
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_message(_c: object, _u: object, m: mqtt.MQTTMessage) -> None:
        for r in decode_telemetry(m.payload).readings:
            seen.setdefault(r.device, set()).add(r.metric)

    sub.on_message = on_message
    sub.connect(broker.host, broker.port)
    sub.subscribe(f"citywatch/v1/gw/{doc['gateway']['id']}/telemetry", qos=1)
    sub.loop_start()
    proc = subprocess.Popen([*CLI, "agent", "-c", str(cfg)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    want = {"wl-acme-01": {"depth", "distance", "install_height"}, "mh-acme-01": {"tilt", "cover_open"},
            "lamp-acme-01": {"voltage", "relay", "dim_level"}, "wim-acme-01": {"status"},
            "wim-acme-02": {"record_count"}}
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not all(m <= seen.get(d, set()) for d, m in want.items()):
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        sub.loop_stop()
        sub.disconnect()
    for device, metrics in want.items():
        assert metrics <= seen.get(device, set()), (device, seen.get(device))


def test_profile_check_names_file_key_and_value(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    src = (REPO / "configs/sim/site-profiles/acme_gauge.yaml").read_text(encoding="utf-8")
    bad.write_text(src.replace("type: u32, scale: 0.001", "type: u33, scale: 0.001", 1), encoding="utf-8")
    res = subprocess.run([*CLI, "profile", "check", str(bad)], cwd=REPO, capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 1
    assert f"{bad}: fields[0].type" in res.stderr and "'u33'" in res.stderr
