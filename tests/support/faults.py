"""Fault-test harness: run ``citywatch ingest`` or ``citywatch rules`` with fault injection.

    python -m tests.support.faults ingest --ack-delay-s 0.05 -c cloud.yaml

The product takes the fault as a constructor argument (``fault_ack_delay_s``: widen the
commit-to-acknowledge window so a kill -9 lands between them); only this harness sets it.
"""

from __future__ import annotations

import argparse
import logging
import sys

from cloud_ingest.cli import args_ingest, cmd_ingest
from rules.cli import args_rules, cmd_rules


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    service, rest = argv[0], argv[1:]
    parser = argparse.ArgumentParser(prog=f"tests.support.faults {service}")
    parser.add_argument("--ack-delay-s", type=float, default=0.0, help="sleep between commit and acknowledgement")
    {"ingest": args_ingest, "rules": args_rules}[service](parser)
    args = parser.parse_args(rest)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cmd = {"ingest": cmd_ingest, "rules": cmd_rules}[service]
    return cmd(args, fault_ack_delay_s=args.ack_delay_s)


if __name__ == "__main__":
    raise SystemExit(main())
