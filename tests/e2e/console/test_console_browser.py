"""Browser end-to-end (headless Chromium via Playwright) on seeded demo data: the duty officer
watches a storm alarm arrive live and acknowledges it; the handler works the resulting case;
the supervisor verifies and closes it. Screenshots of the overview, the case page and the
handler's worklist on a phone go to ``$CITYWATCH_SCREENSHOTS`` if set (``make screenshots`` sets it
to ``docs/screenshots/`` to refresh the README's), else to the test's tmp dir: a test run modifies
no tracked file.
``test_console_chain.py`` runs the same story through the real ingest, rules and case bridge.

The chain around the console is real where it crosses a boundary: a private Mosquitto carries
the alarm transition, the telemetry and the ``alarm-ack`` message; the rule engine's
``AlarmStore`` and the case bridge's ``CaseStore`` (SQLite) hold the alarm and the case. The
test itself plays the rule engine and the bridge (commit the transition, publish it, apply it;
answer an ack with the ``acknowledged`` transition), with depths from the simulator's storm curve.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion

from cloud_ingest.store import WriteBatch
from console.live import Hub, MqttFeed
from contracts import payloads, topics
from contracts.alarms import AlarmTransition, Severity, TransitionKind
from contracts.config import MqttSettings
from contracts.reading import Reading
from tests.support.console_demo import PASSWORD, build_demo
from tests.support.services import free_port, missing

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]
CHROMIUM = "/usr/bin/chromium"


def storm_depths(n: int) -> list[float]:
    """Road-water depth (m) each minute of a rainstorm: the simulator's own hydrograph, up to its peak."""
    from firmware_sim.physics import Hydrograph

    storm = Hydrograph(peak_m=0.45, rise_s=60.0 * (n - 1), k=3.0)
    return [round(storm.depth_m(60.0 * i), 3) for i in range(n)]


class RuleEngineStandIn:
    """Publishes transitions and answers acknowledgements the way ``citywatch rules`` does."""

    def __init__(self, port: int, env: Any) -> None:
        self.env = env
        self.acks: list[payloads.AlarmAck] = []
        self.ready = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"rules-standin-{port}")
        self.c.on_connect = lambda c, *_a: (c.subscribe(topics.ALARM_ACK_FILTER, 1), self.ready.set())
        self.c.on_message = self._on_ack
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.ready.wait(5)

    def publish(self, tr: AlarmTransition) -> None:
        self.env.alarm_store.commit(None, [tr])
        device = next(d for d in self.env.demo.devices if d.id == tr.device)
        self.env.case_store.apply_alarm(tr, device, now=tr.t)
        self.c.publish(topics.alarms(tr.device), payloads.encode_alarm(tr), qos=1).wait_for_publish(5)

    def _on_ack(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        ack = payloads.decode_alarm_ack(msg.payload)
        self.acks.append(ack)
        rec = self.env.alarm_store.get(ack.alarm_id)
        self.publish(AlarmTransition(ack.alarm_id, ack.device, rec.rule, TransitionKind.ACKNOWLEDGED, rec.severity,
                                     time.time(), rec.value, {}, ack.actor))

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


async def _login(page: Any, base: str, user: str) -> None:
    await page.goto(f"{base}/login")
    await page.fill("#username", user)
    await page.fill("#password", PASSWORD)
    await page.click("#login-btn")
    await page.wait_for_url(lambda url: "/login" not in url, timeout=15_000)


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go: ``$CITYWATCH_SCREENSHOTS`` (``make screenshots``) or this test's tmp dir."""
    out = Path(os.environ.get("CITYWATCH_SCREENSHOTS") or tmp_path / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


async def test_storm_alarm_to_closed_case(broker: Any, tmp_path: Path, shots: Path) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"{CHROMIUM} (apt-get install chromium)")
    from playwright.async_api import async_playwright

    hub = Hub(flush_s=0.2)
    feed = MqttFeed(MqttSettings(url=broker.url), hub)
    env = build_demo(str(tmp_path), now=time.time(), acks=feed, background=feed.run, hub=hub, n_devices=24)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(env.app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=3))
    task = asyncio.create_task(server.serve())
    base = f"http://127.0.0.1:{port}"
    rules = RuleEngineStandIn(broker.port, env)
    alarmed = {a.split("-road")[0].removeprefix("al-") for a in env.demo.alarm_ids}
    gauge = next(d for d in env.demo.devices
                 if d.kind == "water_gauge" and d.id not in alarmed and d.grid == "330106001001")  # 灵隐-1
    try:
        deadline = time.monotonic() + 15
        while not (server.started and feed.connected):
            assert time.monotonic() < deadline, f"server started={server.started} feed connected={feed.connected}"
            await asyncio.sleep(0.05)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            ctx = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
            page = await ctx.new_page()
            # ---- duty officer: the alarm arrives live, without reload
            await _login(page, base, "duty")
            assert page.url.endswith("/overview")
            await page.wait_for_selector("#live-state.on", timeout=10_000)
            depths = storm_depths(20)
            t0 = time.time() - 20 * 60
            storm = [Reading(gauge.id, "depth", t0 + 60 * i, depth, "m") for i, depth in enumerate(depths)]
            env.ts_store.write(WriteBatch(readings=storm))  # what ingest commits
            for i, depth in enumerate(depths):
                rules.c.publish(topics.telemetry("gw-demo-01"), payloads.encode_telemetry(
                    "gw-demo-01", "e2e", i, [Reading(gauge.id, "depth", t0 + 60 * i, depth, "m")]), qos=1)
            alarm_id = f"al-e2e-{gauge.id}"
            rules.publish(AlarmTransition(alarm_id, gauge.id, "road-water-depth", TransitionKind.RAISED,
                                          Severity.CRITICAL, time.time(), max(depths), {"threshold_m": 0.3}))
            row = page.locator(f'tr[data-alarm="{alarm_id}"]')
            await row.wait_for(timeout=10_000)
            assert "严重 critical" in await row.inner_text()
            await page.screenshot(path=str(shots / "overview.png"), full_page=True)
            # ---- acknowledge: console -> alarm-ack -> rule engine -> acknowledged transition -> page
            await row.locator("button.ack").click()
            await page.locator(f'tr[data-alarm="{alarm_id}"]', has_text="已确认 acknowledged").wait_for(timeout=10_000)
            assert rules.acks and rules.acks[0].actor == "duty"
            await page.click("#logout-btn")  # a POST carrying the CSRF value
            await page.wait_for_url(lambda url: "/login" in url)
            # ---- handler of the gauge's unit works the case
            case = next(c for c in env.case_store.worklist(unit=None, include_closed=True, limit=100).items
                        if c.device == gauge.id)
            assert case.unit == "lingyin-street" and case.state == "dispatched"  # critical: auto-dispatched
            await _login(page, base, "handler-a")
            await page.set_viewport_size({"width": 390, "height": 844})  # the handler's phone
            await page.wait_for_selector(f'a[href="/cases/{case.id}"]')
            await page.screenshot(path=str(shots / "worklist-phone.png"), full_page=False)
            await page.set_viewport_size({"width": 1280, "height": 900})
            await page.click(f'a[href="/cases/{case.id}"]')
            await page.wait_for_selector("#case-state", timeout=15_000)
            for action, label in (("accept", "处置中"), ("report_fix", "已处置")):
                await page.fill("#note", f"e2e {action}")
                await page.click(f'button.act[data-action="{action}"]')
                await page.locator("#case-state", has_text=label).wait_for(timeout=10_000)
                await page.wait_for_load_state("load")
            await page.click("#logout-btn")  # a POST carrying the CSRF value
            await page.wait_for_url(lambda url: "/login" in url)
            # ---- the water recedes and the rule engine clears the alarm: only then may the
            # supervisor verify (核查 is refused while the sensor's alarm is active, issue 13)
            rules.publish(AlarmTransition(alarm_id, gauge.id, "road-water-depth", TransitionKind.CLEARED,
                                          Severity.CRITICAL, time.time(), 0.02, {}))
            # ---- supervisor verifies and closes (a handler may not close their own work)
            await _login(page, base, "sup")
            await page.goto(f"{base}/cases/{case.id}")
            for action, label in (("verify", "已核查"), ("close", "结案")):
                await page.click(f'button.act[data-action="{action}"]')
                await page.locator("#case-state", has_text=label).wait_for(timeout=10_000)
                await page.wait_for_load_state("load")
            # the chart is drawn, centred on the alarm (not at the window's edge), the rule's levels on it
            await page.wait_for_selector(".chart[data-points] .plot svg path", state="attached", timeout=15_000)
            box = page.locator(".chart[data-device]")
            start, end = (float(x) for x in (await box.get_attribute("data-window") or "").split(","))
            mark = float(await box.get_attribute("data-mark") or "nan")
            assert start + 3600 <= mark <= end - 3600, (start, mark, end)
            assert "critical" in await page.locator(".chart .plot svg").inner_html()  # the 0.40 m level's label
            await page.screenshot(path=str(shots / "case.png"), full_page=True)
            await browser.close()
        final = env.case_store.get(case.id)
        assert final.state == "closed"
        assert [e.actor for e in env.case_store.timeline(case.id)][-4:] == ["handler-a", "handler-a", "sup", "sup"]
    finally:
        rules.close()
        server.should_exit = True
        await task
        env.close()
