"""In-process smoke tests: the simulator served over Modbus TCP and over pty pairs (RTU).

pymodbus is the independent second implementation here: its client checks the simulator's
framing (and so, indirectly, the gateway's, which the other wire tests pair with the simulator).
Bounded: every read has a sub-second timeout and the whole file runs in a few seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import termios
import time
import tty
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from firmware_sim.config import SimConfig, parse_sim_config
from firmware_sim.frames import crc_ok, rtu_adu
from firmware_sim.gwconfig import write_gateway_configs
from firmware_sim.server import SimServer
from gateway import profiles
from gateway.config import load_field_config
from gateway.registers import RegisterKind, decode_block

pytestmark = [pytest.mark.wire, pytest.mark.timeout(60)]

CFG = """
seed: 5
clock: {speed: 0, start_local_hour: 21.0}
buses:
  - {id: rtu-a, gateway: gw-a, transport: rtu, baudrate: 19200}
  - {id: tcp-a, gateway: gw-a, transport: tcp}
  - {id: tcp-b, gateway: gw-b, transport: tcp}
devices:
  - {id: wl-1, profile: water_gauge, bus: rtu-a, unit: 1, scenario: {role: water_gauge, peak_m: 0.4, rise_s: 600}}
  - {id: mh-1, profile: manhole, bus: rtu-a, unit: 2, scenario: {role: manhole}}
  - {id: lamp-1, profile: lamp, bus: tcp-a, unit: 1, circuit: c1, scenario: {role: lamp}}
  - {id: wim-1, profile: wim, bus: tcp-b, unit: 7, scenario: {role: wim}}
"""


@pytest.fixture
def cfg() -> SimConfig:
    return parse_sim_config(CFG, "t.yaml")


@pytest.fixture
async def sim(cfg: SimConfig) -> AsyncIterator[SimServer]:
    async with SimServer(cfg, start_unix=1_764_547_200.0) as server:
        yield server


async def tcp_client(sim: SimServer, device: str) -> tuple[AsyncModbusTcpClient, int]:
    host, port, unit = sim.tcp_endpoints[device]
    client = AsyncModbusTcpClient(host, port=port, timeout=0.5, retries=0)
    assert await client.connect()
    return client, unit


async def test_tcp_read_and_write_lamp(sim: SimServer) -> None:
    client, unit = await tcp_client(sim, "lamp-1")
    try:
        rr = await client.read_input_registers(0, count=14, device_id=unit)
        assert not rr.isError()
        lamp = profiles.get("lamp")
        values = decode_block(lamp, RegisterKind.INPUT_REGISTER, 0, rr.registers)
        assert values["power"].value == pytest.approx(120.0)  # 21:00, lamp on
        assert values["voltage"].value == pytest.approx(225.0, abs=3.0)
        wr = await client.write_coil(0, False, device_id=unit)
        assert not wr.isError()
        sim.clock.advance(1.0)
        rr = await client.read_input_registers(0, count=6, device_id=unit)
        assert decode_block(lamp, RegisterKind.INPUT_REGISTER, 0, rr.registers)["current"].value == 0.0
        coils = await client.read_coils(0, count=1, device_id=unit)
        assert coils.bits[0] is False
        sim.device("lamp-1").faults.set(exception=4)
        rr = await client.read_input_registers(0, count=2, device_id=unit)
        assert rr.isError() and rr.exception_code == 4
    finally:
        client.close()


async def test_tcp_no_answer_times_out_and_recovers(sim: SimServer) -> None:
    client, unit = await tcp_client(sim, "wim-1")
    try:
        sim.device("wim-1").faults.set(no_answer=True)
        t0 = time.monotonic()
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(0, count=2, device_id=unit)
        assert time.monotonic() - t0 < 2.0
        sim.device("wim-1").faults.clear()
        client.close()
        client, unit = await tcp_client(sim, "wim-1")
        rr = await client.read_input_registers(0, count=2, device_id=unit)
        assert not rr.isError()
    finally:
        client.close()


async def test_rtu_over_pty_with_pymodbus(sim: SimServer) -> None:
    path, unit = sim.pty_paths["wl-1"]
    sim.clock.advance(660.0)  # the peak
    client = AsyncModbusSerialClient(path, baudrate=19200, parity="N", timeout=0.5, retries=0)
    assert await client.connect()
    try:
        rr = await client.read_input_registers(0, count=5, device_id=unit)
        assert not rr.isError()
        depth = decode_block(profiles.get("water_gauge"), RegisterKind.INPUT_REGISTER, 0, rr.registers)["depth"]
        assert depth.value == pytest.approx(0.4, abs=0.005)
        path2, unit2 = sim.pty_paths["mh-1"]
        assert path2 == path and unit2 == 2  # one bus, two unit ids
        bits = await client.read_discrete_inputs(0, count=2, device_id=unit2)
        assert bits.bits[:2] == [False, False]
        sim.device("wl-1").faults.set(exception=2)
        rr = await client.read_input_registers(0, count=5, device_id=unit)
        assert rr.isError() and rr.exception_code == 2
    finally:
        client.close()


class RawPort:
    """The gateway side of a pty without a Modbus library, to see exact bytes and their timing."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd, termios.TCSANOW)

    async def transact(self, request: bytes, wait_s: float = 0.4) -> list[tuple[float, bytes]]:
        os.write(self.fd, request)
        t0 = time.monotonic()
        chunks: list[tuple[float, bytes]] = []
        while time.monotonic() - t0 < wait_s:
            try:
                data = os.read(self.fd, 512)
            except BlockingIOError:
                data = b""
            if data:
                chunks.append((time.monotonic() - t0, data))
            await asyncio.sleep(0.002)
        return chunks

    def close(self) -> None:
        os.close(self.fd)


READ_WL = rtu_adu(1, bytes.fromhex("0400000005"))
DEMO = Path(__file__).resolve().parents[2] / "configs" / "sim" / "demo.yaml"


async def test_rtu_split_frame_with_long_gaps(sim: SimServer) -> None:
    port = RawPort(sim.pty_paths["wl-1"][0])
    try:
        sim.device("wl-1").faults.set(split_gap_ms=60, split_pieces=3)
        chunks = await port.transact(READ_WL)
        assert len(chunks) == 3
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(chunks)]
        assert all(g > 0.02 for g in gaps)  # far longer than t3.5 (2 ms at 19200 baud)
        whole = b"".join(c for _t, c in chunks)
        assert len(whole) == 3 + 10 + 2 and crc_ok(whole)
    finally:
        port.close()


async def test_rtu_crc_garbage_and_silence(sim: SimServer) -> None:
    port = RawPort(sim.pty_paths["wl-1"][0])
    dev = sim.device("wl-1")
    try:
        dev.faults.set(crc_corrupt=True)
        reply = b"".join(c for _t, c in await port.transact(READ_WL, 0.15))
        assert len(reply) == 15 and not crc_ok(reply)
        dev.faults.set(crc_corrupt=False, garbage_prefix=True)
        reply = b"".join(c for _t, c in await port.transact(READ_WL, 0.15))
        assert crc_ok(reply[3:]) and not crc_ok(reply)
        dev.faults.clear()
        # request garbage in front of a valid frame: the slave resynchronises and answers
        reply = b"".join(c for _t, c in await port.transact(b"\xff\x00" + READ_WL, 0.15))
        assert crc_ok(reply) and reply[:2] == b"\x01\x04"
        # a unit nobody has: silence
        assert await port.transact(rtu_adu(9, bytes.fromhex("0400000001")), 0.1) == []
        dev.faults.set(absent=True)
        assert await port.transact(READ_WL, 0.1) == []
        dev.faults.clear()
        dev.reboot(down_s=0.0)
        assert await port.transact(READ_WL, 0.15) != []
        assert sim.bus("rtu-a").stats.garbage_bytes >= 2
    finally:
        port.close()


async def test_unplug_and_replug(sim: SimServer, tmp_path: Path) -> None:
    bus = sim.rtu_bus("rtu-a")
    with pytest.raises(TypeError):
        sim.rtu_bus("tcp-a")
    old = bus.path
    bus.unplug()
    assert "wl-1" not in sim.pty_paths
    new = bus.replug()
    assert sim.pty_paths["wl-1"] == (new, 1)
    port = RawPort(new)
    try:
        assert await port.transact(READ_WL, 0.15) != []
    finally:
        port.close()
    assert old != new or bus.spec.link is None


async def test_gateway_configs_match_the_simulator(sim: SimServer, cfg: SimConfig, tmp_path: Path) -> None:
    paths = write_gateway_configs(cfg, sim.bus_endpoints, tmp_path)
    assert set(paths) == {"gw-a", "gw-b"}
    field = load_field_config(paths["gw-a"])
    assert {b.id for b in field.buses} == {"rtu-a", "tcp-a"}
    rtu = field.bus("rtu-a")
    assert rtu.serial == sim.pty_paths["wl-1"][0] and rtu.baud == 19200 and rtu.parity == "N"
    tcp = field.bus("tcp-a")
    assert (tcp.host, tcp.port, 1) == sim.tcp_endpoints["lamp-1"]
    lamp = next(d for d in field.devices if d.id == "lamp-1")
    assert lamp.circuit == "c1" and lamp.profile == "lamp" and lamp.unit_id == 1


async def test_field_config_from_the_running_server(sim: SimServer) -> None:
    fc = sim.field_config("gw-b")
    assert [b.id for b in fc.buses] == ["tcp-b"]
    assert [(d.id, d.unit_id) for d in fc.devices] == [("wim-1", 7)]
    assert fc.bus("tcp-b").port == sim.tcp_endpoints["wim-1"][1]


async def test_tcp_bus_goes_down_and_comes_back_on_the_same_port(sim: SimServer) -> None:
    bus = sim.tcp_bus("tcp-b")
    host, port, _unit = sim.tcp_endpoints["wim-1"]
    await bus.go_down()
    with pytest.raises(OSError):
        _r, w = await asyncio.open_connection(host, port)
        w.close()
    await bus.come_up()
    client, unit = await tcp_client(sim, "wim-1")
    try:
        assert not (await client.read_input_registers(0, count=2, device_id=unit)).isError()
    finally:
        client.close()


async def test_rtu_wire_time_emulation(cfg: SimConfig) -> None:
    from firmware_sim.server import wire_time_s

    # FC4 x5 at 9600 8N1: 8 + 15 characters = 24 ms, plus t3.5 (4 ms), plus 10 ms turnaround
    assert wire_time_s(23, 9600) == pytest.approx(23 * 10 / 9600 + 3.5 * 11 / 9600)
    slow = cfg.model_copy(
        update={"buses": [cfg.buses[0].model_copy(update={"baudrate": 9600, "wire_time": True, "turnaround_ms": 10})]}
    )
    slow = SimConfig.model_validate({**slow.model_dump(), "devices": [cfg.devices[0].model_dump()]})
    async with SimServer(slow) as sim:
        port = RawPort(sim.pty_paths["wl-1"][0])
        try:
            chunks = await port.transact(READ_WL, 0.2)
            assert chunks and 0.030 < chunks[0][0] < 0.2
        finally:
            port.close()


async def test_whole_demo_district_decodes_through_the_gateway_poller() -> None:
    """Drift check: every demo device, read by the gateway's own poller, equals the scenario."""
    from firmware_sim.config import load_sim_config
    from gateway.poller import build_pollers

    cfg = load_sim_config(DEMO)
    async with SimServer(cfg, speed=0.0) as sim:
        sim.clock.advance(1500.0)  # storm, a lifted cover, an outage, trucks
        checked = 0
        for gw in sim.gateways:
            buses, pollers = build_pollers(sim.field_config(gw))
            for b in buses:
                await b.open()
            try:
                for device, poller in pollers.items():
                    res = await poller.poll(time.time())
                    got = {r.metric: r for r in res.readings}
                    for metric, value in sim.device(device).metrics().items():
                        assert got[metric].value == pytest.approx(value, abs=0.011, rel=1e-5), (device, metric)
                        assert got[metric].quality == 0, (device, metric)
                        checked += 1
            finally:
                for b in buses:
                    await b.close()
        assert checked > 600
