"""Browser tests of the one map, the alarm board, charts and the cockpit, in Debian Chromium.

What a person sees: the district base layer (grid polygons, streets, river) drawn without
internet, every device counted in a marker or a cluster, the flood alarms at the top of the
board above a critical WIM overload shown in tonnes, a chart window around the alarm with its
thresholds, and the cockpit's KPIs. Screenshots go to pytest's tmp_path.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from console.live import LiveEvent
from contracts.alarms import Severity
from tests.support.console_demo import PASSWORD, build_demo, raise_alarm
from tests.support.services import free_port, missing

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
CHROMIUM = "/usr/bin/chromium"
N_DEVICES = 400


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, Any]]:
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"{CHROMIUM} (apt-get install chromium)")
    env = build_demo(str(tmp_path / "stores"), now=time.time(), n_devices=N_DEVICES)  # with the demo district
    now = time.time()
    wim = next(d for d in env.demo.devices if d.kind == "wim")
    cover = next(d for d in env.demo.devices if d.kind == "manhole")
    al = env.alarm_store
    raise_alarm(env.case_store, wim, "wim-overload", Severity.CRITICAL, t=now - 60, value=77_900.0, alarms=al)
    raise_alarm(env.case_store, cover, "manhole-tilt", Severity.CRITICAL, t=now - 30, value=28.0, alarms=al)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(env.app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=3))
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "console did not start"
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", env
    finally:
        server.should_exit = True
        await task
        env.close()


async def _browser(pw: Any) -> Any:
    return await pw.chromium.launch(executable_path=CHROMIUM, args=[
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])


async def _login(page: Any, base: str, user: str = "duty") -> None:
    await page.goto(f"{base}/login")
    await page.fill("#username", user)
    await page.fill("#password", PASSWORD)
    await page.click("#login-btn")
    await page.wait_for_url(lambda url: "/login" not in url, timeout=15_000)


async def test_map_board_and_chart(served: tuple[str, Any], tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    base, env = served
    async with async_playwright() as pw:
        browser = await _browser(pw)
        page = await (await browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")).new_page()
        external: list[str] = []
        page.on("request", lambda r: external.append(r.url) if not r.url.startswith(base) else None)
        await _login(page, base)
        assert page.url.endswith("/overview")
        # ---- the base layer: the district's grid polygons, streets and river, no tiles from anywhere
        await page.wait_for_selector(".leaflet-overlay-pane path.grid", timeout=15_000)
        assert await page.locator(".leaflet-overlay-pane path.grid").count() == 3
        assert await page.locator(".leaflet-overlay-pane path.street").count() == 7
        assert await page.locator(".leaflet-overlay-pane path.river").count() == 1
        assert await page.locator(".grid-label", has_text="灵隐-1").count() == 1
        # ---- the high-incidence places as a heat overlay on the same map, chosen from the layer control
        await page.hover(".leaflet-control-layers")
        await page.locator(".leaflet-control-layers-overlays label", has_text="案件热力").click()
        await page.wait_for_selector(".leaflet-overlay-pane path.heat-spot", timeout=10_000)
        assert await page.locator(".leaflet-overlay-pane path.heat-spot").count() >= 1
        # ---- every device is on the map: single markers plus the counts on the clusters
        await page.wait_for_function(
            "n => [...document.querySelectorAll('.leaflet-marker-pane .mk')].length + [...document.querySelectorAll("
            "'.leaflet-marker-pane .cl span')].reduce((s, e) => s + Number(e.textContent), 0) === n",
            arg=N_DEVICES, timeout=15_000)
        # the worst state shows on a cluster
        assert await page.locator(".leaflet-marker-pane .cl.s-critical, .leaflet-marker-pane .mk.s-critical").count()
        # ---- the board: flood first, then the other criticals; WIM in tonnes; grouped rows
        rules = await page.locator("#alarm-rows tr").evaluate_all("rs => rs.map(r => r.dataset.rule)")
        assert rules[:2] == ["road-water-depth", "road-water-depth"], rules
        assert set(rules[2:4]) == {"wim-overload", "manhole-tilt"}, rules
        wim_row = page.locator('#alarm-rows tr[data-rule="wim-overload"]')
        assert "77.9 t" in await wim_row.inner_text()
        assert "e+" not in await page.locator("#alarm-rows").inner_text()
        assert await wim_row.locator("button.clear").count() == 1  # no sensor clears an overload
        # map, counters and the top of the board on the first screen
        for sel in ("#map", "#kind-counts", "#alarm-rows tr:first-child"):
            box = await page.locator(sel).bounding_box()
            assert box is not None and box["y"] < 900, (sel, box)
        # ---- a new critical alarm is announced: banner, and a sound the user can mute
        await page.click("#mute")
        assert await page.get_attribute("#mute", "aria-pressed") == "true"
        env.hub.publish(LiveEvent("alarm", {"alarm_id": "al-new", "device": "wl-0008", "rule": "road-water-depth",
                                            "kind": "raised", "severity": "critical", "t": time.time(), "value": 0.5}))
        await page.locator("#alert-banner", has_text="wl-0008").wait_for(timeout=10_000)
        await page.reload()
        assert await page.get_attribute("#mute", "aria-pressed") == "true"  # muted stays muted
        await page.wait_for_selector("#live-state.on", timeout=10_000)
        # filter by kind
        await page.select_option('#board-filters select[name="kind"]', "wim")
        await page.wait_for_function(
            "() => [...document.querySelectorAll('#alarm-rows tr')].every(r => r.dataset.kind === 'wim')")
        await page.screenshot(path=str(tmp_path / "overview.png"))
        # ---- a marker's popup: values with units, address, a link to the device (click clusters open first)
        for _ in range(8):
            if await page.locator(".leaflet-marker-pane .mk").count():
                break
            await page.locator(".leaflet-marker-pane .cl").first.click()
            await page.wait_for_timeout(700)
        marker = page.locator(".leaflet-marker-pane .mk:not(.s-critical)").first
        device = await marker.get_attribute("title")
        await marker.click()
        pop = page.locator(".leaflet-popup .pop")
        await pop.locator("table").wait_for(timeout=10_000)
        text = await pop.inner_text()
        assert any(u in text for u in (" m", "°", " W")), text
        assert await pop.locator('a[href^="/devices/"]').count() == 1
        assert "近" in text or "路" in text  # a street address for people
        # ---- the map follows the live feed: an alarm on that device turns its marker red without a reload
        dev = next(d for d in env.demo.devices if d.id == device)
        tr = raise_alarm(env.case_store, dev, "manhole-cover-open", Severity.CRITICAL, t=time.time(), value=1.0,
                         alarms=env.alarm_store)
        env.hub.publish(LiveEvent("alarm", {"alarm_id": tr.alarm_id, "device": dev.id, "rule": tr.rule,
                                            "kind": "raised", "severity": "critical", "t": tr.t, "value": 1.0}))
        await page.locator(f'.leaflet-marker-pane .mk.s-critical[title="{device}"]').wait_for(timeout=10_000)
        # ---- chart around the alarm on the critical gauge's page
        alarm = env.alarm_store.list(active_only=True, rule="road-water-depth", limit=10)[-1]
        await page.goto(f"{base}/devices/{alarm.device}")
        await page.wait_for_selector(".chart[data-points]", timeout=20_000)
        start, end = (float(x) for x in (await page.locator(".chart").get_attribute("data-window")).split(","))
        assert start < alarm.raised_t < end and end - start <= 6 * 3600 + 1
        assert await page.locator(".chart .plot svg path").count() > 3
        assert "0.25 m" in await page.locator(".chart .plot").inner_html() or await page.locator(
            ".chart .plot svg text", has_text="critical").count() >= 1  # threshold lines labelled
        await page.screenshot(path=str(tmp_path / "device.png"), full_page=True)
        await page.click('button[data-span="86400"]')
        await page.wait_for_function(
            "() => { const [s, e] = document.querySelector('.chart').dataset.window.split(',');"
            " return e - s > 86000; }")
        assert not external, external  # nothing fetched from outside the console
        await browser.close()


async def test_cockpit(served: tuple[str, Any], tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    base, _env = served
    async with async_playwright() as pw:
        browser = await _browser(pw)
        page = await (await browser.new_context(viewport={"width": 1920, "height": 1080}, locale="zh-CN")).new_page()
        await _login(page, base, "sup")
        await page.goto(f"{base}/cockpit")
        await page.wait_for_selector("#cp-top li", timeout=15_000)
        assert await page.locator("#kpi-alarms").inner_text() == "4"
        assert "/" in await page.locator("#kpi-online").inner_text()
        await page.wait_for_selector("#cp-gauges canvas", timeout=15_000)
        await page.wait_for_selector(".leaflet-overlay-pane path.grid", timeout=15_000)
        size = await page.locator(".kpi .kv").first.evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
        assert size >= 48  # readable from across the room
        await page.screenshot(path=str(tmp_path / "cockpit.png"))
        await browser.close()


async def test_ten_thousand_devices_cluster(tmp_path: Path) -> None:
    """10 000 markers: clustered, every one counted, the page responsive enough to zoom."""
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"{CHROMIUM} (apt-get install chromium)")
    from playwright.async_api import async_playwright

    n = 10_000
    env = build_demo(str(tmp_path / "stores"), now=time.time(), n_devices=n)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(env.app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            assert time.monotonic() < deadline, "console did not start"
            await asyncio.sleep(0.05)
        async with async_playwright() as pw:
            browser = await _browser(pw)
            page = await (await browser.new_context(viewport={"width": 1440, "height": 900})).new_page()
            await _login(page, f"http://127.0.0.1:{port}")
            counted = ("() => [...document.querySelectorAll('.leaflet-marker-pane .mk')].length + [...document"
                       ".querySelectorAll('.leaflet-marker-pane .cl span')]"
                       ".reduce((s, e) => s + Number(e.textContent), 0)")
            await page.wait_for_function(f"n => ({counted})() === n", arg=n, timeout=60_000)
            assert await page.locator(".leaflet-marker-pane .leaflet-marker-icon").count() < 200  # clustered
            await page.locator(".leaflet-control-zoom-in").click()
            await page.wait_for_timeout(1000)
            assert await page.evaluate(counted) <= n  # zoomed in: part of the district, still consistent
            await page.screenshot(path=str(tmp_path / "ten-thousand.png"))
            await browser.close()
    finally:
        server.should_exit = True
        await task
        env.close()
