"""Astronomical switching end to end: the scheduler's steps reach simulated lamps through a real broker and agent."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from contracts.config import MqttSettings
from lighting.schedule import CircuitSchedule, DimStep, LightingSettings
from lighting.scheduler import LampScheduler
from tests.support.console_demo import PASSWORD
from tests.support.lamps import CIRCUIT, LAMPS, lamp_district, wait_for
from tests.support.services import Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
TZ = ZoneInfo("Asia/Shanghai")


def at(d: int, h: int, mi: int = 0) -> float:
    return dt.datetime(2026, 12, d, h, mi, tzinfo=TZ).timestamp()


async def test_night_of_a_circuit(broker: Mosquitto, tmp_path: Path) -> None:
    settings = LightingSettings(enabled=True, tick_s=0.2, catch_up_s=600, client_id="t-lighting", circuits={
        CIRCUIT: CircuitSchedule(on_after_dusk_min=10, off_before_dawn_min=10,
                                 night_steps=(DimStep(at="23:00", level_pct=50),))})
    clock = [at(21, 23, 0) + 30]  # the scheduler's clock: just after the 23:00 step
    async with lamp_district(broker, tmp_path, lighting=settings) as d:
        sched = LampScheduler(MqttSettings(url=broker.url), settings, clock=lambda: clock[0])
        stop = asyncio.Event()
        task = asyncio.create_task(sched.run(stop))
        try:
            values = {lamp: d.sim.device(lamp).values for lamp in LAMPS}
            await wait_for(lambda: all(v()["dim_level"] == 50.0 for v in values.values()), "dimmed at 23:00")
            assert all(v()["relay"] == 1.0 for v in values.values())  # the switch-on is long past: not resent
            clock[0] = at(22, 6, 45)  # the scheduler slept through the night's ticks until after dawn - 10 min
            await wait_for(lambda: all(v()["relay"] == 0.0 for v in values.values()), "off at dawn")
            clock[0] = at(22, 17, 20)  # the next evening: on and back to full light
            await wait_for(lambda: all(v()["relay"] == 1.0 and v()["dim_level"] == 100.0 for v in values.values()),
                           "on at dusk")
            await asyncio.sleep(0.5)
            assert sched.sent == 3 * 4 and sched.failed == 0  # dim; off; on + dim 100 — each lamp once
            async with httpx.AsyncClient(base_url=d.base) as c:
                r = await c.post("/api/v1/auth/login", json={"username": "handler-a", "password": PASSWORD})
                page = await c.get("/lamps", headers={"Authorization": f"Bearer {r.json()['access_token']}"})
            section = page.text.split(f'data-circuit="{CIRCUIT}"')[1].split("</p>")[0]
            assert "开 on" in section and "关 off" in section and "调光 dim 50 %" in section  # the next 24 h
            assert "云端下发 sent by the cloud" in section
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
