"""Regenerate the README screenshots (``make screenshots``): the demo console in Debian Chromium.

The test suite never writes tracked files; this command does, on purpose. It seeds the demo
district (console.demo: real SQLite stores in a temporary folder), serves the console on a
free local port, logs in as each role and saves the pages to ``docs/screenshots/`` (or
``--out``). Needs /usr/bin/chromium (or ``--chromium``) and a CJK font (fonts-wqy-microhei or
fonts-noto-cjk) so the Chinese labels render.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import time
from pathlib import Path

import uvicorn

from console.cli import server_config
from console.config import load_console_config
from console.demo import PASSWORD, build_demo

ROOT = Path(__file__).resolve().parents[1]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
# (user, page path, file name, viewport, full page)
SHOTS = (
    ("duty", "/overview", "overview.png", DESKTOP, True),
    ("duty", "/lamps", "lamps.png", DESKTOP, True),
    ("sup", "/stats", "stats.png", DESKTOP, True),
    ("sup", "/cases/{case}", "case.png", DESKTOP, True),
    ("handler-a", "/cases", "worklist-phone.png", PHONE, False),
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def capture(out: Path, chromium: str) -> list[Path]:
    from playwright.async_api import async_playwright

    saved: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        cloud = load_console_config(ROOT / "configs" / "cloud.example.yaml")  # the demo's lamp schedules
        env = build_demo(tmp, now=time.time(), n_devices=24, lighting=cloud.lighting)
        case_id = env.demo.case_ids["lingyin-street"][0]
        port = _free_port()
        server = uvicorn.Server(server_config(env.app, "127.0.0.1", port, log_level="warning",
                                              timeout_graceful_shutdown=2))
        task = asyncio.create_task(server.serve())
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(400):
                if server.started:
                    break
                await asyncio.sleep(0.05)
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=chromium,
                                                   args=["--headless", "--no-sandbox", "--disable-gpu"])
                for user, path, name, viewport, full in SHOTS:
                    ctx = await browser.new_context(viewport=viewport, locale="zh-CN")  # type: ignore[arg-type]
                    page = await ctx.new_page()
                    await page.goto(f"{base}/login")
                    await page.fill("#username", user)
                    await page.fill("#password", PASSWORD)
                    await page.click("#login-btn")
                    await page.wait_for_url(lambda url: "/login" not in url)
                    await page.goto(base + path.format(case=case_id))
                    await page.wait_for_load_state("load")
                    await page.wait_for_timeout(1000)  # charts are drawn by script after load (SSE never idles)
                    target = out / name
                    await page.screenshot(path=str(target), full_page=full)
                    saved.append(target)
                    await ctx.close()
                await browser.close()
        finally:
            server.should_exit = True
            await task
            env.close()
    return saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(capture(args.out, args.chromium)):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
