"""Site profiles end to end over real Modbus (RTU on a pty pair, TCP on loopback).

Five site-written profiles (configs/sim/site-profiles) that differ from the library in every
dimension: tables (FC3 lamp, coil, register bits), types (u64, f64, i32, string, little-endian
bytes), word orders, scales and offsets, derived values, read-once and slow fields, a
current-record block with a 16-bit counter, a ring numbered from 0, an edge on a status bit,
counter wrap-around and a reboot. The simulator serves them from the same files; its clock is
frozen and stepped, so expected values are exactly the scenario's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from contracts.reading import Event, Quality, Reading
from firmware_sim.config import SimConfig
from firmware_sim.gwconfig import field_config
from firmware_sim.server import SimServer
from gateway.bus import Bus
from gateway.plan import record_blocks
from gateway.poller import DevicePoller, build_pollers

pytestmark = [pytest.mark.wire, pytest.mark.timeout(120)]

SITE = Path(__file__).resolve().parents[2] / "configs" / "sim" / "site-profiles"
T0 = 1_764_547_200.0


def site_config(transport: str) -> SimConfig:
    bus: dict[str, Any] = {"id": "b1", "gateway": "gw-site", "transport": transport, "baudrate": 38400}
    devices: list[dict[str, Any]] = [
        {"id": "g-1", "profile": str(SITE / "acme_gauge.yaml"), "bus": "b1", "unit": 1,
         "scenario": {"role": "water_gauge", "peak_m": 0.5, "storm_start_s": 0, "rise_s": 100},
         "texts": {"serial": "AC1234"}},
        {"id": "c-1", "profile": str(SITE / "acme_cover.yaml"), "bus": "b1", "unit": 2,
         "scenario": {"role": "manhole", "lift": {"lift_s": 50, "tilt_deg": 30}}},
        {"id": "l-1", "profile": str(SITE / "acme_lamp.yaml"), "bus": "b1", "unit": 3, "circuit": "c1",
         "scenario": {"role": "lamp", "schedule": "always_on"}},
        {"id": "w-1", "profile": str(SITE / "acme_wim.yaml"), "bus": "b1", "unit": 4,
         "scenario": {"role": "wim", "mean_headway_s": 6, "counter_at_start": 65530}},
        {"id": "w-2", "profile": str(SITE / "acme_ring.yaml"), "bus": "b1", "unit": 5,
         "scenario": {"role": "wim", "mean_headway_s": 2, "counter_at_start": 65528}},
        {"id": "x-1", "profile": str(SITE / "acme_lamp.yaml"), "bus": "b1", "unit": 6, "circuit": "c2",
         "scenario": {"role": "ranges", "period_s": 120}},
    ]
    return SimConfig.model_validate({"seed": 11, "clock": {"speed": 0}, "storm": {"start_s": 0},
                                     "buses": [bus], "devices": devices})


class Site:
    def __init__(self, sim: SimServer, buses: list[Bus], pollers: dict[str, DevicePoller]) -> None:
        self.sim, self.buses, self.pollers = sim, buses, pollers

    def now(self) -> float:
        return T0 + self.sim.clock.now()

    async def poll(self, device: str) -> tuple[dict[str, Reading], list[Event]]:
        res = await self.pollers[device].poll(self.now())
        return {r.metric: r for r in res.readings}, res.events


@pytest.fixture(params=["rtu", "tcp"])
async def site(request: pytest.FixtureRequest) -> AsyncIterator[Site]:
    cfg = site_config(request.param)
    sim = SimServer(cfg, start_unix=T0)
    await sim.start()
    buses, pollers = build_pollers(field_config(cfg, "gw-site", sim.bus_endpoints, timeout_ms=300, retries=1))
    for b in buses:
        await b.open()
    try:
        yield Site(sim, buses, pollers)
    finally:
        for b in buses:
            await b.close()
        await sim.stop()


async def test_site_profiles_decode_like_the_simulator(site: Site) -> None:
    site.sim.clock.advance(60.0)
    for dev in ("g-1", "c-1", "l-1", "x-1"):
        got, _ = await site.poll(dev)
        want = site.sim.device(dev).metrics()
        assert set(want) <= set(got), (dev, set(want) - set(got))
        for metric, value in want.items():
            assert got[metric].value == pytest.approx(value, abs=0.011, rel=1e-5), (dev, metric)
            assert got[metric].quality is Quality.GOOD, (dev, metric)
    gauge = site.pollers["g-1"]
    assert gauge.texts["serial"] == "AC1234"
    got, _ = await site.poll("g-1")
    assert got["depth"].value > 0.05  # derived at the gateway from read-once install height and datum


def _record_reads(poller: DevicePoller, events: list[Event]) -> int:
    layout = poller.profile.records
    if layout is None or layout.style != "ring" or not events:
        return 0
    first = int(events[0].id.split("-")[0])
    return len(record_blocks(layout, first, len(events), poller.profile.max_block_registers))


async def test_requests_per_poll_follow_the_plan(site: Site) -> None:
    site.sim.clock.advance(30.0)  # the ring scale has filled its 8 slots
    for dev, poller in site.pollers.items():
        before = site.sim.device(dev).requests
        res = await poller.poll(site.now())
        first = site.sim.device(dev).requests - before
        assert first == sum(len(g.blocks) for g in poller.groups) + _record_reads(poller, res.events), dev
        site.sim.clock.advance(1.0)
        before = site.sim.device(dev).requests
        res = await poller.poll(site.now())  # slow and read-once groups are not due again
        assert site.sim.device(dev).requests - before == len(poller.blocks) + _record_reads(poller, res.events), dev


async def test_read_once_and_slow_fields_and_reboot(site: Site) -> None:
    got, _ = await site.poll("g-1")
    assert {"install_height", "battery"} <= set(got)
    site.sim.clock.advance(10.0)
    got, _ = await site.poll("g-1")
    assert "install_height" not in got and "battery" not in got
    assert "depth" in got  # still derived: install height and datum are remembered
    site.sim.clock.advance(55.0)
    got, _ = await site.poll("g-1")
    assert "battery" in got and "install_height" not in got
    site.sim.device("g-1").reboot()
    site.sim.clock.advance(5.0)
    got, _ = await site.poll("g-1")
    assert "install_height" in got  # uptime went back: read-once fields read again


async def test_edge_on_a_status_bit(site: Site) -> None:
    site.sim.clock.advance(10.0)
    _, events = await site.poll("c-1")
    assert events == []
    site.sim.clock.advance(45.0)  # lifted at 50 s
    got, events = await site.poll("c-1")
    assert got["cover_open"].value == 1.0
    assert [e.kind for e in events] == ["cover_open"]
    site.sim.clock.advance(5.0)
    assert (await site.poll("c-1"))[1] == []


async def test_commands_write_and_read_back_through_the_site_map(site: Site) -> None:
    lamp = site.pollers["l-1"]
    assert await lamp.command("lamp_off", {}, site.now()) == 0.0
    got, _ = await site.poll("l-1")
    assert got["relay"].value == 0.0
    assert await lamp.write_field("dim_level", 40.0, site.now()) == 40.0  # the cloud's name, the site's field
    assert await lamp.command("dim", {"level_pct": 55}, site.now()) == 55.0
    assert await lamp.command("lamp_on", {}, site.now()) == 1.0
    got, _ = await site.poll("l-1")
    assert got["relay"].value == 1.0 and got["dim_level"].value == 55.0


def _vehicles(site: Site, device: str, t0: float, t1: float) -> list[Event]:
    return site.sim.scenario.vehicle_events(device, t0, t1, site.sim.device(device).history)


async def _run(site: Site, device: str, seconds: float, step_s: float) -> list[Event]:
    events: list[Event] = []
    t = 0.0
    while t < seconds:
        site.sim.clock.advance(step_s)
        t += step_s
        events += (await site.poll(device))[1]
    return events


def _check_same_vehicles(got: list[Event], want: list[Event], lost: int) -> None:
    assert len({e.id for e in got}) == len(got), "an event was published twice"
    assert len(got) + lost == len(want)
    by_ts = {round(e.ts): e for e in got}
    for w in want:
        e = by_ts.get(round(w.ts))
        if e is None:
            continue
        assert e.body["axles"] == w.body["axles"] and e.body["lane"] == w.body["lane"]
        assert e.body["gross_kg"] == pytest.approx(w.body["gross_kg"], abs=10)
        assert e.body["axle_kg"] == pytest.approx(w.body["axle_kg"], abs=10)
        assert e.body["spacing_m"] == pytest.approx(w.body["spacing_m"], abs=0.051)


async def _vehicles_run(site: Site, device: str, step_s: float, seconds: tuple[float, float]) -> tuple[
        list[Event], list[Event]]:
    """Poll a scale through a wrap, reboot it, poll on: (events published, vehicles it should have given).

    The gateway starts 30 s in: of the vehicles before its first poll it can only get those the
    scale still holds (its ring's slots, or the one current record).
    """
    layout = site.pollers[device].profile.records
    assert layout is not None
    site.sim.clock.advance(30.0)
    events = (await site.poll(device))[1]
    held = _vehicles(site, device, -1.0, site.sim.clock.now())[-layout.slots:]
    t_start = site.sim.clock.now()
    events += await _run(site, device, seconds[0], step_s)
    site.sim.device(device).reboot()
    events += await _run(site, device, seconds[1], step_s)
    want = held + _vehicles(site, device, t_start, site.sim.clock.now())
    return events, want


async def test_current_record_block_across_a_16_bit_wrap_and_a_reboot(site: Site) -> None:
    events, want = await _vehicles_run(site, "w-1", 0.5, (90.0, 60.0))
    assert 65530 + len(_vehicles(site, "w-1", -1.0, 120.0)) > 65536  # the 16-bit sequence wrapped
    lost = site.pollers["w-1"].health.records_lost
    _check_same_vehicles(events, want, lost)
    assert lost <= 2  # only vehicles closer together than one poll


async def test_ring_numbered_from_zero_across_a_wrap_and_a_reboot(site: Site) -> None:
    events, want = await _vehicles_run(site, "w-2", 4.0, (40.0, 20.0))
    assert site.sim.device("w-2").history.boots  # rebooted once
    assert 65528 + len(_vehicles(site, "w-2", -1.0, 70.0)) > 65536  # the counter wrapped
    _check_same_vehicles(events, want, 0)
    assert site.pollers["w-2"].health.records_lost == 0
