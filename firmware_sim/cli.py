"""``citywatch sim``: serve the simulated district until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys

from firmware_sim.config import SimConfig, load_sim_config
from firmware_sim.gwconfig import write_gateway_configs
from firmware_sim.server import SimServer


def args_sim(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", default="configs/sim/demo.yaml", help="simulator config (YAML)")
    parser.add_argument("--speed", type=float, default=None, help="simulated s per wall s (overrides the config)")
    parser.add_argument(
        "--gateway-configs",
        metavar="DIR",
        default=None,
        help="write one matching gateway config per simulated gateway into DIR",
    )
    parser.add_argument("--json", action="store_true", help="print endpoints as one JSON object instead of a table")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many wall seconds")


def cmd_sim(args: argparse.Namespace) -> int:
    config = load_sim_config(args.config)
    return asyncio.run(_run(args, config))


async def _run(args: argparse.Namespace, config: SimConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with SimServer(config, speed=args.speed) as sim:
        paths = write_gateway_configs(config, sim.bus_endpoints, args.gateway_configs) if args.gateway_configs else {}
        if args.json:
            print(
                json.dumps(
                    {
                        "buses": sim.bus_endpoints,
                        "tcp": {k: list(v) for k, v in sim.tcp_endpoints.items()},
                        "rtu": {k: list(v) for k, v in sim.pty_paths.items()},
                        "gateway_configs": {k: str(v) for k, v in paths.items()},
                        "speed": sim.clock.speed,
                        "start_unix": sim.clock.start_unix,
                    }
                ),
                flush=True,
            )
        else:
            print(f"citywatch sim: {len(sim.devices)} devices on {len(sim.buses)} buses, speed x{sim.clock.speed:g}")
            for bus_id, where in sim.bus_endpoints.items():
                spec = config.bus(bus_id)
                units = sorted((d.unit, d.id) for d in config.devices if d.bus == bus_id)
                shown = ", ".join(f"{u}={i}" for u, i in units[:6]) + (" ..." if len(units) > 6 else "")
                print(f"  {spec.gateway:<16} {bus_id:<14} {spec.transport:<3} {where:<28} units {shown}")
            for gw, path in paths.items():
                print(f"  gateway config {gw}: {path}")
            print("Ctrl-C to stop.", flush=True)
        sys.stdout.flush()
        if args.duration is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.duration)
        else:
            await stop.wait()
    return 0
