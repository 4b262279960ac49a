"""Browser tests (Debian Chromium via Playwright) for lamp control and statistics export.

What a person sees: a lamp dimmed from the lamp page reaches the simulated controller through
the real broker and edge agent, and the page shows the value read back from it. Screenshots go
to pytest's temporary folder, never over tracked files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.console_demo import PASSWORD
from tests.support.lamps import CIRCUIT, LAMPS, lamp_district
from tests.support.services import Mosquitto, missing

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]
CHROMIUM = "/usr/bin/chromium"


def _need_chromium() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"{CHROMIUM} (apt-get install chromium)")


async def _login(page: Any, base: str, user: str) -> None:
    await page.goto(f"{base}/login")
    await page.fill("#username", user)
    await page.fill("#password", PASSWORD)
    await page.click("#login-btn")
    await page.wait_for_url(lambda url: "/login" not in url, timeout=15_000)


async def _browser(pw: Any) -> Any:
    return await pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])


async def test_lamp_dimmed_from_the_page_reaches_the_device(broker: Mosquitto, tmp_path: Path) -> None:
    _need_chromium()
    from playwright.async_api import async_playwright

    async with lamp_district(broker, tmp_path / "district") as d, async_playwright() as pw:
        browser = await _browser(pw)
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await _login(page, d.base, "duty")
        await page.goto(f"{d.base}/lamps")
        lamp = LAMPS[0]
        await page.fill(f"#level-{lamp}", "42")
        asked: list[str] = []

        async def confirm(dialog: Any) -> None:
            asked.append(dialog.message)
            await dialog.accept()

        page.on("dialog", confirm)
        await page.click(f'button.lamp-cmd[data-action="dim"][data-device="{lamp}"]')
        row = page.locator(f'#lamp-result-rows tr[data-lamp="{lamp}"]')
        await row.wait_for(timeout=15_000)
        assert asked and lamp in asked[0] and "42" in asked[0]  # the operator confirmed what would happen
        assert "成功 success" in await row.locator("td.status").inner_text()
        assert await row.locator("td.readback").inner_text() == "42 %"  # read back from the controller
        assert d.sim.device(lamp).values()["dim_level"] == 42.0  # the simulated lamp holds it
        await page.screenshot(path=str(tmp_path / "lamp-dimmed.png"), full_page=True)

        # a declined confirmation sends nothing
        page.remove_listener("dialog", confirm)
        page.once("dialog", lambda dialog: dialog.dismiss())
        writes = len(d.sim.device(LAMPS[1]).history.writes)
        await page.click(f'button.lamp-cmd[data-action="off"][data-circuit="{CIRCUIT}"]')
        await page.wait_for_timeout(500)
        assert len(d.sim.device(LAMPS[1]).history.writes) == writes
        await browser.close()
        assert (tmp_path / "lamp-dimmed.png").stat().st_size > 10_000


async def test_statistics_page_exports_a_valid_xlsx(tmp_path: Path) -> None:
    _need_chromium()
    import asyncio
    import io
    import time

    import openpyxl
    import uvicorn
    from playwright.async_api import async_playwright

    from console.cli import server_config
    from tests.support.console_demo import build_demo
    from tests.support.services import free_port

    env = build_demo(str(tmp_path / "demo"), now=time.time())
    for i in range(8):  # more than the demo's six hotline reports at one address
        env.case_store.create_reported("S0111", f"下穿积水 {i}", 30.25101, 120.13201, "灵隐路下穿",
                                       grid="330106001001", now=time.time() - i * 3600 - 60)
    port = free_port()
    server = uvicorn.Server(server_config(env.app, "127.0.0.1", port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.05)
        async with async_playwright() as pw:
            browser = await _browser(pw)
            page = await browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            await _login(page, base, "sup")
            await page.goto(f"{base}/stats")
            await page.select_option('select[name="days"]', "7")
            await page.click("#period-btn")
            await page.wait_for_url(lambda url: "days=7" in url)
            assert await page.locator("#heat circle").count() >= 2  # the underpass and the demo's reports
            assert await page.locator("#trend-day polyline").get_attribute("points")
            await page.screenshot(path=str(tmp_path / "stats.png"), full_page=True)
            async with page.expect_download() as dl_info:
                await page.click("#export-all")
            download = await dl_info.value
            path = tmp_path / download.suggested_filename
            await download.save_as(path)
            assert path.suffix == ".xlsx"
            wb = openpyxl.load_workbook(io.BytesIO(path.read_bytes()))
            assert "按日 By day" in wb.sheetnames and "高发地点 High-incidence places" in wb.sheetnames
            top = list(wb["高发地点 High-incidence places"].iter_rows(values_only=True))[1]
            assert top[1] == "灵隐路下穿" and top[3] == 8
            days = list(wb["按日 By day"].iter_rows(values_only=True))[1:]
            assert len(days) == 7 and sum(n for _d, n in days) == 8 + 8  # these and the demo's eight
            async with page.expect_download() as dl_info:
                await page.click('a.export[data-table="by_unit"][data-format="csv"]')
            csv_path = tmp_path / (await dl_info.value).suggested_filename
            await (await dl_info.value).save_as(csv_path)
            assert csv_path.read_bytes().startswith(b"\xef\xbb\xbf")
            assert "lingyin-street" in csv_path.read_text("utf-8-sig")
            await browser.close()
    finally:
        server.should_exit = True
        await task
        env.close()
