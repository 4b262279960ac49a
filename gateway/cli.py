"""Technician tools: ``citywatch plan``, ``citywatch probe``, ``citywatch scan``.

Imported only when one of them is chosen; keeps to pydantic/pymodbus (no FastAPI, psycopg).
"""

from __future__ import annotations

import argparse
import sys


def args_plan(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, metavar="FILE", help="gateway config (YAML)")
    parser.add_argument("--max-utilisation", type=float, default=0.8, metavar="FRACTION",
                        help="largest share of bus time polling may use, normal and storm (default 0.8)")


def cmd_plan(args: argparse.Namespace) -> int:
    from gateway.budget import plan_config, render
    from gateway.config import load_field_config

    cfg = load_field_config(args.config)
    if not 0 < args.max_utilisation <= 1:
        print("citywatch plan: --max-utilisation must be in (0, 1]", file=sys.stderr)
        return 2
    budgets = plan_config(cfg, args.max_utilisation)
    print(render(budgets), end="")
    bad = [b for b in budgets if b.overbooked]
    if bad:
        for b in bad:
            print(f"citywatch plan: bus {b.bus} is overbooked: {b.utilisation * 100:.0f} % normal, "
                  f"{b.storm_utilisation * 100:.0f} % storm > {b.max_utilisation * 100:.0f} %; "
                  f"shortest common interval {b.shortest_interval_s:.3f} s", file=sys.stderr)
        return 1
    return 0
