"""Load generator for the NATS chain: :mod:`citywatch.loadgen` (real Outbox + Uplink per gateway).

Every reading is appended to an on-disk outbox first and deleted only when the cloud's retained
ack watermark covers it, exactly as ``citywatch agent`` does, so the chaos ledger can count the
load like the agents' samples (generated = outbox ledger, lost = generated - stored - pending).
Runs as its own process until SIGTERM; production stops after ``duration_s``, then it keeps
draining the outboxes until told to stop.

``python -m tests.support.nats_loadgen CONFIG_JSON`` with keys: gateways, outbox_dir, mqtt
(MqttSettings), readings_per_s, duration_s, devices_per_gw.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from citywatch.loadgen import run_load
from citywatch.loadplan import make_plan
from contracts.config import MqttSettings


def load_devices(gw: str, n: int) -> list[str]:
    """The device ids the plan gives a water-gauge-only gateway of ``n`` devices."""
    return [f"{gw}-wl{j:03d}" for j in range(n)]


async def run(cfg: dict[str, Any]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    mqtt = MqttSettings.model_validate(cfg["mqtt"])
    plan = make_plan(cfg["gateways"], int(cfg.get("devices_per_gw", 20)), float(cfg["readings_per_s"]),
                     mix={"water_gauge": 1.0})
    await run_load(plan, mqtt, Path(cfg["outbox_dir"]), duration_s=float(cfg["duration_s"]), stop=stop,
                   hold_until_stopped=True)


def main(argv: list[str]) -> int:
    asyncio.run(run(json.loads(argv[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
