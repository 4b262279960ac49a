"""The whole agent (pollers on the simulator, outbox, uplink) against a real Mosquitto.

Unplugged serial port + dead slave while publishing: the healthy devices keep publishing;
commands get results (errors included); the ledger balances.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts import payloads, topics
from edge_agent.agent import Agent
from edge_agent.config import parse_agent_config
from firmware_sim.config import SimConfig
from firmware_sim.gwconfig import gateway_document
from firmware_sim.server import SimServer
from tests.support.acknowledger import Acknowledger, LedgerLine
from tests.support.services import Mosquitto

pytestmark = pytest.mark.integration

GW = "gw-edge-t1"

SIM = {
    "seed": 7,
    "clock": {"speed": 1.0},
    "buses": [
        {"id": "tcp-a", "gateway": GW, "transport": "tcp"},
        {"id": "rtu-a", "gateway": GW, "transport": "rtu", "baudrate": 19200},
    ],
    "devices": [
        {"id": "wl-0001", "profile": "water_gauge", "bus": "tcp-a", "unit": 1, "interval_s": 0.2,
         "scenario": {"role": "water_gauge", "peak_m": 0.3}},
        {"id": "lamp-0001", "profile": "lamp", "bus": "tcp-a", "unit": 2, "interval_s": 0.3, "circuit": "c-1",
         "scenario": {"role": "lamp", "schedule": "always_on"}},
        {"id": "mh-0001", "profile": "manhole", "bus": "tcp-a", "unit": 3, "interval_s": 0.2,
         "scenario": {"role": "manhole"}},
        {"id": "wl-0002", "profile": "water_gauge", "bus": "rtu-a", "unit": 1, "interval_s": 0.2,
         "scenario": {"role": "water_gauge", "peak_m": 0.1}},
    ],
}


def agent_doc(sim: SimServer, broker: Mosquitto, outbox: Path) -> dict[str, Any]:
    return gateway_document(
        sim.config,
        GW,
        sim.bus_endpoints,
        extra={
            "mqtt": {"url": broker.url},
            "outbox": {"path": str(outbox), "budget_bytes": 8 * 1024 * 1024},
            "publish": {"batch_max_readings": 100, "linger_s": 0.1, "ack_timeout_s": 2.0,
                        "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
        },
        timeout_ms=150,
    )


@contextlib.asynccontextmanager
async def run_agent(agent: Agent) -> AsyncIterator[Agent]:
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.started.wait(), 10)
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_until(pred: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.05)
    return bool(pred())


def per_device(acker: Acknowledger) -> dict[str, int]:
    out: dict[str, int] = {}
    for dev, _m, _t in acker.stored():
        out[dev] = out.get(dev, 0) + 1
    return out


async def command(acker: Acknowledger, cmd: payloads.Command, timeout_s: float = 5.0) -> payloads.CommandResult:
    acker.publish(topics.cmd(GW), payloads.encode_command(cmd))
    assert await wait_until(lambda: any(r.id == cmd.id for r in acker.cmd_results), timeout_s), cmd
    return next(r for r in acker.cmd_results if r.id == cmd.id)


async def test_unplugged_port_and_dead_slave_while_publishing(tmp_path: Path, broker: Mosquitto) -> None:
    acker = Acknowledger(broker.host, broker.port, GW)
    try:
        async with SimServer(SimConfig.model_validate(SIM)) as sim:
            doc = agent_doc(sim, broker, tmp_path / "outbox.db")
            (tmp_path / "gw.yaml").write_text(yaml.safe_dump(doc))
            cfg = parse_agent_config((tmp_path / "gw.yaml").read_text(), "gw.yaml")
            agent = Agent(cfg)
            async with run_agent(agent):
                assert await wait_until(lambda: len(per_device(acker)) == 4, 10), per_device(acker)
                # the RS-485 adapter vanishes and one slave on the healthy TCP bus dies
                sim.bus("rtu-a").unplug()  # type: ignore[union-attr]
                sim.device("mh-0001").faults.set(absent=True)
                await asyncio.sleep(0.5)
                before = per_device(acker)
                await asyncio.sleep(3.0)
                after = per_device(acker)
                assert after["wl-0001"] - before["wl-0001"] >= 20  # ~15 polls x 2+ metrics
                assert after["lamp-0001"] - before["lamp-0001"] >= 20
                assert after.get("mh-0001", 0) == before.get("mh-0001", 0)
                health = agent.device_health()
                assert health["mh-0001"]["consecutive_failures"] > 0
                assert health["wl-0002"]["last_error"]
                assert health["wl-0001"]["consecutive_failures"] == 0
                # the retained status carries it too
                agent.uplink.request_status()
                assert await wait_until(
                    lambda: acker.status and acker.status[-1].health.get("devices", {}).get("mh-0001", {})
                    .get("consecutive_failures", 0) > 0, 5)
                st = acker.status[-1]
                assert {d.id for d in st.devices} == {"wl-0001", "wl-0002", "lamp-0001", "mh-0001"}
                assert "drops" in st.health and "outbox" in st.health and "last_ack" in st.health

                # commands, with errors returned
                r = await command(acker, payloads.Command("c1", "dim", "lamp-0001", {"level_pct": 40}))
                assert r.ok and r.detail["dim_level_pct"] == 40
                r = await command(acker, payloads.Command("c2", "lamp_off", "lamp-0001"))
                assert r.ok and r.detail["relay"] == 0
                r = await command(acker, payloads.Command("c3", "dim", "lamp-0001", {"level_pct": 140}))
                assert not r.ok and r.error == "bad_argument"
                r = await command(acker, payloads.Command("c4", "lamp_on", "wl-0001"))
                assert not r.ok and r.error == "wrong_device_kind"
                r = await command(acker, payloads.Command("c5", "storm_mode", "wl-0001", {"on": True}))
                assert r.ok and agent.devices["wl-0001"].storm.storm
                r = await command(acker, payloads.Command("c6", "poll_now", None))
                assert r.ok and len(r.detail["devices"]) == 4
                r = await command(acker, payloads.Command("c7", "teleport", "wl-0001"))
                assert not r.ok and r.error == "unknown_action"
                acker.publish(topics.cmd(GW), b'{"v": 1, "id": "c8", "action": 5}')
                assert await wait_until(lambda: any(x.id == "c8" for x in acker.cmd_results), 5)
                r8 = next(x for x in acker.cmd_results if x.id == "c8")
                assert not r8.ok and r8.error is not None and r8.error.startswith("bad_command")
                r = await command(acker, payloads.Command("c9", "lamp_on", "mh-0001"))
                assert not r.ok

                # the port comes back: the gauge recovers by itself
                new_path = sim.bus("rtu-a").replug()  # type: ignore[union-attr]
                del new_path  # a real adapter comes back at the same /dev/serial/by-id path
                assert await wait_until(lambda: agent.outbox.ledger().depth == 0, 10)
            led = agent.outbox.ledger()
        stored = acker.stored()
        generated = led.telemetry.appended
        line = LedgerLine(generated, len(stored), generated - len(stored) - led.telemetry.present
                          - led.telemetry.dropped, acker.received_total() - len(stored), 0, led.telemetry.dropped)
        print(line.line("E4 unplugged port + dead slave"))
        assert line.lost == 0
        assert led.telemetry.acked == generated
    finally:
        acker.close()
