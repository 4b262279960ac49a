"""The generator's in-memory outboxes against a real Mosquitto: the same resend-until-acked discipline."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from citywatch.loadbox import LoadUplink, MemOutbox
from citywatch.loadplan import chunks_at, make_plan
from contracts import payloads
from contracts.config import MqttSettings
from edge_agent.config import PublishConfig
from tests.support.acknowledger import Acknowledger
from tests.support.services import Mosquitto

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
GW = "gw-lm-0001"


async def _wait_until(pred: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return bool(pred())  # type: ignore[operator]


async def test_load_uplink_resends_until_the_watermark_covers_and_the_ledger_is_exact(broker: Mosquitto) -> None:
    plan = make_plan([GW], 30, 20.0, mix={"water_gauge": 1.0}, seed=5)
    box = MemOutbox(1 << 24, "bootmem00001")
    generated = 0
    for tick in range(40):
        chunks, n = chunks_at(plan, plan.gateways[0], tick, 1_764_057_600.0 + tick)
        box.append_chunks(chunks)
        generated += n
    acker = Acknowledger(broker.host, broker.port, GW, client_id="acker-lm")
    try:
        acker.drop_next = 2  # two batches vanish after the broker took them: only resends get them acked
        cfg = PublishConfig(batch_max_readings=30, linger_s=0.05, ack_timeout_s=1.0, reconnect_min_s=0.1,
                            reconnect_max_s=0.5, protocol="3.1.1")
        up = LoadUplink(GW, box.boot, MqttSettings(url=broker.url), cfg, box,
                        status=lambda: payloads.Status("online", box.boot, "test", [], {}))
        task = asyncio.create_task(up.run())
        try:
            assert await _wait_until(lambda: box.ledger().telemetry.present == 0, 20)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert len(acker.dropped_batches) == 2 and up.resent_batches >= 2
        for boot, seq in acker.dropped_batches:
            assert seq in acker.seqs[boot]  # resent with their own (boot, seq)
        led = box.ledger().telemetry
        assert (led.appended, led.acked, led.dropped, led.present) == (generated, generated, 0, 0)
        assert len(acker.stored()) == generated  # every reading reached the cloud once as an identity
        assert acker.watermark == {box.boot: box.last_seq}
    finally:
        acker.close()


def test_cli_without_outbox_dir_keeps_outboxes_in_memory_and_drains(broker: Mosquitto) -> None:
    gws = ("gw-lm-0001", "gw-lm-0002")
    ackers = [Acknowledger(broker.host, broker.port, gw, client_id=f"acker-{gw}") for gw in gws]
    try:
        ackers[1].drop_next = 2
        proc = subprocess.run(
            [sys.executable, "-m", "citywatch", "loadgen", "--gateways", "2", "--devices-per-gateway", "10",
             "--rate", "40", "--duration-s", "3", "--drain-timeout-s", "20", "--storm-fraction", "0.5",
             "--broker", broker.url, "--gateway-prefix", "gw-lm-", "--ack-timeout-s", "2", "--json"],
            cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        )
        lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        report = next((x["report"] for x in lines if "report" in x), None)
        assert report is not None, proc.stderr[-3000:]
        assert proc.returncode == 0, report
        assert report["drained"] and report["pending"] == 0 and report["cpu_s"] > 0
        assert len(ackers[1].dropped_batches) == 2
        stored = set().union(*(a.stored() for a in ackers))
        assert len(stored) == report["generated"] > 0
        assert all(a.status and a.status[0].devices for a in ackers)
    finally:
        for a in ackers:
            a.close()
