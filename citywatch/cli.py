"""``citywatch`` entry point: one command, one subcommand per job.

Each subcommand lives in its package's ``cli`` module as a pair ``args_<name>(parser)`` and
``cmd_<name>(args) -> int``; it is imported only when chosen, so ``citywatch probe`` on a
gateway never imports FastAPI or psycopg.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from contracts.errors import CitywatchError

COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("citywatch.allinone", "run the whole district in one process on embedded defaults"),
    "cluster": ("citywatch.cluster", "run a local N-node NATS JetStream cluster with MQTT listeners"),
    "cluster-users": ("citywatch.cluster", "write a NATS accounts file: one user per gateway/service"),
    "sim": ("firmware_sim.cli", "serve simulated devices over Modbus TCP and RTU (pty pairs)"),
    "probe": ("gateway.cli", "read one device: raw registers, decoded values, all word orders"),
    "scan": ("gateway.cli", "find responding unit ids on a bus"),
    "plan": ("gateway.cli", "bus-time budget of a gateway config; refuses an overbooked bus"),
    "profile": ("gateway.cli", "check a device profile (planned reads, bus time) or draft one from a dump"),
    "agent": ("edge_agent.cli", "run the edge agent (poll, outbox, MQTT publish)"),
    "ingest": ("cloud_ingest.cli", "run the cloud ingester (MQTT -> time-series store)"),
    "retention": ("cloud_ingest.cli", "compact old readings, drop them past retention (rollups stay)"),
    "rules": ("rules.cli", "run the rule engine on live readings"),
    "backtest": ("rules.cli", "replay stored history through rule files"),
    "cases": ("case_bridge.cli", "run the case bridge (alarms -> city-management cases)"),
    "console": ("console.cli", "serve the web console and APIs"),
    "loadgen": ("citywatch.loadgen", "bounded load generator: N synthetic gateways x M devices, edge discipline"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="citywatch", description="City-management IoT telemetry.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    verbose = "-v" in argv[:1] or "--verbose" in argv[:1]
    if verbose:
        argv = argv[1:]
    if not argv or argv[0] not in COMMANDS:
        top.parse_args(argv)  # prints help or a usage error
        top.print_help()
        return 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"citywatch {name}", description=COMMANDS[name][1])
    getattr(module, f"args_{name.replace('-', '_')}")(parser)
    args = parser.parse_args(rest)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(getattr(module, f"cmd_{name.replace('-', '_')}")(args))
    except CitywatchError as exc:
        print(f"citywatch {name}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
