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

from console.demo import PASSWORD
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
