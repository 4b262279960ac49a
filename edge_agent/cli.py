"""``citywatch agent -c gateway.yaml [--check]``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from edge_agent.config import AgentConfig, load_agent_config

log = logging.getLogger(__name__)


def args_agent(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="gateway config file (YAML)")
    parser.add_argument("--check", action="store_true",
                        help="validate the config and run the bus planner, touching no hardware or network")
    parser.add_argument("--max-utilisation", type=float, default=0.8,
                        help="bus share the planner allows (default 0.8, leaving room for retries and writes)")


def overbooked(cfg: AgentConfig, max_utilisation: float, show: bool) -> list[str]:
    """Buses the planner refuses (normal or storm intervals); prints the plan when ``show``."""
    from gateway.budget import plan_config, render
    from gateway.config import FieldConfig

    budgets = plan_config(FieldConfig(buses=cfg.buses, devices=cfg.devices), max_utilisation)
    bad = [b.bus for b in budgets if b.overbooked]
    if show or bad:
        sys.stdout.write(render(budgets))
    return bad


def check(cfg: AgentConfig, max_utilisation: float) -> int:
    """Planner verdict for ``--check``: 0 when every bus fits at storm intervals, 1 otherwise."""
    bad = overbooked(cfg, max_utilisation, show=True)
    if bad:
        print(f"config refused: bus(es) {', '.join(bad)} overbooked", file=sys.stderr)
        return 1
    print(f"config ok: gateway {cfg.gateway.id}, {len(cfg.devices)} devices on {len(cfg.buses)} buses, "
          f"broker {cfg.mqtt.url}, outbox {cfg.outbox.path} (budget {cfg.outbox.budget_bytes} bytes, "
          f"policy {cfg.outbox.overflow_policy})")
    return 0


async def _run(cfg: AgentConfig) -> None:
    from edge_agent.agent import Agent

    agent = Agent(cfg)
    task = asyncio.create_task(agent.run(), name="agent")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    log.info("agent stopped")


def cmd_agent(args: argparse.Namespace) -> int:
    cfg = load_agent_config(args.config)
    if args.check:
        return check(cfg, args.max_utilisation)
    bad = overbooked(cfg, args.max_utilisation, show=False)
    if bad:  # storm mode must fit the bus: refuse to start rather than lose polls in a flood
        print(f"citywatch agent: bus(es) {', '.join(bad)} overbooked; see the plan above", file=sys.stderr)
        return 1
    asyncio.run(_run(cfg))
    return 0
