"""The agent's per-device step with a fake poller: outbox append, storm switching, health, failures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from contracts.reading import Event, Quality, Reading
from edge_agent.agent import Agent, DeviceRuntime
from edge_agent.config import parse_agent_config
from gateway.errors import NoResponse


@dataclass
class Health:
    last_good_ts: float | None = None
    consecutive_failures: int = 0
    quarantined_until: float | None = None
    last_error: str | None = None


@dataclass
class Result:
    readings: list[Reading]
    events: list[Event] = field(default_factory=list)


class FakeGauge:
    def __init__(self) -> None:
        self.health = Health()
        self.depths: list[float] = []
        self.fail = False

    async def poll(self, now: float) -> Result:
        if self.fail:
            self.health.consecutive_failures += 1
            self.health.last_error = "timeout"
            raise NoResponse("no answer")
        self.health.consecutive_failures = 0
        self.health.last_good_ts = now
        d = self.depths.pop(0)
        return Result([Reading("wl-0001", "depth", now, d, "m", Quality.GOOD),
                       Reading("wl-0001", "battery", now, 3.6, "V")])

    async def write_field(self, field: str, value: float, now: float) -> float:
        return value


CFG = """
gateway: {id: gw-1}
mqtt: {url: "mqtt://127.0.0.1:1"}
outbox: {path: OUTBOX, budget_bytes: 10000000}
storm: {enter_depth_m: 0.15, exit_depth_m: 0.10, enter_rise_m_per_h: null, exit_rise_m_per_h: null, min_hold_s: 0}
buses: [{id: b1, type: tcp, host: 127.0.0.1}]
devices: [{id: wl-0001, profile: water_gauge, bus: b1, unit_id: 1, poll_interval_s: 300, storm_poll_interval_s: 10}]
"""


async def test_poll_once_appends_and_switches_storm(tmp_path: Path) -> None:
    cfg = parse_agent_config(CFG.replace("OUTBOX", str(tmp_path / "o.db")), "gw.yaml")
    agent = Agent(cfg, boot="b1")
    gauge = FakeGauge()
    dev = DeviceRuntime("wl-0001", "water_gauge", 300.0, 10.0, gauge)
    agent.devices[dev.id] = dev
    gauge.depths = [0.02, 0.20, 0.12, 0.05]
    await agent.poll_once(dev)
    assert dev.current_interval_s == 300.0
    await agent.poll_once(dev)
    assert dev.current_interval_s == 10.0 and dev.storm.storm  # deep: storm interval
    await agent.poll_once(dev)
    assert dev.current_interval_s == 10.0  # between exit and enter: hysteresis holds
    await agent.poll_once(dev)
    assert dev.current_interval_s == 300.0
    assert agent.outbox.ledger().telemetry.appended == 8
    gauge.fail = True
    await agent.poll_once(dev)
    await agent.poll_once(dev)
    h = agent.device_health()["wl-0001"]
    assert h["consecutive_failures"] == 2 and h["last_error"] == "timeout" and dev.failing
    assert agent.outbox.ledger().telemetry.appended == 8
    st = agent.status()
    assert st.state == "online" and st.devices[0].id == "wl-0001" and st.devices[0].interval_s == 300.0
    assert st.health["outbox"]["depth"] == 8 and st.health["drops"]["telemetry"] == 0
    # storm by command, back to automatic
    assert agent.set_storm(None, True) == ["wl-0001"] and dev.current_interval_s == 10.0
    agent.set_storm("wl-0001", None)
    assert dev.current_interval_s == 300.0
    agent.outbox.close()
