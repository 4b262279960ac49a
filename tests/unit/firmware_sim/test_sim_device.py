"""A simulated slave without sockets: register bank, writes, exceptions and faults."""

from __future__ import annotations

import pytest

from firmware_sim.clock import SimClock
from firmware_sim.config import SimConfig, parse_sim_config
from firmware_sim.device import SimDevice
from firmware_sim.frames import Request, decode_registers_response
from firmware_sim.scenarios import Scenario
from gateway import profiles
from gateway.profiles.wim import RECORDS, decode_record
from gateway.registers import RegisterKind, decode_block

CFG = """
seed: 3
clock: {speed: 0, start_local_hour: 20.0}
buses: [{id: b, gateway: gw, transport: tcp}]
devices:
  - {id: wl-1, profile: water_gauge, bus: b, unit: 1,
     scenario: {role: water_gauge, peak_m: 0.3, rise_s: 600}, storm: null}
  - {id: wl-2, profile: water_gauge_i32, bus: b, unit: 2, word_order: CDAB,
     scenario: {role: water_gauge, peak_m: 0.2, rise_s: 600}}
  - {id: lamp-1, profile: lamp, bus: b, unit: 3, circuit: c1, scenario: {role: lamp, rated_w: 100}}
  - {id: wim-1, profile: wim, bus: b, unit: 4, scenario: {role: wim, mean_headway_s: 5}}
  - {id: mh-1, profile: manhole, bus: b, unit: 5, scenario: {role: manhole},
     fault_windows: [{start_s: 100, end_s: 200, absent: true, reboot_at_end: true}]}
""".replace(", storm: null", "")


@pytest.fixture
def world() -> tuple[SimConfig, Scenario, SimClock]:
    cfg = parse_sim_config(CFG, "t.yaml")
    clock = SimClock(speed=0.0, start_unix=1_764_547_200.0)
    sc = Scenario(cfg, clock.start_unix)
    return cfg, sc, clock


def dev(world: tuple[SimConfig, Scenario, SimClock], device_id: str) -> SimDevice:
    cfg, sc, clock = world
    return SimDevice(cfg.device(device_id), sc, clock)


def read(d: SimDevice, fc: int, address: int, count: int) -> bytes:
    reply = d.handle(Request(d.unit, fc, address, count))
    assert reply.pdu is not None
    return reply.pdu


def test_registers_decode_with_the_gateway_profile(world: tuple[SimConfig, Scenario, SimClock]) -> None:
    d = dev(world, "wl-1")
    world[2].advance(660.0)  # storm start 60 + rise 600: the peak
    words = decode_registers_response(read(d, 4, 0, 5))
    decoded = decode_block(profiles.get("water_gauge"), RegisterKind.INPUT_REGISTER, 0, words)
    assert decoded["depth"].value == pytest.approx(0.3, abs=0.004)
    assert decoded["depth"].value == pytest.approx(d.values()["depth"], abs=0.0006)
    i32 = dev(world, "wl-2")
    words = decode_registers_response(read(i32, 3, 0, 7))
    hr = RegisterKind.HOLDING_REGISTER
    decoded = decode_block(profiles.get("water_gauge_i32"), hr, 0, words, i32.spec.word_order)
    assert decoded["depth"].value == pytest.approx(0.2, abs=0.004)


def test_illegal_addresses_and_firmware_limits(world: tuple[SimConfig, Scenario, SimClock]) -> None:
    d = dev(world, "wl-1")
    assert read(d, 4, 100, 2) == b"\x84\x02"  # nothing mapped there
    assert read(d, 4, 0, 10)[:2] == b"\x04\x14"  # holes after the map read as zeros (gap tolerated)
    i32 = dev(world, "wl-2")
    assert read(i32, 3, 0, 17) == b"\x83\x02"  # firmware refuses more than 16 registers
    assert read(i32, 3, 0, 8) == b"\x83\x02"  # ... and reads across unmapped registers


def test_lamp_relay_and_dim_writes(world: tuple[SimConfig, Scenario, SimClock]) -> None:
    d = dev(world, "lamp-1")  # 20:00: lamp on
    profile = profiles.get("lamp")

    def power() -> float:
        words = decode_registers_response(read(d, 4, 0, 14))
        return decode_block(profile, RegisterKind.INPUT_REGISTER, 0, words, d.spec.word_order)["power"].value

    assert power() == pytest.approx(100.0)
    reply = d.handle(Request(3, 6, 0, 1, (40,), raw_pdu=bytes.fromhex("060000 0028".replace(" ", ""))))
    assert reply.pdu == bytes.fromhex("0600000028")
    world[2].advance(1.0)
    assert power() == pytest.approx(40.0)
    assert d.handle(Request(3, 6, 0, 1, (140,), raw_pdu=b"")).pdu == b"\x86\x03"  # dim 140 % refused
    off = d.handle(Request(3, 5, 0, 1, (0,), raw_pdu=bytes.fromhex("0500000000")))
    assert off.pdu == bytes.fromhex("0500000000")
    world[2].advance(1.0)
    assert power() == 0.0
    assert read(d, 1, 0, 1) == b"\x01\x01\x00"
    assert d.handle(Request(3, 6, 5, 1, (1,), raw_pdu=b"")).pdu == b"\x86\x02"  # no such register


def test_wim_ring_holds_the_records(world: tuple[SimConfig, Scenario, SimClock]) -> None:
    d = dev(world, "wim-1")
    world[2].advance(300.0)
    count = decode_registers_response(read(d, 4, 0, 2))
    n = (count[0] << 16) | count[1]
    assert n == len(d.scenario.vehicles("wim-1", 300.0)) > 16
    start = RECORDS.base + RECORDS.slot_of(n) * RECORDS.stride
    rec = decode_record(decode_registers_response(read(d, 4, start, RECORDS.record_words)))
    v = d.scenario.vehicles("wim-1", 300.0)[-1]
    assert rec.record_no == n and rec.gross_kg == v.gross_kg and rec.lane == 1
    d.reboot()
    world[2].advance(0.001)
    assert decode_registers_response(read(d, 4, 0, 2)) == [0, 0]


def test_faults(world: tuple[SimConfig, Scenario, SimClock]) -> None:
    d = dev(world, "wl-1")
    req = Request(1, 4, 0, 2)
    d.faults.set(no_answer=True)
    assert d.handle(req).pdu is None
    d.faults.set(no_answer=False, exception=6)
    assert d.handle(req).pdu == b"\x84\x06"
    d.faults.clear()
    d.faults.set(crc_corrupt=True, split_gap_ms=50, garbage_prefix=True, delay_ms=5)
    r = d.handle(req)
    assert r.crc_corrupt and r.split_gap_s == 0.05 and r.garbage_prefix and r.delay_s == 0.005
    d.faults.clear()
    d.faults.set(raw_garbage=True)
    assert d.handle(req).pdu == b"\x04\x04\xff\xff\xff\xff"
    d.faults.clear()
    with pytest.raises(ValueError, match="unknown fault"):
        d.faults.set(explode=True)


def test_stuck_and_spikes(world: tuple[SimConfig, Scenario, SimClock]) -> None:
    d = dev(world, "wl-1")
    clock = world[2]
    clock.advance(300.0)
    d.faults.set(stuck=True)
    first = read(d, 4, 0, 1)
    clock.advance(200.0)
    assert read(d, 4, 0, 1) == first
    d.faults.set(stuck=False)
    assert read(d, 4, 0, 1) != first
    d.faults.set(spike_rate=1.0, spike_magnitude=1.5)
    spiked = decode_registers_response(read(d, 4, 0, 1))[0] / 1000
    assert spiked == pytest.approx(d.values()["depth"] + 1.5, abs=0.002)


def test_rate_makes_faults_intermittent_and_reproducible(world: tuple[SimConfig, Scenario, SimClock]) -> None:
    outcomes = []
    for _ in range(2):
        d = dev(world, "wl-1")
        d.faults.set(no_answer=True, rate=0.3)
        outcomes.append([d.handle(Request(1, 4, 0, 1)).pdu is None for _ in range(400)])
    assert outcomes[0] == outcomes[1]
    assert 0.2 < sum(outcomes[0]) / 400 < 0.4


def test_disappear_and_config_windows(world: tuple[SimConfig, Scenario, SimClock]) -> None:
    clock = world[2]
    mh = dev(world, "mh-1")
    req = Request(5, 4, 0, 5)
    assert mh.handle(req).pdu is not None
    clock.advance(150.0)
    assert mh.handle(req).pdu is None  # config window: gone from the bus
    clock.advance(100.0)
    assert mh.handle(req).pdu is not None
    assert mh.history.boots == [200.0]
    wim = dev(world, "wim-1")
    clock.advance(100.0)
    wim.disappear(for_s=50.0)
    assert wim.handle(Request(4, 4, 0, 2)).pdu is None
    clock.advance(60.0)
    pdu = wim.handle(Request(4, 4, 0, 2)).pdu
    assert pdu is not None
    count = decode_registers_response(pdu)[1]
    assert count == len(wim.scenario.vehicles("wim-1", 410.0)) - len(wim.scenario.vehicles("wim-1", 400.0))
    wim.disappear()
    assert wim.handle(Request(4, 4, 0, 2)).pdu is None
    wim.reappear(reboot=False)
    assert wim.handle(Request(4, 4, 0, 2)).pdu is not None
