"""Config validation: clear errors naming file, key and value; cross-references."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from contracts.errors import ConfigError
from gateway.config import load_field_config, parse_field_config

ROOT = Path(__file__).resolve().parents[3]

GOOD = """
gateway: {id: gw-1}
buses:
  - {id: b1, type: rtu, serial: /dev/ttyUSB0}
  - {id: t1, type: tcp, host: 127.0.0.1, port: 5020}
devices:
  - {id: wl-1, profile: water_gauge, bus: b1, unit_id: 1, component_id: "3301060103000007", lat: 30.1, lon: 120.2}
  - {id: lamp-1, profile: lamp, bus: t1, unit_id: 1, word_order: DCBA}
"""


def test_example_config_loads() -> None:
    cfg = load_field_config(ROOT / "configs" / "gateway.example.yaml")
    assert cfg.devices
    info = cfg.devices[0].to_device_info()
    assert info.kind == "water_gauge" and info.interval_s == cfg.devices[0].poll_interval_s


def test_good() -> None:
    cfg = parse_field_config(GOOD, "gw.yaml")
    assert cfg.devices_on("t1")[0].to_device_info().kind == "lamp"


@pytest.mark.parametrize(
    ("text", "path", "value"),
    [
        (GOOD.replace("profile: lamp", "profile: lampp"), "devices[1].profile", "lampp"),
        (GOOD.replace('"3301060103000007"', '"33010601"'), "devices[0].component_id", "33010601"),
        (GOOD.replace("unit_id: 1, word", "unit_id: 300, word"), "devices[1].unit_id", 300),
        (GOOD.replace("word_order: DCBA", "word_order: XYZW"), "devices[1].word_order", "XYZW"),
        (GOOD.replace("baud", "x").replace("serial: /dev/ttyUSB0", "serial: /dev/ttyUSB0, baud: 7"),
         "buses[0].baud", 7),
        (GOOD.replace("devices:", "device:"), "device", None),
        (GOOD.replace("lat: 30.1, ", ""), "devices[0]", None),
        (GOOD.replace("bus: t1", "bus: nope"), "", None),
        (GOOD.replace("type: tcp, host: 127.0.0.1", "type: tcp"), "buses[1]", None),
        (GOOD.replace("profile: lamp, bus: t1", "profile: lamp, bus: b1"), "", None),
        (GOOD.replace("unit_id: 1, component", "unit_id: 0, component"), "", None),
        (GOOD.replace("id: wl-1", "id: WL_1"), "devices[0].id", "WL_1"),
    ],
)
def test_bad_config_names_key_and_value(text: str, path: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_field_config(text, "gw.yaml")
    err = info.value
    assert err.source == "gw.yaml"
    assert err.key_path.startswith(path)
    if value is not None:
        assert err.value == value


def test_missing_file() -> None:
    with pytest.raises(ConfigError):
        load_field_config("/nonexistent/gw.yaml")


def test_plan_cli_exit_codes(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "citywatch", "plan", "-c", str(ROOT / "configs/gateway.example.yaml")],
                        check=False, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "utilisation" in ok.stdout
    devs = "\n".join(f"  - {{id: d{i}, profile: lamp, bus: b1, unit_id: {i}, poll_interval_s: 0.5}}"
                     for i in range(1, 21))
    bad = tmp_path / "gw.yaml"
    bad.write_text(f"buses:\n  - {{id: b1, type: rtu, serial: /dev/x, baud: 9600}}\ndevices:\n{devs}\n")
    res = subprocess.run([sys.executable, "-m", "citywatch", "plan", "-c", str(bad)],
                         check=False, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 1
    assert "overbooked" in res.stderr and "b1" in res.stderr
    # importing the gateway CLI must stay light
    imp = subprocess.run([sys.executable, "-c", "import sys, gateway.cli, gateway.budget, gateway.config; "
                          "print(sorted(m for m in ('fastapi', 'psycopg', 'paho') if m in sys.modules))"],
                         check=False, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert imp.stdout.strip() == "[]"
