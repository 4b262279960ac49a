"""Lamp control from the console API through a real broker and edge agent to simulated lamps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.console_demo import PASSWORD
from tests.support.lamps import CIRCUIT, GHOST_GW, LAMPS, lamp_district, wait_for
from tests.support.services import Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def _token(c: httpx.AsyncClient, user: str) -> dict[str, str]:
    r = await c.post("/api/v1/auth/login", json={"username": user, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def _cmd(c: httpx.AsyncClient, h: dict[str, str], **body: Any) -> httpx.Response:
    return await c.post("/api/v1/lamps/commands", headers=h, json={"confirm": True, **body}, timeout=30)


async def test_dim_one_lamp_and_switch_a_circuit(broker: Mosquitto, tmp_path: Path) -> None:
    async with lamp_district(broker, tmp_path) as d, httpx.AsyncClient(base_url=d.base) as c:
        duty = await _token(c, "duty")
        r = await _cmd(c, duty, action="dim", level_pct=37, device=LAMPS[1])
        assert r.status_code == 200, r.text
        res = r.json()
        assert res["summary"] == {"success": 1, "refused": 0, "timed_out": 0}
        (one,) = res["results"]
        assert one["device"] == LAMPS[1] and one["status"] == "success"
        assert one["readback"] == {"dim_level_pct": 37.0}  # what the agent read back from the device
        assert d.sim.device(LAMPS[1]).values()["dim_level"] == 37.0  # and the simulated lamp holds it
        assert d.sim.device(LAMPS[0]).values()["dim_level"] == 100.0  # its neighbours untouched

        r = await _cmd(c, duty, action="off", circuit=CIRCUIT)
        assert r.status_code == 200, r.text
        assert [(o["device"], o["status"], o["readback"]) for o in r.json()["results"]] == [
            (lamp, "success", {"relay": 0}) for lamp in LAMPS]
        assert all(d.sim.device(lamp).values()["relay"] == 0.0 for lamp in LAMPS)

        # the telemetry that follows shows it on the lamp page too
        await wait_for(lambda: any(r.device == LAMPS[1] and r.metric == "dim_level" and r.value == 37.0
                                   for r in d.ts.latest()), "dim level in telemetry")
        page = await c.get("/lamps", headers=duty)
        assert page.status_code == 200 and CIRCUIT in page.text and "37 %" in page.text

        trail = d.audit.entries(f"circuit:{CIRCUIT}") + d.audit.entries(f"device:{LAMPS[1]}")
        assert {(e.actor, e.action, e.result, e.detail.get("success")) for e in trail} == {
            ("duty", "lamp.off", 202, None), ("duty", "lamp.off", 200, 3),  # intent, then outcome
            ("duty", "lamp.dim", 202, None), ("duty", "lamp.dim", 200, 1)}
        assert next(e for e in trail if e.result == 202 and e.action == "lamp.off").detail["lamps"] == list(LAMPS)


async def test_refused_and_timed_out_results(broker: Mosquitto, tmp_path: Path) -> None:
    async with lamp_district(broker, tmp_path, command_timeout_s=2.0) as d, \
            httpx.AsyncClient(base_url=d.base) as c:
        sup = await _token(c, "sup")
        d.sim.device(LAMPS[2]).faults.set(absent=True)  # the controller stops answering on the bus
        r = await _cmd(c, sup, action="on", circuit=CIRCUIT)
        by_lamp = {o["device"]: o for o in r.json()["results"]}
        assert by_lamp[LAMPS[0]]["status"] == "success" and by_lamp[LAMPS[0]]["readback"] == {"relay": 1}
        assert by_lamp[LAMPS[2]]["status"] == "refused"
        assert by_lamp[LAMPS[2]]["error"] in ("no_response", "device_quarantined")
        # a gateway that is registered but whose agent is not running never answers
        r = await _cmd(c, sup, action="dim", level_pct=20, device="lamp-0901")
        (ghost,) = r.json()["results"]
        assert (ghost["gateway"], ghost["status"], ghost["error"]) == (GHOST_GW, "timed_out", "timeout")
        assert r.json()["summary"] == {"success": 0, "refused": 0, "timed_out": 1}


async def test_lamp_command_refusals(broker: Mosquitto, tmp_path: Path) -> None:
    async with lamp_district(broker, tmp_path) as d, httpx.AsyncClient(base_url=d.base) as c:
        duty = await _token(c, "duty")
        assert (await _cmd(c, await _token(c, "handler-a"), action="on", device=LAMPS[0])).status_code == 403
        assert (await _cmd(c, await _token(c, "admin"), action="on", device=LAMPS[0])).status_code == 403
        r = await c.post("/api/v1/lamps/commands", headers=duty, json={"action": "on", "device": LAMPS[0]})
        assert r.status_code == 422 and "confirm" in r.text  # not confirmed: nothing sent
        assert (await _cmd(c, duty, action="dim", device=LAMPS[0])).status_code == 422  # no level
        assert (await _cmd(c, duty, action="dim", level_pct=101, device=LAMPS[0])).status_code == 422
        assert (await _cmd(c, duty, action="on", device=LAMPS[0], circuit=CIRCUIT)).status_code == 422
        assert (await _cmd(c, duty, action="on", device="wl-0000")).status_code == 404
        assert (await _cmd(c, duty, action="on", circuit="c-none")).status_code == 404
        assert d.sim.device(LAMPS[0]).history.writes == []  # nothing reached a lamp
        denied = [e for e in d.audit.entries(limit=50) if e.result == 403]
        assert {e.actor for e in denied} == {"handler-a", "admin"}
