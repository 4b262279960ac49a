"""The rule runner against a real Mosquitto: readings in, alarms out, acks and open cases applied."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from rules_wire import Collector, publisher

from contracts import topics
from contracts.alarms import TransitionKind
from contracts.config import MqttSettings
from contracts.payloads import (
    AlarmAck,
    OpenCases,
    Status,
    encode_alarm_ack,
    encode_open_cases,
    encode_status,
    encode_telemetry,
)
from contracts.reading import DeviceInfo, Reading
from rules.config import RulesSettings
from rules.runner import RuleRunner
from rules.specs import parse_rules
from rules.store import open_alarm_store

pytestmark = pytest.mark.integration

RULES = """
rules:
  - name: depth
    kind: threshold
    applies_to: {kinds: [water_gauge]}
    metric: depth
    levels:
      - {severity: minor, raise_at: 0.15, hysteresis: 0.02}
      - {severity: critical, raise_at: 0.40, hysteresis: 0.02}
    flapping: null
  - {name: offline, kind: staleness, applies_to: {kinds: [water_gauge]}, min_silence_s: 3600, gateway_after_s: 0.5}
"""


async def _until(cond, timeout_s: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_runner_end_to_end(broker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = open_alarm_store(f"sqlite:///{tmp_path}/rules.db")
    cfg = RulesSettings(files=["x"], store_url=f"sqlite:///{tmp_path}/rules.db", client_id="rules-it", tick_s=0.2)
    runner = RuleRunner(MqttSettings(url=broker.url), cfg, parse_rules(RULES, "t.yaml"), store)
    col = Collector(broker.host, broker.port)
    pub = publisher(broker.host, broker.port)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        runner.ready_event = runner.ready_event or asyncio.Event()
        await _until(lambda: runner.ready_event is not None and runner.ready_event.is_set())
        dev = DeviceInfo("wl-0001", "radar", "water_gauge", interval_s=60.0)
        pub.publish(topics.status("gw-1"), encode_status(Status("online", "b1", "0.1", [dev])), qos=1, retain=True)
        now = time.time()
        depths = [0.1, 0.2, 0.45, 0.3, 0.05]
        for i, d in enumerate(depths):
            batch = encode_telemetry("gw-1", "b1", i + 1, [Reading("wl-0001", "depth", now + i, d, "m")])
            pub.publish(topics.telemetry("gw-1"), batch, qos=1)
        pub.publish(topics.telemetry("gw-1"), b"{not json", qos=1)  # ignored, nothing stops
        await _until(lambda: len(col.snapshot()) >= 4)
        got = [(t.kind.value, t.severity.value) for t in col.snapshot()]
        assert got == [("raised", "minor"), ("escalated", "critical"), ("de-escalated", "minor"), ("cleared", "minor")]
        aid = col.snapshot()[0].alarm_id
        rec = store.get(aid)
        assert rec is not None and not rec.active and rec.max_severity.value == "critical"

        # an acknowledgement from the console, for a new alarm
        batch = encode_telemetry("gw-1", "b1", 10, [Reading("wl-0001", "depth", now + 10, 0.2, "m")])
        pub.publish(topics.telemetry("gw-1"), batch, qos=1)
        await _until(lambda: len(col.snapshot()) >= 5)
        aid2 = col.snapshot()[4].alarm_id
        ack = AlarmAck(aid2, "wl-0001", "duty-wang", now + 11, "seen")
        pub.publish(topics.alarm_ack("wl-0001"), encode_alarm_ack(ack), qos=1)
        await _until(lambda: len(col.snapshot()) >= 6)
        assert col.snapshot()[5].kind is TransitionKind.ACKNOWLEDGED and col.snapshot()[5].actor == "duty-wang"
        await _until(lambda: (r := store.get(aid2)) is not None and r.acked_by == "duty-wang")

        # the case bridge says a case is open for the condition: the next raise attaches to it
        oc = OpenCases("wl-0001", {"depth": "case-7"})
        pub.publish(topics.case_open("wl-0001"), encode_open_cases(oc), qos=1, retain=True)
        await asyncio.sleep(0.3)
        for i, d in enumerate([0.0, 0.3]):
            batch = encode_telemetry("gw-1", "b1", 20 + i, [Reading("wl-0001", "depth", now + 20 + i, d, "m")])
            pub.publish(topics.telemetry("gw-1"), batch, qos=1)
        await _until(lambda: len(col.snapshot()) >= 8)
        last = col.snapshot()[7]
        assert last.kind is TransitionKind.RAISED and last.evidence["case_id"] == "case-7"

        # the gateway's last will: one gateway alarm, not one per device
        pub.publish(topics.status("gw-1"), encode_status(Status("offline", "b1")), qos=1, retain=True)
        await _until(lambda: any(t.device == "gw-1" for t in col.snapshot()))
        gw_alarm = next(t for t in col.snapshot() if t.device == "gw-1")
        assert (gw_alarm.rule, gw_alarm.severity.value) == ("gateway_offline", "major")
        await _until(lambda: store.unpublished() == [])
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        col.close()
        pub.loop_stop()
        store.close()


async def test_runner_serves_metrics(broker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """/metrics counts what was evaluated, what was refused and what was raised, and how far behind it commits."""
    import httpx

    store = open_alarm_store(f"sqlite:///{tmp_path}/rules.db")
    cfg = RulesSettings(files=["x"], store_url=f"sqlite:///{tmp_path}/rules.db", client_id="rules-metrics",
                        tick_s=0.2, metrics_port=0)
    runner = RuleRunner(MqttSettings(url=broker.url), cfg, parse_rules(RULES, "t.yaml"), store)
    col = Collector(broker.host, broker.port)
    pub = publisher(broker.host, broker.port)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        runner.ready_event = runner.ready_event or asyncio.Event()
        await _until(lambda: runner.ready_event is not None and runner.ready_event.is_set())
        assert runner.metrics_port
        devs = [DeviceInfo(f"wl-{i:04d}", "radar", "water_gauge", interval_s=60.0) for i in range(3)]
        pub.publish(topics.status("gw-m"), encode_status(Status("online", "b1", "0.1", devs)), qos=1, retain=True)
        now = time.time()
        readings = [Reading(d.id, "depth", now - 2 + i, 0.05, "m") for d in devs for i in range(2)]
        readings.append(Reading("wl-0000", "depth", now, 0.5, "m"))  # one breach: raised critical
        pub.publish(topics.telemetry("gw-m"), encode_telemetry("gw-m", "b1", 1, readings), qos=1)
        pub.publish(topics.telemetry("gw-m"), b"{not json", qos=1)
        await _until(lambda: len(col.snapshot()) >= 1)
        await _until(lambda: store.unpublished() == [])

        async def scrape(path: str = "/metrics") -> dict[str, float]:
            async with httpx.AsyncClient() as http:
                resp = await http.get(f"http://127.0.0.1:{runner.metrics_port}{path}", timeout=5)
            if resp.status_code != 200:
                return {"status": float(resp.status_code)}
            return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1])
                    for ln in resp.text.splitlines() if ln and not ln.startswith("#")}

        deadline = time.monotonic() + 15
        while (m := await scrape()).get('citywatch_rules_messages_total{kind="undecodable"}') != 1.0:
            assert time.monotonic() < deadline, m
            await asyncio.sleep(0.1)
        assert m["citywatch_rules_readings_total"] == 7.0
        assert m['citywatch_rules_transitions_total{kind="raised"}'] == 1.0
        assert m["citywatch_rules_devices"] == 3.0 and m["citywatch_rules_active_alarms"] == 1.0
        assert m["citywatch_rules_store_up"] == 1.0
        assert 0.0 <= m["citywatch_rules_lag_seconds"] < 60.0
        assert m["citywatch_rules_step_seconds_count"] >= 1.0
        assert await scrape("/other") == {"status": 404.0}
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        col.close()
        pub.loop_stop()
        store.close()
