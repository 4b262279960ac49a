"""The real cloud chain behind the console, in one asyncio loop, driven by a browser.

A rainstorm (the simulator's hydrograph) arrives as gateway telemetry on a private Mosquitto;
``cloud_ingest`` stores it, ``rules`` raises the road-water-depth alarm, ``case_bridge``
opens (and, at critical, files and dispatches) the case, and the console shows the alarm
live. The duty officer acknowledges it in the browser: the acknowledgement goes to the rule
engine over MQTT and comes back as its ``acknowledged`` transition. The handler of the
responsible unit works the case; the supervisor verifies and closes it. Nothing here plays
another package's part.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion

from case_bridge import open_case_store
from case_bridge.bridge import CaseBridge
from case_bridge.config import CasesSettings
from cloud_ingest.config import IngestSettings
from cloud_ingest.service import Ingester
from cloud_ingest.store import open_store
from console import serialize
from console.adapters import CaseAdapter, DeviceAdapter, RulesAlarmAdapter
from console.app import create_app
from console.audit import AuditLog
from console.context import Stores
from console.live import Hub, MqttFeed, case_open_refresher
from contracts import payloads, topics
from contracts.config import MqttSettings
from contracts.payloads import Status
from contracts.reading import Reading
from firmware_sim.physics import Hydrograph
from rules.config import RulesSettings
from rules.runner import RuleRunner
from rules.specs import load_rules
from rules.store import open_alarm_store
from tests.support.console_demo import PASSWORD, demo_settings, make_devices
from tests.support.services import free_port, missing

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]
CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[3]
GW = "gw-storm-01"


async def _wait(pred: Any, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def _login(page: Any, base: str, user: str) -> None:
    await page.goto(f"{base}/login")
    await page.fill("#username", user)
    await page.fill("#password", PASSWORD)
    await page.click("#login-btn")
    await page.wait_for_url(lambda url: "/login" not in url, timeout=15_000)


async def test_storm_through_the_real_chain(broker: Any, tmp_path: Path) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"{CHROMIUM} (apt-get install chromium)")
    from playwright.async_api import async_playwright

    mq = MqttSettings(url=broker.url)
    ts = open_store(f"sqlite:///{tmp_path}/ts.db")
    alarms = open_alarm_store(f"sqlite:///{tmp_path}/rules.db")
    # give the crew 10 min after the fix report before the sensor check returns the case
    # (cases.verify_grace_s), so the supervisor verifies by hand once the water is gone
    cases = open_case_store(f"sqlite:///{tmp_path}/cases.db", verify_grace_s=600)
    devices = make_devices(8)
    gauge = devices[0]  # grid 330106001001 -> 灵隐街道 (lingyin-street)
    assert gauge.kind == "water_gauge" and gauge.grid == "330106001001"

    # the gateway's retained birth message: the device registry of every cloud process
    gw = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{GW}-e2e")
    gw.connect("127.0.0.1", broker.port)
    gw.loop_start()
    gw.publish(topics.status(GW), payloads.encode_status(Status("online", "boot1", "0.1.0", devices)), qos=1,
               retain=True).wait_for_publish(5)

    ingester = Ingester(mq, IngestSettings(store_url=ts.url, client_id="e2e-ingest", share_group=None,
                                           metrics_port=None), ts)
    runner = RuleRunner(mq, RulesSettings(store_url=alarms.url, client_id="e2e-rules", share_group=None, tick_s=0.5),
                        load_rules([ROOT / "configs/rules/default.yaml"]), alarms)
    bridge = CaseBridge(cases, mq, CasesSettings(store_url=f"sqlite:///{tmp_path}/cases.db", client_id="e2e-cases",
                                                 tick_s=0.5), None)
    hub = Hub(flush_s=0.2)
    case_port = CaseAdapter(cases)
    case_events: list[dict[str, Any]] = []
    feed = MqttFeed(mq, hub, on_case_open=case_open_refresher(
        hub, case_port.get, lambda view: case_events.append(serialize.case(view, time.time())) or case_events[-1]))
    app = create_app(demo_settings(), Stores(devices=DeviceAdapter(ts, cache_s=0), alarms=RulesAlarmAdapter(alarms),
                                             cases=case_port, audit=AuditLog(f"sqlite:///{tmp_path}/c.db"),
                                             acks=feed), hub=hub, background=feed.run)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=3))
    base = f"http://127.0.0.1:{port}"
    stop = asyncio.Event()
    tasks = [asyncio.create_task(ingester.run(stop)), asyncio.create_task(runner.run(stop)),
             asyncio.create_task(bridge.run(stop)), asyncio.create_task(server.serve())]
    try:
        await _wait(lambda: server.started and feed.connected and bridge.ready.is_set()
                    and ingester.ready_event is not None and ingester.ready_event.is_set()
                    and runner.ready_event is not None and runner.ready_event.is_set(), "services ready")
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
            await _login(page, base, "duty")
            await page.wait_for_selector("#live-state.on", timeout=10_000)

            # ---- the storm: 5 minutes of rising water, one batch per 10 s sample, as the edge agent sends
            # (it ended 15 min ago, so the recession below has room for the 300 s clear delay)
            now = time.time() - 900
            storm = Hydrograph(peak_m=0.5, start_s=now - 300, rise_s=280, k=2.0)
            for seq, i in enumerate(range(31), start=1):
                t = now - 300 + 10 * i
                gw.publish(topics.telemetry(GW), payloads.encode_telemetry(
                    GW, "boot1", seq, [Reading(gauge.id, "depth", round(t, 3), round(storm.depth_m(t), 3), "m")]),
                    qos=1)
            row = page.locator(f'#alarm-rows tr:has(a[href="/devices/{gauge.id}"])', has_text="critical")
            await row.wait_for(timeout=20_000)
            alarm_id = await row.get_attribute("data-alarm")
            assert alarm_id and alarms.get(alarm_id) is not None

            # ---- acknowledge in the browser; the rule engine answers with `acknowledged`
            await row.locator("button.ack").click()
            await page.locator(f'tr[data-alarm="{alarm_id}"]', has_text="已确认 acknowledged").wait_for(timeout=15_000)
            rec = alarms.get(alarm_id)
            assert rec is not None and rec.acked_by == "duty"
            assert len(ts.range(gauge.id, "depth", now - 400, now + 1)) == 31  # ingest stored the storm

            # ---- the bridge opened the case and, at critical, filed and dispatched it to the locality
            def dispatched() -> Any:
                page_ = cases.worklist(state="dispatched", limit=50)
                return next((c for c in page_.items if c.device == gauge.id), None)

            await _wait(lambda: dispatched() is not None, "case dispatched")
            case = dispatched()
            # the bridge's case-open message reached the console's live feed as a case event
            await _wait(lambda: any(e["id"] == str(case.id) for e in case_events), "case event on the live feed")
            assert case.unit == "lingyin-street" and case.service_code == "S0111"
            await page.click("#logout-btn")  # a POST carrying the CSRF value
            await page.wait_for_url(lambda url: "/login" in url)
            await _login(page, base, "handler-a")
            await page.goto(f"{base}/cases/{case.id}")
            for action, label in (("accept", "处置中"), ("report_fix", "已处置")):
                await page.fill("#note", f"chain {action}")
                await page.click(f'button.act[data-action="{action}"]')
                await page.locator("#case-state", has_text=label).wait_for(timeout=10_000)
                await page.wait_for_load_state("load")
            trail = [(e.actor, e.action, e.to_state, e.note) for e in cases.timeline(case.id)]
            assert cases.get(case.id).state == "handled", trail
            # ---- the water recedes: the rule engine clears the alarm, and only then may the supervisor
            # verify (核查 is refused while the sensor's alarm is active)
            for seq, i in enumerate(range(1, 41), start=32):
                gw.publish(topics.telemetry(GW), payloads.encode_telemetry(
                    GW, "boot1", seq, [Reading(gauge.id, "depth", round(now + 10 * i, 3), 0.0, "m")]), qos=1)
            await _wait(lambda: not (alarms.get(alarm_id) or rec).active, "alarm cleared by the rule engine")
            try:
                await _wait(lambda: not any(a.active for a in cases.linked_alarms(case.id)), "case's alarms cleared")
            except TimeoutError as exc:
                raise AssertionError(cases.linked_alarms(case.id)) from exc
            await page.click("#logout-btn")  # a POST carrying the CSRF value
            await page.wait_for_url(lambda url: "/login" in url)
            await _login(page, base, "sup")
            await page.goto(f"{base}/cases/{case.id}")
            for action, label in (("verify", "已核查"), ("close", "结案")):
                await page.click(f'button.act[data-action="{action}"]')
                await page.locator("#case-state", has_text=label).wait_for(timeout=10_000)
                await page.wait_for_load_state("load")
            await browser.close()
        assert cases.get(case.id).state == "closed"
        actions = [(e.actor, e.action) for e in cases.timeline(case.id)]
        assert ("system", "dispatch") in actions and actions[-1] == ("sup", "close")
    finally:
        stop.set()
        server.should_exit = True
        feed.stop()
        for task in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        gw.disconnect()
        gw.loop_stop()
        for store in (ts, alarms, cases):
            store.close()
