"""A lamp district for console tests: simulated lamps, a real edge agent, ingest and the console.

Everything crosses a real boundary: the simulator answers Modbus over TCP, the agent polls it
and publishes its birth message and telemetry on a private Mosquitto, ``cloud_ingest`` stores
the registry the console reads, and the console's lamp commands go out on ``.../cmd`` and come
back on ``.../cmd/result`` through the same broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
import yaml

from case_bridge import open_case_store
from cloud_ingest.config import IngestSettings
from cloud_ingest.service import Ingester
from cloud_ingest.store import StatusUpdate, Store, WriteBatch, open_store
from console.adapters import CaseAdapter, DeviceAdapter, RulesAlarmAdapter
from console.app import create_app
from console.audit import AuditLog
from console.cli import server_config
from console.context import Stores
from console.lamps import LampControl
from console.live import Hub, MqttFeed
from contracts.config import MqttSettings
from contracts.payloads import Status
from contracts.reading import DeviceInfo
from edge_agent.agent import Agent
from edge_agent.config import parse_agent_config
from firmware_sim.config import SimConfig
from firmware_sim.gwconfig import gateway_document
from firmware_sim.server import SimServer
from lighting.schedule import LightingSettings
from rules.store import open_alarm_store
from tests.support.console_demo import demo_settings
from tests.support.services import Mosquitto, free_port

GW = "gw-lamps-t1"
GHOST_GW = "gw-ghost"  # registered, but no agent runs for it: its commands time out
LAMPS = ("lamp-0101", "lamp-0102", "lamp-0103")
CIRCUIT = "c-test-01"


def sim_config() -> SimConfig:
    devices: list[dict[str, Any]] = [
        {"id": lamp, "profile": "lamp", "bus": "tcp-l", "unit": n + 1, "interval_s": 0.5, "circuit": CIRCUIT,
         "lat": 30.25, "lon": 120.13, "scenario": {"role": "lamp", "schedule": "always_on", "default_dim_pct": 100}}
        for n, lamp in enumerate(LAMPS)
    ]
    return SimConfig.model_validate({"seed": 11, "clock": {"speed": 1.0},
                                     "buses": [{"id": "tcp-l", "gateway": GW, "transport": "tcp"}],
                                     "devices": devices})


async def wait_for(pred: Any, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


@dataclass
class LampDistrict:
    base: str
    sim: SimServer
    ts: Store
    audit: AuditLog
    settings: Any


@contextlib.asynccontextmanager
async def lamp_district(broker: Mosquitto, tmp: Path, *, command_timeout_s: float = 3.0,
                        lighting: LightingSettings | None = None) -> AsyncIterator[LampDistrict]:
    mq = MqttSettings(url=broker.url)
    ts = open_store(f"sqlite:///{tmp}/ts.db")
    alarms = open_alarm_store(f"sqlite:///{tmp}/rules.db")
    cases = open_case_store(f"sqlite:///{tmp}/cases.db")
    audit = AuditLog(f"sqlite:///{tmp}/console.db")
    ghost = DeviceInfo("lamp-0901", "lamp", "lamp", 30.25, 120.14, circuit="c-ghost-01")
    ts.write(WriteBatch(statuses=[StatusUpdate(GHOST_GW, Status("online", "b1", "0.1.0", [ghost]), time.time())]))
    settings = demo_settings(lamp_command_timeout_s=command_timeout_s)
    hub = Hub(flush_s=0.2)
    lamps = LampControl(timeout_s=settings.lamp_command_timeout_s)
    feed = MqttFeed(mq, hub, on_cmd_result=lamps.on_result)
    lamps.port = feed
    app = create_app(settings, Stores(devices=DeviceAdapter(ts, cache_s=0), alarms=RulesAlarmAdapter(alarms),
                                      cases=CaseAdapter(cases), audit=audit, acks=feed, lamps=lamps),
                     hub=hub, background=feed.run, lighting=lighting)
    ingester = Ingester(mq, IngestSettings(store_url=ts.url, client_id=f"lamps-ingest-{broker.port}",
                                           share_group=None, metrics_port=None), ts)
    port = free_port()
    server = uvicorn.Server(server_config(app, "127.0.0.1", port, log_level="warning", timeout_graceful_shutdown=3))
    stop = asyncio.Event()
    async with SimServer(sim_config()) as sim:
        doc = gateway_document(sim.config, GW, sim.bus_endpoints, timeout_ms=300, extra={
            "mqtt": {"url": broker.url}, "outbox": {"path": str(tmp / "outbox.db")},
            "publish": {"linger_s": 0.1, "ack_timeout_s": 2.0, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}})
        agent = Agent(parse_agent_config(yaml.safe_dump(doc), "gw.yaml"))
        tasks = [asyncio.create_task(ingester.run(stop)), asyncio.create_task(server.serve()),
                 asyncio.create_task(agent.run())]
        try:
            await wait_for(lambda: server.started and feed.connected and agent.started.is_set()
                           and ingester.ready_event is not None and ingester.ready_event.is_set(), "services ready")
            # the agent's birth message has reached the registry the console reads
            await wait_for(lambda: {d.info.id for d in ts.devices() if d.gateway == GW} == set(LAMPS),
                           "lamps registered")
            yield LampDistrict(f"http://127.0.0.1:{port}", sim, ts, audit, settings)
        finally:
            stop.set()
            server.should_exit = True
            tasks[2].cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(t, 10)
            ts.close()
            alarms.close()
            cases.close()
            audit.close()
