"""The rule engine at city scale, in-process: births of every gateway, then steady-state telemetry.

Drives what ``citywatch rules`` does per step (``rules.runner.decode_inputs`` for the retained status
payloads, ``rules.evaluate.evaluate``, ``EngineState.take_checkpoint``, ``AlarmStore.commit``, no automatic
GC inside a step and ``settle_heap`` after it) with the load generator's plan (``citywatch.loadplan``: the
same gateways, devices, intervals and readings as ``bench/city.py``), without MQTT or other processes:

* births: every gateway's birth (1 000 devices each, encoded as a real v1 status payload), ``--births-per-step``
  messages a step, 0.1 s of simulated time apart;
* steady state: ``--steady-s`` simulated seconds of telemetry at ``--rate`` readings/s, one step per plan tick
  (readings handed over as decoded ``Reading`` objects: telemetry decoding is not what this bench measures);
  every gateway re-announces itself every 300 s (``citywatch.loadgen``'s status interval), staggered;
  one gateway falls silent (its devices must raise ``device-offline`` on time), and a storm floods 0.5 % of
  the water gauges from ``--storm-at-s`` for 60 s (``road-water-depth``, raised on the first breaching sample).

Reports the time to absorb the births, per-step wall time p50/p99/max in steady state, checkpoint sizes, RSS
after the births and along the steady state, and the alarms. Baseline in the same run: the same steady state
with a 1 000-device city (per-reading step cost ratio). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from city import bench_rules_doc  # bench/city.py

from citywatch.loadplan import LoadPlan, device_infos, make_plan, readings_at
from contracts import topics
from contracts.alarms import AlarmTransition, TransitionKind
from contracts.payloads import Status, encode_status
from rules.evaluate import LOG_ENTRIES_PER_DEVICE, EngineState, Input, RuleSet, evaluate
from rules.runner import decode_inputs, settle_heap
from rules.specs import parse_rules
from rules.store import SqliteAlarmStore, StateDelta

T0 = 1_764_547_200.0
PER_GATEWAY = 1000
REBIRTH_S = 300.0  # citywatch.loadgen Uplink status_interval_s
MAX_BYTES = 64 * 1024 * 1024


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def bench_rules() -> RuleSet:
    """The rules bench/city.py runs (road-water-depth raising on the first breaching sample)."""
    return RuleSet(parse_rules(yaml.safe_dump(bench_rules_doc()), "bench"))


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


class City:
    def __init__(self, n_devices: int, rate: float, store_path: str, storm_at_s: float) -> None:
        n_gw = max(1, n_devices // PER_GATEWAY)
        per = min(PER_GATEWAY, n_devices)
        self.gws = [f"gw-{i:04d}" for i in range(n_gw)]
        self.plan: LoadPlan = make_plan(self.gws, per, rate, storm_fraction=0.005, storm_start_s=storm_at_s,
                                        storm_end_s=storm_at_s + 60.0, seed=1)
        self.rs = bench_rules()
        self.st = EngineState()
        self.store = SqliteAlarmStore(store_path)
        self.step_wall: list[float] = []
        self.slowest: list[tuple[float, dict[str, Any]]] = []  # the 3 slowest steps, by phase
        self.parts = 0
        self.entries = 0
        self.compactions = 0
        self.raised: Counter[str] = Counter()
        self.raised_at: dict[str, list[tuple[float, str]]] = {}

    def status_payload(self, gi: int) -> bytes:
        gp = self.plan.gateways[gi]
        return encode_status(Status("online", f"boot-{gi}", "loadgen", device_infos(self.plan, gp, gi), {}))

    def step(self, inputs: list[Input], messages: list[tuple[str, bytes]], now: float) -> list[AlarmTransition]:
        """One runner step: decode, evaluate, checkpoint, commit; GC as rules.runner does."""
        gc.disable()
        t0 = time.perf_counter()
        n_in = len(inputs)
        for topic, payload in messages:
            inputs.extend(decode_inputs(topic, payload, now, MAX_BYTES))
        t1 = time.perf_counter()
        st, out = evaluate(self.rs, self.st, inputs, now)
        t2 = time.perf_counter()
        max_log = LOG_ENTRIES_PER_DEVICE * max(len(st.registry), 1000)
        parts, series, drop = st.take_checkpoint_sliced(self.rs.condition_names, max_log)
        t3 = time.perf_counter()
        self.store.commit(StateDelta(st.global_json(), parts, series, compact=False, drop_log_through=drop), out)
        t4 = time.perf_counter()
        settle_heap()
        gc.enable()
        t5 = time.perf_counter()
        self.step_wall.append(t5 - t0)
        self.slowest.append((round(t5 - t0, 3), {
            "decode": round(t1 - t0, 3), "evaluate": round(t2 - t1, 3), "checkpoint": round(t3 - t2, 3),
            "commit": round(t4 - t3, 3), "settle_heap": round(t5 - t4, 3), "readings": n_in,
            "status_msgs": len(messages), "transitions": len(out), "parts": len(parts), "entries": len(series)}))
        self.slowest.sort(key=lambda x: -x[0])
        del self.slowest[3:]
        self.parts += len(parts)
        self.entries += len(series)
        self.compactions += drop > 0
        for tr in out:
            if tr.kind is TransitionKind.RAISED:
                self.raised[tr.rule] += 1
                self.raised_at.setdefault(tr.rule, []).append((now, tr.device))
        return out

    def births(self, per_step: int) -> dict[str, Any]:
        payloads = [(topics.status(gw), self.status_payload(gi)) for gi, gw in enumerate(self.gws)]
        t0 = time.perf_counter()
        now = T0
        for i in range(0, len(payloads), per_step):
            self.step([], payloads[i : i + per_step], now)
            now += 0.1
        wall = time.perf_counter() - t0
        steps = self.step_wall
        self.step_wall = []
        self.slowest = []
        return {"births_s": wall, "birth_steps": len(steps), "birth_step_max_s": max(steps), "births_end_t": now}

    def steady(self, start_t: float, steady_s: float, quiet_gw: int | None) -> dict[str, Any]:
        plan = self.plan
        ticks = int(steady_s / plan.tick_s)
        rss = [rss_mb()]
        readings = 0
        rebirth_every = max(1, round(REBIRTH_S / plan.tick_s))
        t0 = time.perf_counter()
        for tick in range(ticks):
            now = start_t + tick * plan.tick_s
            inputs: list[Input] = []
            for gi, gp in enumerate(plan.gateways):
                if gi != quiet_gw:
                    inputs.extend(readings_at(plan, gp, tick, now))
            readings += len(inputs)
            msgs = []
            for gi, gw in enumerate(self.gws):  # each gateway re-announces itself every 300 s, staggered
                if gi != quiet_gw and tick > 0 and (tick + gi * rebirth_every // len(self.gws)) % rebirth_every == 0:
                    msgs.append((topics.status(gw), self.status_payload(gi)))
            self.step(inputs, msgs, now)
            if tick and tick % max(1, round(60.0 / plan.tick_s)) == 0:
                rss.append(rss_mb())
        wall = time.perf_counter() - t0
        rss.append(rss_mb())
        steps = self.step_wall
        return {
            "steady_sim_s": ticks * plan.tick_s, "readings": readings, "steady_wall_s": wall,
            "step_p50_s": pct(steps, 0.50), "step_p99_s": pct(steps, 0.99), "step_max_s": max(steps),
            "us_per_reading": sum(steps) / max(readings, 1) * 1e6, "rss_mb_along": [round(x) for x in rss],
            "slowest_steps": self.slowest,
        }


def run(n_devices: int, rate: float, steady_s: float, births_per_step: int, tmp: str) -> dict[str, Any]:
    storm_at = min(60.0, steady_s / 2)
    gc.collect()
    rss0 = rss_mb()
    city = City(n_devices, rate, str(Path(tmp) / f"rules-{n_devices}.db"), storm_at)
    rss_plan = rss_mb()
    b = city.births(births_per_step)
    settle_heap(full=True)
    rss_births = rss_mb()
    quiet = len(city.gws) - 1 if len(city.gws) > 1 else None
    s = city.steady(b["births_end_t"], steady_s, quiet)
    storm = set(city.plan.storm_devices())
    storm_raised = {d for _t, d in city.raised_at.get("road-water-depth", []) if d in storm}
    offline = city.raised_at.get("device-offline", [])
    quiet_devs = set(city.plan.gateways[quiet].devices) if quiet is not None else set()
    res = {
        "devices": city.plan.n_devices, "rate": round(city.plan.rate_per_s), "tick_s": city.plan.tick_s, **b, **s,
        "rss_mb_before": round(rss0), "rss_mb_plan": round(rss_plan), "rss_mb_births": round(rss_births),
        "rss_mb_end": s["rss_mb_along"][-1],
        "rss_per_device_kb": round((rss_births - rss_plan) * 1024 / city.plan.n_devices, 2),
        "parts": city.parts, "entries": city.entries, "compactions": city.compactions,
        "storm_gauges": len(storm), "storm_alarms": len(storm_raised),
        "offline_alarms_quiet_gw": sum(1 for _t, d in offline if d in quiet_devs),
        "offline_alarms_other": sum(1 for _t, d in offline if d not in quiet_devs),
        "raised": dict(city.raised),
    }
    city.store.close()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=10_000.0, help="readings/s of simulated time")
    ap.add_argument("--steady-s", type=float, default=420.0, help="simulated seconds of steady state")
    ap.add_argument("--births-per-step", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rules-city-") as tmp:
        base = run(1000, max(10.0, args.rate * 1000 / args.devices), args.steady_s, args.births_per_step, tmp)
        print(f"baseline 1 000 devices: {base['us_per_reading']:.1f} us/reading per step, step max "
              f"{base['step_max_s'] * 1e3:.1f} ms", flush=True)
        gc.collect()
        res = run(args.devices, args.rate, args.steady_s, args.births_per_step, tmp)
    print(f"{res['devices']} devices, {res['rate']} readings/s (tick {res['tick_s']} s): births absorbed in "
          f"{res['births_s']:.1f} s ({res['birth_steps']} steps, slowest {res['birth_step_max_s']:.2f} s)")
    print(f"steady {res['steady_sim_s']:.0f} s simulated, {res['readings']} readings in {res['steady_wall_s']:.1f} s "
          f"wall: step p50 {res['step_p50_s'] * 1e3:.0f} ms, p99 {res['step_p99_s'] * 1e3:.0f} ms, max "
          f"{res['step_max_s'] * 1e3:.0f} ms; {res['us_per_reading']:.1f} us/reading "
          f"(ratio {res['us_per_reading'] / base['us_per_reading']:.2f} vs the 1 000-device city)")
    for wall, parts in res["slowest_steps"]:
        print(f"  slow step {wall:.3f} s: {parts}")
    print(f"checkpoints: {res['parts']} whole parts, {res['entries']} series entries, {res['compactions']} "
          f"compactions")
    print(f"RSS MB: plan {res['rss_mb_plan']}, after births {res['rss_mb_births']} "
          f"({res['rss_per_device_kb']} KB/device), along steady state {res['rss_mb_along']}")
    print(f"storm: {res['storm_alarms']} of {res['storm_gauges']} gauges raised road-water-depth; device-offline: "
          f"{res['offline_alarms_quiet_gw']} on the silent gateway, {res['offline_alarms_other']} elsewhere; "
          f"raised {res['raised']}")
    res["baseline"] = base
    res["ratio_us_per_reading"] = res["us_per_reading"] / base["us_per_reading"]
    print(json.dumps(res))


if __name__ == "__main__":
    main()
