"""Field-side bench: Modbus transactions per full poll (our read planner vs one request per
field, as ThingsBoard IoT Gateway reads by default), the RS-485 bus time that saves, and our
software time per transaction on Modbus TCP against a local simulator (vs the pymodbus
client doing the same reads in the same run).

Profiles as data: the demo district described by the YAML library against today's compiled
Python profiles (tests/support/compiled_profiles.py), measured in the same run: transactions
per poll (must be equal) and CPU per transaction of full polls (decode, quality, derived
values) over TCP, plus the pure decode path of every device. Report by exception: readings
published per readings sampled with the demo deadbands (configs/gateway.demo-deadbands.yaml)
in dry weather and in the storm, and whether any alarm of the default rules moved.

Run: .venv/bin/python bench/field.py     (loopback only, bounded: ~20 s; last line is JSON)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from firmware_sim.config import load_sim_config  # noqa: E402
from firmware_sim.gwconfig import field_config  # noqa: E402
from gateway import profiles  # noqa: E402
from gateway.budget import transaction_s  # noqa: E402
from gateway.bus import Bus  # noqa: E402
from gateway.config import BusConfig, DeviceConfig, FieldConfig  # noqa: E402
from gateway.plan import Block, plan_per_field, plan_profile  # noqa: E402
from gateway.poller import DevicePoller, readings_from  # noqa: E402
from gateway.registers import Profile, decode_block, encode_image  # noqa: E402
from tests.support import district  # noqa: E402
from tests.support.compiled_profiles import COMPILED  # noqa: E402

DEMO = ROOT / "configs" / "sim" / "demo.yaml"
ROUNDS = 50  # full polls of the lamp bus per client and repetition (bounded)
REPS = 3  # clients alternate; the best repetition counts (the machine is shared and noisy)


def demo_fields() -> FieldConfig:
    cfg = load_sim_config(DEMO)
    buses: list[BusConfig] = []
    devices: list[DeviceConfig] = []
    for gw in cfg.gateways():
        fake = {b.id: ("127.0.0.1:1502" if b.transport == "tcp" else f"/dev/ttyFAKE-{b.id}") for b in cfg.buses}
        fc = field_config(cfg, gw, fake)
        buses += fc.buses
        devices += fc.devices
    return FieldConfig(buses=tuple(buses), devices=tuple(devices))


def blocks_of(d: DeviceConfig, per_field: bool) -> tuple[Block, ...]:
    p = profiles.get(d.profile)
    return plan_per_field(p.polled_fields) if per_field else plan_profile(p, d.max_block_registers,
                                                                          d.max_gap_registers)


def planning_figures(fc: FieldConfig) -> dict[str, float]:
    planned = sum(len(blocks_of(d, False)) for d in fc.devices)
    per_field = sum(len(blocks_of(d, True)) for d in fc.devices)
    bus_planned = bus_per_field = 0.0
    for b in fc.buses:
        if b.type != "rtu":
            continue
        for d in fc.devices_on(b.id):
            bus_planned += sum(transaction_s(x, b) for x in blocks_of(d, False))
            bus_per_field += sum(transaction_s(x, b) for x in blocks_of(d, True))
    return {
        "devices": len(fc.devices),
        "transactions_planned": planned,
        "transactions_per_field": per_field,
        "transaction_ratio": per_field / planned,
        "rtu_bus_s_per_full_poll_planned": round(bus_planned, 4),
        "rtu_bus_s_per_full_poll_per_field": round(bus_per_field, 4),
    }


async def start_sim() -> tuple[asyncio.subprocess.Process, dict[str, object]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "citywatch", "sim", "-c", str(DEMO), "--json", "--duration", "100",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=str(ROOT), env=env)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    return proc, json.loads(line)


async def ours(host: str, port: int, work: list[tuple[int, Block]]) -> tuple[float, float, int]:
    cfg = BusConfig(id="bench", type="tcp", host=host, port=port, timeout_ms=2000, retries=0)
    async with Bus(cfg) as bus:
        for unit, b in work[:5]:  # warm up
            await bus.read(unit, b.kind, b.start, b.count)
        n = 0
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(ROUNDS):
            for unit, b in work:
                await bus.read(unit, b.kind, b.start, b.count)
                n += 1
        return time.perf_counter() - wall0, time.process_time() - cpu0, n


async def pymodbus_client(host: str, port: int, work: list[tuple[int, Block]]) -> tuple[float, float, int]:
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient(host, port=port, timeout=2, retries=0)
    await client.connect()
    calls = {
        1: client.read_coils, 2: client.read_discrete_inputs,
        3: client.read_holding_registers, 4: client.read_input_registers,
    }
    try:
        for unit, b in work[:5]:
            await calls[b.function_code](b.start, count=b.count, device_id=unit)
        n = 0
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(ROUNDS):
            for unit, b in work:
                rr = await calls[b.function_code](b.start, count=b.count, device_id=unit)
                if rr.isError():
                    raise RuntimeError(f"pymodbus read failed: {rr}")
                n += 1
        return time.perf_counter() - wall0, time.process_time() - cpu0, n
    finally:
        client.close()


async def software_figures(fc: FieldConfig) -> dict[str, float]:
    proc, info = await start_sim()
    try:
        buses = info["buses"]
        assert isinstance(buses, dict)
        host, port_s = str(buses["tcp-lamps-1"]).rsplit(":", 1)
        lamps = [d for d in fc.devices if d.bus == "tcp-lamps-1"]
        work = [(d.unit_id, b) for d in lamps for b in blocks_of(d, False)]
        work_pf = [(d.unit_id, b) for d in lamps for b in blocks_of(d, True)]
        runs: dict[str, list[tuple[float, float, int]]] = {"ours": [], "pymodbus": [], "per_field": []}
        for _ in range(REPS):
            runs["ours"].append(await ours(host, int(port_s), work))
            runs["pymodbus"].append(await pymodbus_client(host, int(port_s), work))
            runs["per_field"].append(await ours(host, int(port_s), work_pf))
        w_ours = min(r[0] for r in runs["ours"])
        c_ours = min(r[1] for r in runs["ours"])
        n_ours = runs["ours"][0][2]
        w_pm = min(r[0] for r in runs["pymodbus"])
        c_pm = min(r[1] for r in runs["pymodbus"])
        n_pm = runs["pymodbus"][0][2]
        w_pf = min(r[0] for r in runs["per_field"])
        n_pf = runs["per_field"][0][2]
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
    return {
        "tcp_transactions_per_run": n_ours,
        "repetitions": REPS,
        "ours_cpu_us_per_txn": round(c_ours / n_ours * 1e6, 1),
        "ours_wall_us_per_txn": round(w_ours / n_ours * 1e6, 1),
        "pymodbus_cpu_us_per_txn": round(c_pm / n_pm * 1e6, 1),
        "pymodbus_wall_us_per_txn": round(w_pm / n_pm * 1e6, 1),
        "cpu_ratio_pymodbus_over_ours": round((c_pm / n_pm) / (c_ours / n_ours), 2),
        "tcp_full_lamp_poll_ms_planned": round(w_ours / ROUNDS * 1e3, 2),
        "tcp_full_lamp_poll_ms_per_field": round(w_pf / ROUNDS * 1e3, 2),
        "tcp_poll_time_ratio": round((w_pf / ROUNDS) / (w_ours / ROUNDS), 2),
        "lamp_bus_devices": len(lamps),
        "lamp_txn_per_poll_planned": len(work),
        "lamp_txn_per_poll_per_field": n_pf // ROUNDS,
    }


COMPILED_BY_NAME = {p.name: p for p in COMPILED}
PROFILE_BUSES = ("tcp-covers-2", "tcp-lamps-1")  # manholes (derived values) and lamps (floats), over TCP


def profile_plan_figures(fc: FieldConfig) -> dict[str, float]:
    yaml_txn = compiled_txn = 0
    for d in fc.devices:
        yaml_txn += len(plan_profile(profiles.get(d.profile), d.max_block_registers, d.max_gap_registers))
        compiled_txn += len(plan_profile(COMPILED_BY_NAME[d.profile], d.max_block_registers, d.max_gap_registers))
    return {"yaml_transactions_per_poll": yaml_txn, "compiled_transactions_per_poll": compiled_txn}


async def poll_cpu(endpoints: dict[str, str], devices: list[DeviceConfig], compiled: bool) -> tuple[float, int]:
    """CPU seconds and transactions for ROUNDS full polls of ``devices`` through DevicePoller."""
    buses: dict[str, Bus] = {}
    for bus_id in PROFILE_BUSES:
        host, port = endpoints[bus_id].rsplit(":", 1)
        buses[bus_id] = Bus(BusConfig(id=bus_id, type="tcp", host=host, port=int(port), timeout_ms=2000, retries=0))
    pollers = [DevicePoller(d, buses[d.bus], COMPILED_BY_NAME[d.profile] if compiled else None) for d in devices]
    for b in buses.values():
        await b.open()
    try:
        for p in pollers:  # warm up (and the first poll's extra reads)
            await p.poll(time.time())
        n = 0
        cpu0 = time.process_time()
        for _ in range(ROUNDS):
            now = time.time()
            for p in pollers:
                res = await p.poll(now)
                n += len(p.blocks)
                assert res.readings
        return time.process_time() - cpu0, n
    finally:
        for b in buses.values():
            await b.close()


def decode_cpu(fc: FieldConfig, profile_of: dict[str, Profile], reps: int = 200) -> float:
    """The pure path per transaction for every demo device: decode blocks, qualities, derived values."""
    from firmware_sim.scenarios import Scenario

    sc = Scenario(load_sim_config(DEMO))
    work = []
    for d in fc.devices:
        p = profile_of[d.profile]
        image = encode_image(p, {k: v for k, v in sc.values(d.id, 600.0).items()}, d.word_order)
        blocks = plan_profile(p, d.max_block_registers, d.max_gap_registers)
        work.append((d, p, [(b, [image[b.kind].get(a, 0) for a in range(b.start, b.end)]) for b in blocks]))
    n = 0
    cpu0 = time.process_time()
    for _ in range(reps):
        for d, p, blocks in work:
            decoded = {}
            for b, words in blocks:
                decoded.update(decode_block(p, b.kind, b.start, words, d.word_order))
                n += 1
            readings_from(p, d.id, 0.0, decoded)
    return (time.process_time() - cpu0) / n


async def profile_cpu_figures(fc: FieldConfig) -> dict[str, float]:
    proc, info = await start_sim()
    devices = [d for d in fc.devices if d.bus in PROFILE_BUSES]
    try:
        endpoints = info["buses"]
        assert isinstance(endpoints, dict)
        ends = {k: str(v) for k, v in endpoints.items()}
        runs: dict[bool, list[tuple[float, int]]] = {False: [], True: []}
        for rep in range(REPS + 1):  # alternate (which goes first too), best of REPS each; rep 0 warms up
            for compiled in ((False, True) if rep % 2 else (True, False)):
                got = await poll_cpu(ends, devices, compiled)
                if rep:
                    runs[compiled].append(got)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
    yaml_us = min(c / n for c, n in runs[False]) * 1e6
    comp_us = min(c / n for c, n in runs[True]) * 1e6
    lib = {p.name: profiles.get(p.name) for p in COMPILED}
    dec: dict[bool, list[float]] = {False: [], True: []}
    decode_cpu(fc, lib, reps=20)  # warm up (first-call caches), not measured
    decode_cpu(fc, COMPILED_BY_NAME, reps=20)
    for _ in range(REPS):
        dec[False].append(decode_cpu(fc, lib))
        dec[True].append(decode_cpu(fc, COMPILED_BY_NAME))
    dec_yaml, dec_comp = min(dec[False]) * 1e6, min(dec[True]) * 1e6
    return {
        "profile_poll_devices": len(devices),
        "yaml_poll_cpu_us_per_txn": round(yaml_us, 1),
        "compiled_poll_cpu_us_per_txn": round(comp_us, 1),
        "poll_cpu_ratio_yaml_over_compiled": round(yaml_us / comp_us, 3),
        "yaml_decode_cpu_us_per_txn": round(dec_yaml, 2),
        "compiled_decode_cpu_us_per_txn": round(dec_comp, 2),
        "decode_cpu_ratio_yaml_over_compiled": round(dec_yaml / dec_comp, 3),
    }


def deadband_figures(until_s: float = 3600.0) -> dict[str, float]:
    out: dict[str, float] = {}
    storm = load_sim_config(DEMO)
    dry = storm.model_copy(update={"storm": storm.storm.model_copy(update={"start_s": 1e9})})
    for name, cfg in (("dry", dry), ("storm", storm)):
        polls, reports = district.sample(cfg, until_s)
        thinned = [(p.t, reports[p.readings[0].device].select(p.readings)) for p in polls if p.readings]
        sampled = sum(r.sampled for r in reports.values())
        published = sum(r.published for r in reports.values())
        out[f"{name}_readings_sampled"] = sampled
        out[f"{name}_readings_published"] = published
        out[f"{name}_published_per_sampled"] = round(published / sampled, 3)
        if name == "storm":
            full = district.raises(cfg, [(p.t, p.readings) for p in polls])
            interval = {(p.readings[0].device, round(p.t, 6)): p.interval_s for p in polls if p.readings}
            problems, worst = district.compare(full, district.raises(cfg, thinned), interval)
            out["storm_alarms_full_data"] = len(full)
            out["storm_alarms_missed_or_late"] = len(problems)
            out["storm_alarm_worst_delay_s"] = round(worst, 3)
    return out


def main() -> None:
    fc = demo_fields()
    plan = planning_figures(fc)
    print(f"demo district: {plan['devices']} devices")
    print(f"transactions per full poll: planner {plan['transactions_planned']}, one-per-field "
          f"{plan['transactions_per_field']} -> {plan['transaction_ratio']:.2f}x fewer with the planner")
    print(f"RS-485 bus time per full poll of the RTU buses: planner {plan['rtu_bus_s_per_full_poll_planned']} s, "
          f"one-per-field {plan['rtu_bus_s_per_full_poll_per_field']} s")
    soft = asyncio.run(software_figures(fc))
    print(f"Modbus TCP against the local simulator ({soft['tcp_transactions_per_run']} transactions, best of "
          f"{REPS}): "
          f"ours {soft['ours_cpu_us_per_txn']} us CPU / {soft['ours_wall_us_per_txn']} us wall per transaction; "
          f"pymodbus client {soft['pymodbus_cpu_us_per_txn']} us CPU / {soft['pymodbus_wall_us_per_txn']} us wall "
          f"(ratio {soft['cpu_ratio_pymodbus_over_ours']})")
    print(f"full poll of {soft['lamp_bus_devices']} lamps over TCP: planner {soft['tcp_full_lamp_poll_ms_planned']} ms "
          f"vs one-per-field {soft['tcp_full_lamp_poll_ms_per_field']} ms ({soft['tcp_poll_time_ratio']}x)")
    pp = profile_plan_figures(fc)
    print(f"YAML profiles vs compiled: {pp['yaml_transactions_per_poll']} vs {pp['compiled_transactions_per_poll']} "
          f"transactions per full poll of the district")
    pc = asyncio.run(profile_cpu_figures(fc))
    print(f"full polls over TCP ({pc['profile_poll_devices']} manholes and lamps, best of {REPS}): YAML "
          f"{pc['yaml_poll_cpu_us_per_txn']} us CPU per transaction vs compiled {pc['compiled_poll_cpu_us_per_txn']} "
          f"us (ratio {pc['poll_cpu_ratio_yaml_over_compiled']}); pure decode of every device: "
          f"{pc['yaml_decode_cpu_us_per_txn']} vs {pc['compiled_decode_cpu_us_per_txn']} us "
          f"(ratio {pc['decode_cpu_ratio_yaml_over_compiled']})")
    db = deadband_figures()
    print(f"report by exception, demo district, 1 h: dry weather {db['dry_readings_published']} of "
          f"{db['dry_readings_sampled']} readings published ({db['dry_published_per_sampled']}), storm "
          f"{db['storm_readings_published']} of {db['storm_readings_sampled']} ({db['storm_published_per_sampled']}); "
          f"storm alarms on full data {db['storm_alarms_full_data']}, missed or later than one poll "
          f"{db['storm_alarms_missed_or_late']} (worst delay {db['storm_alarm_worst_delay_s']} s)")
    print(json.dumps({"bench": "field", **plan, **soft, **pp, **pc, **db}))


if __name__ == "__main__":
    main()
