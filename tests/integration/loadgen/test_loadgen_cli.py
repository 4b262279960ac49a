"""``citywatch loadgen`` against a real Mosquitto: resend until the ack watermark covers, bounded stop."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.acknowledger import Acknowledger
from tests.support.services import Mosquitto

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
GWS = ("gw-lg-0001", "gw-lg-0002")


def _loadgen(broker: Mosquitto, tmp: Path, duration_s: float, drain_s: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "citywatch", "loadgen", "--gateways", "2", "--devices-per-gateway", "10",
         "--rate", "40", "--duration-s", str(duration_s), "--drain-timeout-s", str(drain_s),
         "--storm-fraction", "0.5", "--broker", broker.url, "--outbox-dir", str(tmp / "outbox"),
         "--gateway-prefix", "gw-lg-", "--ack-timeout-s", "2", "--json"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish(proc: subprocess.Popen[str], timeout_s: float) -> tuple[int, dict[str, Any], dict[str, Any], float]:
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=timeout_s)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    plan = next(x["plan"] for x in lines if "plan" in x)
    report = next((x["report"] for x in lines if "report" in x), None)
    assert report is not None, err[-3000:]
    return proc.returncode, plan, report, time.monotonic() - t0


def test_loadgen_resends_dropped_batches_until_acked_and_stops_by_itself(broker: Mosquitto, tmp_path: Path) -> None:
    ackers = [Acknowledger(broker.host, broker.port, gw, client_id=f"acker-{gw}") for gw in GWS]
    try:
        ackers[0].drop_next = 2  # the first two batches of one gateway vanish: only a resend gets them acked
        t0 = time.monotonic()
        rc, plan, report, _ = _finish(_loadgen(broker, tmp_path, duration_s=3.0, drain_s=20.0), timeout_s=40)
        elapsed = time.monotonic() - t0
        assert rc == 0, report
        assert plan["devices"] == 20 and plan["storm_devices"] == plan["kinds"]["water_gauge"] // 2
        assert report["drained"] and report["pending"] == 0
        assert elapsed < 3.0 + 20.0 + 10.0  # bounded: production, then the drain, then it exits
        assert len(ackers[0].dropped_batches) == 2
        for boot, seq in ackers[0].dropped_batches:
            assert seq in ackers[0].seqs[boot]  # the dropped batches came again with their (boot, seq)
        stored = set().union(*(a.stored() for a in ackers))
        assert len(stored) == report["generated"] > 0  # every generated reading reached the cloud
        assert all(a.status and a.status[0].devices for a in ackers)  # births carry the device lists
    finally:
        for a in ackers:
            a.close()


def test_loadgen_gives_up_after_the_drain_timeout_when_nothing_is_acked(broker: Mosquitto, tmp_path: Path) -> None:
    ackers = [Acknowledger(broker.host, broker.port, gw, client_id=f"acker-{gw}") for gw in GWS]
    try:
        for a in ackers:
            a.paused = True  # the ingester is down: nothing is ever acked
        rc, _plan, report, _ = _finish(_loadgen(broker, tmp_path, duration_s=1.5, drain_s=1.5), timeout_s=30)
        assert rc == 1
        assert not report["drained"] and report["pending"] == report["generated"] > 0
    finally:
        for a in ackers:
            a.close()
