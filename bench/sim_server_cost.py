"""Server CPU cost per Modbus TCP transaction: firmware_sim vs the pymodbus server (baseline).

Each server runs in its own process on loopback; one sync pymodbus client does N reads after a
warm-up. The figure is server CPU µs per transaction (from /proc/<pid>/stat) and tx/s; the
baseline is pymodbus's ``ModbusTcpServer`` + ``SimDevice`` serving the same read in the same run
(docs/performance.md §5a: ~200 µs/tx). firmware_sim recomputes the register bank from the
scenario on every request, so its cost depends on the device type: a water gauge (7 holding
registers) and a lamp (14 input registers, exact energy integral) are measured.

Run: .venv/bin/python bench/sim_server_cost.py     (bounded: 3 rounds x 3 servers x 4000 transactions)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time

N = 4000
ROUNDS = 3
WARMUP = 100

SIM_CFG = """
seed: 1
clock: {speed: 1.0, start_local_hour: 21.0}
buses: [{id: b, gateway: gw, transport: tcp, port: %d}]
devices:
  - {id: wl-1, profile: water_gauge_i32, bus: b, unit: 1, scenario: {role: water_gauge, peak_m: 0.3, rise_s: 60}}
  - {id: lamp-1, profile: lamp, bus: b, unit: 2, circuit: c1, scenario: {role: lamp}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_sim(port: int) -> None:
    from firmware_sim import SimServer, parse_sim_config

    async def main() -> None:
        async with SimServer(parse_sim_config(SIM_CFG % port, "bench")):
            await asyncio.Event().wait()

    asyncio.run(main())


def serve_pymodbus(port: int) -> None:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    async def main() -> None:
        dev = SimDevice(id=1, simdata=[SimData(address=0, count=100, values=1234, datatype=DataType.REGISTERS)])
        srv = ModbusTcpServer(dev, address=("127.0.0.1", port))
        await srv.serve_forever()

    asyncio.run(main())


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(mode: str, unit: int, fc: int, count: int) -> dict[str, float]:
    from pymodbus.client import ModbusTcpClient

    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, mode, str(port)])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{mode} server did not start") from None
                time.sleep(0.05)
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
        assert client.connect()
        read = client.read_holding_registers if fc == 3 else client.read_input_registers
        for _ in range(WARMUP):
            rr = read(0, count=count, device_id=unit)
        assert not rr.isError(), rr
        c0 = cpu_s(proc.pid)
        t0 = time.perf_counter()
        for _ in range(N):
            rr = read(0, count=count, device_id=unit)
        t1 = time.perf_counter()
        c1 = cpu_s(proc.pid)
        assert not rr.isError() and len(rr.registers) == count
        client.close()
        return {"tx_per_s": round(N / (t1 - t0)), "server_cpu_us_per_tx": round(1e6 * (c1 - c0) / N, 1)}
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    logging.disable(logging.WARNING)
    runs: dict[str, list[dict[str, float]]] = {"base": [], "gauge": [], "lamp": []}
    for _ in range(ROUNDS):  # interleaved, median per server: the machine is shared and noisy
        runs["base"].append(measure("serve-pymodbus", 1, 3, 7))
        runs["gauge"].append(measure("serve-sim", 1, 3, 7))
        runs["lamp"].append(measure("serve-sim", 2, 4, 14))

    def median(name: str) -> dict[str, float]:
        return sorted(runs[name], key=lambda r: r["server_cpu_us_per_tx"])[ROUNDS // 2]

    base, gauge, lamp = median("base"), median("gauge"), median("lamp")
    print(f"pymodbus server (baseline), 7 HR : {base['tx_per_s']:6d} tx/s  {base['server_cpu_us_per_tx']:7.1f} us/tx")
    print(f"firmware_sim water gauge,   7 HR : {gauge['tx_per_s']:6d} tx/s  {gauge['server_cpu_us_per_tx']:7.1f} us/tx")
    print(f"firmware_sim lamp,         14 IR : {lamp['tx_per_s']:6d} tx/s  {lamp['server_cpu_us_per_tx']:7.1f} us/tx")
    ratio_gauge = gauge["server_cpu_us_per_tx"] / base["server_cpu_us_per_tx"]
    ratio_lamp = lamp["server_cpu_us_per_tx"] / base["server_cpu_us_per_tx"]
    print(f"server CPU per tx vs pymodbus: gauge x{ratio_gauge:.2f}, lamp x{ratio_lamp:.2f}")
    print(
        json.dumps(
            {
                "bench": "sim_server_cost",
                "n": N,
                "rounds": ROUNDS,
                "baseline_pymodbus": base,
                "sim_water_gauge": gauge,
                "sim_lamp": lamp,
                "cpu_ratio_gauge_vs_pymodbus": round(ratio_gauge, 2),
                "cpu_ratio_lamp_vs_pymodbus": round(ratio_lamp, 2),
            }
        )
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve-sim":
        serve_sim(int(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "serve-pymodbus":
        serve_pymodbus(int(sys.argv[2]))
    else:
        main()
