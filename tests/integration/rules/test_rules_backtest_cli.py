"""``citywatch backtest`` over the ingest store: two rule files side by side."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from contracts.payloads import Status
from contracts.reading import DeviceInfo, Quality, Reading

pytestmark = pytest.mark.integration

T0 = 1_764_547_200.0  # 2025-12-01 00:00 UTC

RULE = """
rules:
  - name: road-water-depth
    kind: threshold
    applies_to: {kinds: [water_gauge]}
    metric: depth
    levels:
      - {severity: minor, raise_at: %(minor)s, hysteresis: 0.02, raise_after_s: 60, clear_after_s: 300}
      - {severity: major, raise_at: %(major)s, hysteresis: 0.03, raise_after_s: 60, clear_after_s: 300}
"""


def test_backtest_compares_two_rule_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store_mod = pytest.importorskip("cloud_ingest.store")
    from citywatch.cli import main
    from cloud_ingest.store.base import StatusUpdate, WriteBatch

    url = f"sqlite:///{tmp_path}/ingest.db"
    store = store_mod.open_store(url)
    devices = [DeviceInfo(f"wl-{i:04d}", "radar", "water_gauge", interval_s=60.0) for i in range(1, 5)]
    readings = []
    for i, d in enumerate(devices):
        for k in range(24 * 60):  # one day at 1 min, one storm per gauge of a different height
            depth = max(0.0, (0.12 + 0.08 * i) * math.sin(math.pi * k / 600.0))
            readings.append(Reading(d.id, "depth", T0 + 60 * k, round(depth, 3), "m", Quality.GOOD))
    birth = StatusUpdate("gw-1", Status("online", "b1", "0.1", devices), T0)
    store.write(WriteBatch(readings=readings, statuses=[birth]))
    store.close()
    a = tmp_path / "a.yaml"
    a.write_text(RULE % {"minor": 0.15, "major": 0.25})
    b = tmp_path / "b.yaml"
    b.write_text(RULE % {"minor": 0.20, "major": 0.35})
    args = ["backtest", "--rules", str(a), "--compare", str(b), "--from", "2025-12-01", "--to", "2025-12-02",
            "--store", url, "--no-progress"]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ra, rb = (out["reports"][k]["rules"]["road-water-depth"] for k in sorted(out["reports"]))
    assert out["readings"] == len(readings)
    # peaks 0.12/0.20/0.28/0.36, two humps a day (the second at 95 %): A raises 3x2, B misses 0.19 (gauge 2)
    assert (ra["raised"], rb["raised"]) == (6, 5)
    assert ra["alarm_time_s"] > rb["alarm_time_s"] > 0
    assert ra["cases_opened"] == ra["raised"]
    assert set(ra["by_severity"]) == {"minor", "major"}
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "road-water-depth" in table and "readings/s" in table
