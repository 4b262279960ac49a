"""``citywatch rules`` (the live rule runner) and ``citywatch backtest`` (replay history through rule files)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from contracts.config import parse_cloud_section
from contracts.errors import ConfigError
from rules.backtest import BacktestReport, CasePolicy, backtest
from rules.config import RulesSettings, load_settings
from rules.specs import load_rules


def args_rules(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="cloud config file (sections mqtt and rules)")
    parser.add_argument("--rules", nargs="+", metavar="FILE", help="rule files (default: rules.files of the config)")


def cmd_rules(args: argparse.Namespace, *, fault_ack_delay_s: float = 0.0) -> int:
    """Run until a signal; ``fault_ack_delay_s`` is for the fault-test harness (tests/support/faults.py)."""
    from rules.runner import RuleRunner
    from rules.store import open_alarm_store

    mqtt_settings, cfg = load_settings(args.config)
    rules = load_rules(args.rules or cfg.files)
    store = open_alarm_store(cfg.store_url)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runner = RuleRunner(mqtt_settings, cfg, rules, store, fault_ack_delay_s=fault_ack_delay_s)
        print(f"citywatch rules: {len(rules)} rules, store {cfg.store_url}, broker {mqtt_settings.url}", flush=True)
        await runner.run(stop)

    try:
        asyncio.run(main())
    finally:
        store.close()
    return 0


# ---------------------------------------------------------------- backtest


def parse_time(text: str) -> float:
    """Unix seconds, or ISO 8601 (a date or a datetime; UTC when no offset is given)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (use ISO 8601 or Unix seconds)") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def args_backtest(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rules", required=True, nargs="+", metavar="FILE", help="rule file(s) A")
    parser.add_argument("--compare", nargs="+", metavar="FILE", help="rule file(s) B, shown side by side")
    parser.add_argument("--from", dest="start", required=True, type=parse_time, help="start (ISO 8601 or Unix s)")
    parser.add_argument("--to", dest="end", required=True, type=parse_time, help="end, exclusive")
    parser.add_argument("-c", "--config", help="cloud config: the ingest store URL is taken from ingest.store_url")
    parser.add_argument("--store", help="ingest store URL (overrides the config)")
    parser.add_argument("--devices", nargs="+", help="only these devices")
    parser.add_argument("--case-policy", help="module:function(transitions, registry) counting cases that would "
                        "open per rule (default: the case bridge's case_bridge.backtest:cases_would_open)")
    parser.add_argument("--cases-stay-open", action="store_true", help="nobody fixes anything: a clear does not "
                        "close its case (the bridge's policy with cases left open, as in a bridge nobody works on)")
    parser.add_argument("--case-store", help="case store URL: add the bridge's device registry (kept from birth "
                        "messages) to the ingest store's")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _store_url(args: argparse.Namespace) -> str:
    if args.store:
        return str(args.store)
    if args.config:
        from cloud_ingest.config import IngestSettings

        with open(args.config, encoding="utf-8") as fh:
            text = fh.read()
        return parse_cloud_section(text, "ingest", IngestSettings, args.config).store_url
    return "sqlite:///data/citywatch.db"


def _case_policy(spec: str | None, stay_open: bool = False) -> tuple[CasePolicy | None, str]:
    """The bridge's own alarm -> case policy by default; ``--case-policy module:function`` names another."""
    if spec is None:
        from case_bridge.backtest import cases_stay_open, cases_would_open

        if stay_open:
            return cases_stay_open, "case_bridge.backtest:cases_stay_open"
        return cases_would_open, "case_bridge.backtest:cases_would_open"
    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError("--case-policy", "", spec, f"cannot import it: {exc}") from exc
    return fn, spec


def _bridge_registry(url: str) -> dict[str, Any]:
    """The case bridge's device registry (:class:`case_bridge.registry.DeviceRegistry`), read only."""
    from case_bridge.db import connect

    db = connect(url)
    try:
        from case_bridge.registry import DeviceRegistry

        return dict(DeviceRegistry(db).known())
    finally:
        db.close()


class Progress:
    """A plain stderr progress bar (no dependency); silent when stderr is not a terminal unless forced."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label = label
        self.enabled = enabled
        self._last = -1

    def __call__(self, frac: float) -> None:
        if not self.enabled:
            return
        pct = int(frac * 100)
        if pct == self._last:
            return
        self._last = pct
        bar = "#" * (pct // 4) + "." * (25 - pct // 4)
        sys.stderr.write(f"\r{self.label:<12} [{bar}] {pct:3d}%")
        if pct >= 100:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _fmt_s(seconds: float) -> str:
    h, rem = divmod(round(seconds), 3600)
    return f"{h}h{rem // 60:02d}m"


def render(reports: Sequence[tuple[str, BacktestReport]]) -> str:
    """Side-by-side table: per rule and per severity, alarms raised, alarm time and cases."""
    names = sorted({n for _l, r in reports for n in r.rules})
    head = f"{'rule':<28}{'severity':<10}" + "".join(f"{lbl[:30]:>34}" for lbl, _r in reports)
    sub = " " * 38 + "".join(f"{'raised':>10}{'alarm time':>12}{'cases':>12}" for _ in reports)
    lines = [head, sub, "-" * len(sub)]
    for name in names:
        row = f"{name:<28}{'all':<10}"
        for _lbl, rep in reports:
            st = rep.rules.get(name)
            row += f"{st.raised:>10}{_fmt_s(st.alarm_time_s):>12}{st.cases_opened:>12}" if st else f"{'-':>34}"
        lines.append(row)
        sevs = sorted({s for _l, r in reports if name in r.rules for s in r.rules[name].by_severity})
        for sev in sevs:
            row = f"{'':<28}{sev:<10}"
            for _lbl, rep in reports:
                stats = rep.rules.get(name)
                s = stats.by_severity.get(sev) if stats else None
                row += f"{s.entered:>10}{_fmt_s(s.time_s):>12}{'':>12}" if s else f"{'-':>34}"
            lines.append(row)
    return "\n".join(lines)


def run_backtest(
    rule_sets: Sequence[tuple[str, Sequence[str]]],
    history: Any,
    case_policy: CasePolicy | None,
    progress: Callable[[float], None] | None = None,
) -> list[tuple[str, BacktestReport]]:
    out = []
    n = len(rule_sets)
    for i, (label, files) in enumerate(rule_sets):
        rules = load_rules(files)
        sub = None if progress is None else (lambda f, i=i: progress((i + f) / n))  # type: ignore[misc]
        out.append((label, backtest(rules, history, case_policy, sub)))
    return out


def cmd_backtest(args: argparse.Namespace) -> int:
    from rules.history import load_history

    if args.end <= args.start:
        print("citywatch backtest: --to must be after --from", file=sys.stderr)
        return 2
    # validate rule files before reading any history
    rule_sets = [("A: " + ",".join(args.rules), args.rules)]
    if args.compare:
        rule_sets.append(("B: " + ",".join(args.compare), args.compare))
    for _label, files in rule_sets:
        load_rules(files)
    policy, policy_name = _case_policy(args.case_policy, args.cases_stay_open)
    show = not args.no_progress
    t0 = time.perf_counter()
    history = load_history(_store_url(args), args.start, args.end, args.devices, progress=Progress("reading", show))
    if args.case_store:
        history.registry.update(_bridge_registry(args.case_store))
    t1 = time.perf_counter()
    reports = run_backtest(rule_sets, history, policy, Progress("evaluating", show))
    t2 = time.perf_counter()
    n = history.readings
    if args.json:
        obj: Mapping[str, Any] = {
            "readings": n,
            "case_policy": policy_name,
            "read_s": round(t1 - t0, 3),
            "eval_s": round(t2 - t1, 3),
            "reports": {label: rep.to_json() for label, rep in reports},
        }
        print(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(reports))
        rate = n * len(reports) / max(t2 - t1, 1e-9)
        print(f"\n{n} readings, {len(history.series)} series; read {t1 - t0:.2f} s, "
              f"evaluated {t2 - t1:.2f} s ({rate:,.0f} readings/s); cases: {policy_name}")
    return 0


__all__ = ["RulesSettings", "args_backtest", "args_rules", "cmd_backtest", "cmd_rules", "parse_time", "render"]
