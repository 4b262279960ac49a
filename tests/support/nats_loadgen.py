"""Load generator with the edge's own discipline: synthetic gateways, each a real Outbox + Uplink.

Every reading is appended to an on-disk outbox first and deleted only when the cloud's retained
ack watermark covers it, exactly as ``citywatch agent`` does, so the chaos ledger can count the
load like the agents' samples (generated = outbox ledger, lost = generated - stored - pending).
Runs as its own process until SIGTERM; production stops after ``duration_s``.

``python -m tests.support.nats_loadgen CONFIG_JSON`` with keys: gateways, outbox_dir, mqtt
(MqttSettings), readings_per_s, duration_s, devices_per_gw.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from contracts.config import MqttSettings
from contracts.payloads import Status
from contracts.reading import DeviceInfo, Reading
from edge_agent.agent import new_boot_id
from edge_agent.config import PublishConfig
from edge_agent.outbox import Outbox
from edge_agent.uplink import Uplink


def load_devices(gw: str, n: int) -> list[str]:
    return [f"{gw}-wl{j:03d}" for j in range(n)]


async def run(cfg: dict[str, Any]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    mqtt = MqttSettings.model_validate(cfg["mqtt"])
    publish = PublishConfig(linger_s=0.2, ack_timeout_s=5.0, reconnect_min_s=0.2, reconnect_max_s=2.0,
                            connect_timeout_s=3.0, protocol="3.1.1")
    gws: list[str] = cfg["gateways"]
    n_dev = int(cfg.get("devices_per_gw", 20))
    boxes: dict[str, tuple[Outbox, Uplink]] = {}
    for gw in gws:
        boot = new_boot_id()
        box = Outbox(Path(cfg["outbox_dir"]) / f"{gw}.db", 64 * 1024 * 1024, boot)
        devs = [DeviceInfo(d, "water_gauge", "water_gauge", grid="330106001001", interval_s=1.0)
                for d in load_devices(gw, n_dev)]

        def status(b: str = boot, d: list[DeviceInfo] = devs) -> Status:
            return Status("online", b, "loadgen", d, {})

        gw_mqtt = mqtt.model_copy(update={"client_id": f"citywatch-{gw}"})
        boxes[gw] = (box, Uplink(gw, boot, gw_mqtt, publish, box, status=status, status_interval_s=30.0))
    period_s = n_dev * len(gws) / float(cfg["readings_per_s"])  # one sample of every device per period
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(up.run()) for _box, up in boxes.values()]
        t_end = time.monotonic() + float(cfg["duration_s"])
        tick = 0
        while not stop.is_set() and time.monotonic() < t_end:
            ts = round(time.time(), 3)
            for gw, (box, up) in boxes.items():
                box.append([Reading(d, "depth", ts, 0.02 + (tick % 7) * 0.001, "m") for d in load_devices(gw, n_dev)])
                up.notify_appended()
            tick += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period_s)
        await stop.wait()  # keep draining the outboxes until told to stop
        for t in tasks:
            t.cancel()
    for box, _up in boxes.values():
        box.close()


def main(argv: list[str]) -> int:
    asyncio.run(run(json.loads(argv[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
