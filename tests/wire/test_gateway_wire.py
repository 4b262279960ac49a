"""Gateway <-> simulator over real Modbus: RTU on a pty pair and TCP on loopback.

Every device type on both transports, every injected fault, the dead-slave cadence
check and an unplugged USB-serial adapter. The simulator's clock is frozen (speed 0) so
the values it serves are exactly the scenario's and tests step time explicitly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from contracts.reading import Quality, Reading
from firmware_sim.config import SimConfig
from firmware_sim.gwconfig import field_config
from firmware_sim.server import RtuBus, SimServer
from gateway.bus import Bus
from gateway.config import DeviceConfig, FieldConfig
from gateway.errors import BadFrame, BusError, ConfigFault, NoResponse, Quarantined, SlaveBusy
from gateway.poller import DevicePoller, build_pollers

pytestmark = [pytest.mark.wire, pytest.mark.timeout(60)]

TRANSPORTS = ["rtu", "tcp"]


def sim_config(transport: str, link: str | None = None, extra: list[dict[str, Any]] | None = None) -> SimConfig:
    bus: dict[str, Any] = {"id": "b1", "gateway": "gw-test", "transport": transport, "baudrate": 38400}
    if link is not None:
        bus["link"] = link
    devices: list[dict[str, Any]] = [
        {"id": "wl-1", "profile": "water_gauge", "bus": "b1", "unit": 1,
         "scenario": {"role": "water_gauge", "peak_m": 0.4, "storm_start_s": 0, "rise_s": 100}},
        {"id": "wl-2", "profile": "water_gauge_i32", "bus": "b1", "unit": 2, "word_order": "CDAB",
         "scenario": {"role": "water_gauge", "peak_m": 0.6, "storm_start_s": 0, "rise_s": 100}},
        {"id": "mh-1", "profile": "manhole", "bus": "b1", "unit": 3,
         "scenario": {"role": "manhole", "lift": {"lift_s": 50, "tilt_deg": 30}}},
        {"id": "lamp-1", "profile": "lamp", "bus": "b1", "unit": 4, "word_order": "DCBA", "circuit": "c1",
         "scenario": {"role": "lamp", "schedule": "always_on"}},
        {"id": "wim-1", "profile": "wim", "bus": "b1", "unit": 5,
         "scenario": {"role": "wim", "mean_headway_s": 5}},
        *(extra or []),
    ]
    return SimConfig.model_validate({"seed": 7, "clock": {"speed": 0}, "storm": {"start_s": 0},
                                     "buses": [bus], "devices": devices})


def gateway_config(cfg: SimConfig, sim: SimServer, timeout_ms: int = 150, retries: int = 1,
                   **device_overrides: Any) -> FieldConfig:
    fc = field_config(cfg, "gw-test", sim.bus_endpoints, timeout_ms=timeout_ms, retries=retries)
    devices = tuple(d.model_copy(update=device_overrides) for d in fc.devices)
    return FieldConfig(buses=fc.buses, devices=devices)


class Rig:
    def __init__(self, cfg: SimConfig, sim: SimServer, buses: list[Bus], pollers: dict[str, DevicePoller]) -> None:
        self.cfg, self.sim, self.buses, self.pollers = cfg, sim, buses, pollers

    async def poll(self, device: str) -> tuple[dict[str, Reading], list[Any]]:
        res = await self.pollers[device].poll(time.time())
        return {r.metric: r for r in res.readings}, res.events


async def start_rig(transport: str, tmp_path: Path | None = None, link: bool = False,
                    extra: list[dict[str, Any]] | None = None, **gw: Any) -> tuple[SimServer, Rig]:
    cfg = sim_config(transport, str(tmp_path / "ttyUSB0") if link and tmp_path else None, extra)
    sim = SimServer(cfg, start_unix=1_764_547_200.0)
    await sim.start()
    buses, pollers = build_pollers(gateway_config(cfg, sim, **gw))
    for b in buses:
        await b.open()
    return sim, Rig(cfg, sim, buses, pollers)


@pytest.fixture(params=TRANSPORTS)
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    sim, r = await start_rig(request.param)
    try:
        yield r
    finally:
        for b in r.buses:
            await b.close()
        await sim.stop()


def expected(rig: Rig, device: str) -> dict[str, float]:
    return rig.sim.device(device).metrics()


# ------------------------------------------------------------------ every device type


async def test_every_device_type_decodes_like_the_simulator(rig: Rig) -> None:
    rig.sim.clock.advance(60.0)  # storm under way, cover lifted at 50 s
    for dev in ("wl-1", "wl-2", "mh-1", "lamp-1", "wim-1"):
        got, _events = await rig.poll(dev)
        want = expected(rig, dev)
        assert set(want) <= set(got), (dev, set(want) - set(got))
        for metric, value in want.items():
            assert got[metric].value == pytest.approx(value, abs=0.011, rel=1e-5), (dev, metric)
            assert got[metric].quality is Quality.GOOD, (dev, metric)
    depth, _ = await rig.poll("wl-1")
    assert depth["depth"].value > 0.05  # the storm really shows up


async def test_manhole_cover_event(rig: Rig) -> None:
    rig.sim.clock.advance(10.0)
    _, events = await rig.poll("mh-1")
    assert events == []
    rig.sim.clock.advance(45.0)  # lifted at 50 s
    got, events = await rig.poll("mh-1")
    assert got["cover_open"].value == 1.0
    assert [e.kind for e in events] == ["cover_open"]
    assert got["tilt"].value > 20


async def test_wim_vehicle_events_and_reboot(rig: Rig) -> None:
    poller = rig.pollers["wim-1"]
    await rig.poll("wim-1")
    seen: list[Any] = []
    for _ in range(6):
        rig.sim.clock.advance(10.0)
        _, events = await rig.poll("wim-1")
        seen += events
    want = rig.sim.scenario.wim_records("wim-1", rig.sim.clock.now(), rig.sim.device("wim-1").history)
    assert seen, "no vehicles in 60 s at a 5 s headway"
    assert [e.id for e in seen] == [f"{r.record_no}-{round(r.ts * 1000)}" for r in want][-len(seen):]
    assert len({e.id for e in seen}) == len(seen)
    last = want[-1]
    assert seen[-1].body == last.body() and seen[-1].ts == pytest.approx(last.ts)
    # the scale reboots: records restart at 1 and keep flowing, ids never repeat
    rig.sim.device("wim-1").reboot()
    after: list[Any] = []
    for _ in range(4):
        rig.sim.clock.advance(10.0)
        _, events = await rig.poll("wim-1")
        after += events
    assert after and int(after[0].id.split("-")[0]) == 1
    assert not {e.id for e in after} & {e.id for e in seen}
    assert poller.health.consecutive_failures == 0


async def test_lamp_write_and_read_back(rig: Rig) -> None:
    poller = rig.pollers["lamp-1"]
    assert await poller.write_field("dim_level", 40, time.time()) == 40
    assert await poller.write_field("relay", 0, time.time()) == 0
    got, _ = await rig.poll("lamp-1")
    assert got["dim_level"].value == 40 and got["relay"].value == 0
    assert got["current"].value == pytest.approx(0.0, abs=0.01)


# ------------------------------------------------------------------ faults


async def test_no_answer_then_recovery(rig: Rig) -> None:
    dev = rig.sim.device("wl-1")
    dev.faults.set(no_answer=True)
    with pytest.raises(NoResponse):
        await rig.poll("wl-1")
    got, _ = await rig.poll("lamp-1")  # bus-mate unaffected
    assert got["voltage"].quality is Quality.GOOD
    dev.faults.clear()
    got, _ = await rig.poll("wl-1")
    assert got["depth"].quality is Quality.GOOD


@pytest.mark.parametrize(("code", "error"), [(1, ConfigFault), (2, ConfigFault), (3, ConfigFault),
                                             (4, SlaveBusy), (6, SlaveBusy), (10, SlaveBusy), (11, SlaveBusy)])
async def test_exception_codes(rig: Rig, code: int, error: type[Exception]) -> None:
    rig.sim.device("wl-1").faults.set(exception=code)
    n_before = rig.sim.device("wl-1").requests
    with pytest.raises(error):
        await rig.poll("wl-1")
    assert rig.sim.device("wl-1").requests == n_before + 1  # never hot-retried
    with pytest.raises(Quarantined):
        await rig.poll("wl-1")


async def test_crc_corruption_publishes_nothing(rig: Rig) -> None:
    dev = rig.sim.device("lamp-1")
    dev.faults.set(crc_corrupt=True)
    with pytest.raises((BadFrame, NoResponse)):
        await rig.poll("lamp-1")
    assert dev.requests == 2  # tried, retried once, then gave up
    # half the replies mangled: every value that does come through is right
    dev.faults.set(rate=0.5)
    good = 0
    for _ in range(12):
        try:
            got, _ = await rig.poll("lamp-1")
        except (BadFrame, NoResponse):
            continue
        except Quarantined:
            rig.pollers["lamp-1"].health.quarantined_until = None
            continue
        good += 1
        for metric, value in expected(rig, "lamp-1").items():
            assert got[metric].value == pytest.approx(value, rel=1e-5, abs=1e-3)
    assert good >= 3


async def test_split_frames_with_long_gaps(rig: Rig) -> None:
    dev = rig.sim.device("wl-1")
    dev.faults.set(split_gap_ms=30, split_pieces=4)  # 90 ms of gaps inside a 150 ms timeout
    got, _ = await rig.poll("wl-1")
    assert got["depth"].value == pytest.approx(expected(rig, "wl-1")["depth"], abs=1e-3)
    dev.faults.set(split_gap_ms=120, split_pieces=4)  # longer than the timeout: rejected, never misread
    with pytest.raises((NoResponse, BadFrame)):
        await rig.poll("wl-1")
    dev.faults.clear()
    await asyncio.sleep(0.5)  # let the late pieces arrive; they must not answer the next request
    got, _ = await rig.poll("wl-1")
    assert got["depth"].value == pytest.approx(expected(rig, "wl-1")["depth"], abs=1e-3)
    got, _ = await rig.poll("lamp-1")
    assert got["voltage"].value == pytest.approx(expected(rig, "lamp-1")["voltage"], rel=1e-5)


async def test_garbage_prefix_and_late_replies(rig: Rig) -> None:
    dev = rig.sim.device("wl-2")
    dev.faults.set(garbage_prefix=True, rate=0.5)
    for _ in range(6):
        try:
            got, _ = await rig.poll("wl-2")
        except (BadFrame, NoResponse):
            continue
        assert got["depth"].value == pytest.approx(expected(rig, "wl-2")["depth"], abs=1e-3)
    # a slave answering after the timeout: its late replies never answer another request
    lamp = rig.sim.device("lamp-1")
    lamp.faults.set(delay_ms=200)
    for _ in range(3):
        rig.pollers["lamp-1"].health.quarantined_until = None
        try:
            got, _ = await rig.poll("lamp-1")
        except (NoResponse, BadFrame):
            continue
        for metric, value in expected(rig, "lamp-1").items():
            assert got[metric].value == pytest.approx(value, rel=1e-5, abs=1e-3), metric
    lamp.faults.clear()
    dev.faults.clear()
    rig.pollers["wl-2"].health.quarantined_until = None
    rig.pollers["lamp-1"].health.quarantined_until = None
    for dev_id in ("wl-1", "wl-2", "mh-1", "lamp-1"):
        got, _ = await rig.poll(dev_id)
        for metric, value in expected(rig, dev_id).items():
            assert got[metric].value == pytest.approx(value, abs=1e-3), (dev_id, metric)


async def test_stuck_value_garbage_and_spikes(rig: Rig) -> None:
    dev = rig.sim.device("wl-1")
    rig.sim.clock.advance(30.0)
    dev.faults.set(stuck=True)
    first, _ = await rig.poll("wl-1")
    rig.sim.clock.advance(30.0)
    second, _ = await rig.poll("wl-1")
    assert second["depth"].value == first["depth"].value  # passed through; staleness is the rules' job
    dev.faults.set(stuck=False, raw_garbage=True)
    got, _ = await rig.poll("wl-1")
    assert got["depth"].quality is Quality.OUT_OF_RANGE and got["distance"].quality is Quality.OUT_OF_RANGE
    dev.faults.set(raw_garbage=False, spike_rate=1.0, spike_field="depth", spike_magnitude=10.0)
    got, _ = await rig.poll("wl-1")
    assert got["depth"].quality is not Quality.GOOD  # a 10 m spike on a 3 m gauge is flagged


async def test_slave_disappears_and_comes_back(rig: Rig) -> None:
    poller = rig.pollers["wl-1"]
    dev = rig.sim.device("wl-1")
    dev.disappear()
    t = time.time()
    for i in range(3):
        with pytest.raises(NoResponse):
            await poller.poll(t + i)
    assert poller.health.quarantined_until is not None
    with pytest.raises(Quarantined):
        await poller.poll(t + 3)
    dev.reappear()
    res = await poller.poll(poller.health.quarantined_until + 0.001)
    assert res.readings and poller.health.consecutive_failures == 0


# ------------------------------------------------------------------ cadence with a dead slave


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_dead_slave_does_not_stall_bus_mates(transport: str) -> None:
    """Mates polled every 1 s keep their cadence (each read within 10 % of its interval)."""
    # worst case for a mate: the dead slave's two 40 ms attempts interleave with its reads (< 10 % of 1 s)
    sim, r = await start_rig(transport, timeout_ms=40, retries=1)
    try:
        sim.device("wl-1").faults.set(absent=True)
        # a scheduler staggers devices; the dead one (every 0.3 s) keeps colliding with its mates
        interval = {"wl-1": 0.3, "wl-2": 1.0, "mh-1": 1.0, "lamp-1": 1.0, "wim-1": 1.0}
        phase = {"wl-1": 0.0, "wl-2": 0.2, "mh-1": 0.4, "lamp-1": 0.6, "wim-1": 0.8}
        stamps: dict[str, list[float]] = {k: [] for k in interval}
        for dev in ("wl-2", "mh-1", "lamp-1", "wim-1"):  # first-read costs (port open, WIM counter) before timing
            await r.pollers[dev].poll(time.time())
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.05

        async def run(dev: str) -> None:
            k = 0
            while True:
                due = t0 + phase[dev] + k * interval[dev]
                if due > t0 + 5.0:
                    return
                await asyncio.sleep(max(0.0, due - loop.time()))
                k += 1
                try:
                    await r.pollers[dev].poll(time.time())
                except (NoResponse, Quarantined):
                    continue
                stamps[dev].append(loop.time())

        async with asyncio.TaskGroup() as tg:
            for dev in interval:
                tg.create_task(run(dev))
        assert stamps["wl-1"] == []
        for dev in ("wl-2", "mh-1", "lamp-1", "wim-1"):
            gaps = [b - a for a, b in zip(stamps[dev], stamps[dev][1:], strict=False)]
            assert len(gaps) >= 4, dev
            assert all(0.9 <= g / interval[dev] <= 1.1 for g in gaps), (dev, gaps)
        assert r.pollers["wl-1"].health.quarantined_until is not None
    finally:
        for b in r.buses:
            await b.close()
        await sim.stop()


# ------------------------------------------------------------------ USB-serial adapter unplugged


async def test_unplugged_serial_port_is_reopened_with_backoff(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    sim, r = await start_rig("rtu", tmp_path, link=True)
    try:
        caplog.set_level(logging.INFO, logger="gateway.bus")
        bus = r.buses[0]
        got, _ = await r.poll("wl-1")
        assert got["depth"].quality is Quality.GOOD
        sim_bus = sim.bus("b1")
        assert isinstance(sim_bus, RtuBus)
        sim_bus.unplug()
        errors = 0
        loop = asyncio.get_running_loop()
        end = loop.time() + 1.0
        while loop.time() < end:  # an agent hammering the bus must not turn into an exception loop
            try:
                await r.poll("wl-1")
            except BusError:
                errors += 1
            await asyncio.sleep(0.01)
        assert errors > 10
        assert bus.reopens == 0 and not bus.is_up
        sim_bus.replug()
        deadline = loop.time() + 5.0
        while True:
            try:
                got, _ = await r.poll("mh-1")
                break
            except BusError:
                assert loop.time() < deadline, "bus never reopened"
                await asyncio.sleep(0.05)
        assert bus.reopens == 1 and bus.is_up
        assert got["tilt"].quality is Quality.GOOD
        downs = [m for m in caplog.messages if " down: " in m]
        assert len(downs) == 1, downs  # logged on the transition, not on every failed request
        assert r.pollers["wl-1"].health.quarantined_until is None  # a bus failure is not the device's
    finally:
        for b in r.buses:
            await b.close()
        await sim.stop()


async def test_device_config_fixture_consistency() -> None:
    """The simulator-generated gateway config validates with the gateway's own rules."""
    cfg = sim_config("tcp")
    assert all(isinstance(d, DeviceConfig) for d in field_config(cfg, "gw-test", {"b1": "127.0.0.1:1502"}).devices)


# ------------------------------------------------------------------ technician tools


async def _citywatch(*argv: str) -> tuple[int, str, str]:
    import sys

    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "citywatch", *argv,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_probe_and_scan_cli(transport: str, tmp_path: Path) -> None:
    from firmware_sim.gwconfig import write_gateway_configs

    cfg = sim_config(transport)
    async with SimServer(cfg, start_unix=1_764_547_200.0) as sim:
        gw_file = write_gateway_configs(cfg, sim.bus_endpoints, tmp_path)["gw-test"]
        rc, out, err = await _citywatch("probe", "-c", str(gw_file), "--device", "lamp-1")
        voltage = sim.device("lamp-1").metrics()["voltage"]
        assert rc == 0, err
        assert f"= {voltage:.7g} V" in out and f"*DCBA {voltage:.7g}" in out  # the configured word order
        where = sim.bus_endpoints["b1"]
        bus_args = (["--host", where.rsplit(":", 1)[0], "--port", where.rsplit(":", 1)[1]] if transport == "tcp"
                    else ["--serial", where, "--baud", "38400", "--parity", "N"])
        rc, out, err = await _citywatch("probe", *bus_args, "--unit", "4", "--profile", "lamp")
        assert rc == 0, err
        # the device is DCBA, the profile says CDAB: the side-by-side column shows the right value
        assert f"DCBA {voltage:.7g}" in out
        assert out.count("word orders:") == 6  # five float32 fields and run_hours
        rc, out, err = await _citywatch("probe", *bus_args, "--unit", "4", "--profile", "lamp", "--word-order", "DCBA")
        assert rc == 0 and f"= {voltage:.7g} V" in out and f"*DCBA {voltage:.7g}" in out
        rc, out, err = await _citywatch("probe", *bus_args, "--unit", "2", "--kind", "holding_register",
                                        "--address", "0", "--count", "7")
        assert rc == 0, err
        assert out.count("holding_register") == 7
        rc, out, err = await _citywatch("probe", *bus_args, "--unit", "5", "--profile", "wim")
        assert rc == 0 and "record_count" in out
        rc, out, err = await _citywatch("scan", *bus_args, "--from", "1", "--to", "8", "--timeout-ms", "50")
        assert rc == 0, err
        assert "5 responding unit(s) in 1..8" in out
        assert "(8/8)" in err  # progress


async def test_tcp_connection_dropped_by_peer_is_reopened_at_once() -> None:
    sim, r = await start_rig("tcp")
    try:
        await r.poll("wl-1")
        sim_bus = sim.bus("b1")
        from firmware_sim.server import TcpBus

        assert isinstance(sim_bus, TcpBus)
        await sim_bus.close_connections()  # the concentrator reboots / drops idle connections
        await asyncio.sleep(0.05)
        got, _ = await r.poll("wl-1")  # no error: reconnected and re-sent once
        assert got["depth"].quality is Quality.GOOD
        assert r.buses[0].is_up
    finally:
        for b in r.buses:
            await b.close()
        await sim.stop()


async def test_tcp_endpoint_down_backs_off_without_a_loop() -> None:
    sim, r = await start_rig("tcp")
    try:
        await r.poll("wl-1")
        await sim.stop()  # the whole endpoint is gone
        errors = 0
        for _ in range(30):
            try:
                await r.poll("wl-1")
            except BusError:
                errors += 1
        assert errors == 30
        assert r.buses[0].down_reason is not None
        assert r.pollers["wl-1"].health.quarantined_until is None
    finally:
        for b in r.buses:
            await b.close()
        await sim.stop()
