"""``citywatch loadgen``: many synthetic gateways with the edge's own discipline, bounded.

Each gateway has its own outbox (own boot id, seq numbers) and a real :class:`edge_agent.uplink.Uplink`:
every reading is appended to the outbox first, batched like the agent (``publish.batch_max_readings``),
published with QoS 1 and deleted only when the cloud's retained ack watermark covers its batch;
unacked batches are resent. So the load is counted exactly like the agents' samples (generated =
outbox ledger). The outbox is in memory by default (:class:`citywatch.loadbox.MemOutbox`, readings
pre-encoded by :func:`citywatch.loadplan.chunks_at`: the generator must cost little per reading to
drive a million devices) or, with ``--outbox-dir``, the agent's on-disk SQLite outbox. What each
device reports and when is the pure plan of :mod:`citywatch.loadplan`; this module only runs it on
a clock.

Bounded: production stops after ``--duration-s`` (required, at most 24 h), then the generator waits
at most ``--drain-timeout-s`` for the outboxes to be acked and exits (0: all acked, 1: some left).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import math
import signal
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from contracts.config import MqttSettings
from contracts.payloads import Status
from contracts.reading import DeviceInfo
from edge_agent.agent import new_boot_id
from edge_agent.config import PublishConfig
from edge_agent.outbox import Outbox, OutboxPort
from edge_agent.uplink import Uplink

from .loadbox import LoadUplink, MemOutbox
from .loadplan import (
    DEFAULT_MIX,
    KINDS,
    MAX_DURATION_S,
    LoadgenError,
    LoadPlan,
    chunks_at,
    device_infos,
    make_plan,
    readings_at,
)

log = logging.getLogger(__name__)

#: per-gateway outbox budget: minutes of backlog at the planned rates, far below a disk
OUTBOX_BUDGET_BYTES = 64 * 1024 * 1024
#: how long production waits for every gateway's first connect (and birth) before it starts anyway
BIRTH_WAIT_S = 30.0


@dataclass
class LoadReport:
    """What one run did; ``pending`` > 0 means the cloud did not ack everything before the drain ended."""

    gateways: int
    devices: int
    planned_rate_per_s: float
    generated: int
    ticks: int
    late_ticks: int  # ticks started more than one tick late (the generator could not keep up)
    production_s: float
    pending: int
    drained: bool
    storm_devices: int
    setup_cpu_s: float = 0.0  # process CPU before the first tick (outboxes, connects, births)
    cpu_s: float = 0.0  # process CPU from the first tick to the end of the drain: what the readings cost
    sent_batches: int = 0  # every publish of a batch, resends included
    resent_batches: int = 0  # publishes of a batch already sent (ack timeouts, reconnects)

    @property
    def cpu_us_per_reading(self) -> float:
        return self.cpu_s / self.generated * 1e6 if self.generated else 0.0

    @property
    def achieved_rate_per_s(self) -> float:
        return self.generated / self.production_s if self.production_s > 0 else 0.0


def default_publish() -> PublishConfig:
    """The agent's publishing discipline with test-friendly timers (fast resend, fast reconnect)."""
    return PublishConfig(linger_s=0.2, ack_timeout_s=5.0, reconnect_min_s=0.2, reconnect_max_s=2.0,
                         connect_timeout_s=5.0, protocol="3.1.1")


def _pending(boxes: Sequence[OutboxPort]) -> int:
    return sum(b.ledger().telemetry.present for b in boxes)


async def run_load(
    plan: LoadPlan,
    mqtt: MqttSettings,
    outbox_dir: Path | None,
    *,
    duration_s: float,
    drain_timeout_s: float = 60.0,
    publish: PublishConfig | None = None,
    stop: asyncio.Event | None = None,
    hold_until_stopped: bool = False,
) -> LoadReport:
    """Run ``plan`` for ``duration_s``, then drain (bounded by ``drain_timeout_s``, or until ``stop``
    when ``hold_until_stopped``). ``stop`` ends production and the drain early.

    ``outbox_dir`` None keeps each gateway's outbox in memory (:class:`citywatch.loadbox.MemOutbox`,
    the same batch/ack/resend discipline without the agent's fsync per append); a directory gives
    every gateway the agent's on-disk SQLite :class:`Outbox`."""
    if not (math.isfinite(duration_s) and 0 < duration_s <= MAX_DURATION_S):
        raise LoadgenError(f"duration_s={duration_s!r}: must be > 0 and <= {MAX_DURATION_S:.0f} (the run must end)")
    stop = stop or asyncio.Event()
    publish = publish or default_publish()
    cpu0 = time.process_time()
    if outbox_dir is not None:
        await asyncio.to_thread(outbox_dir.mkdir, parents=True, exist_ok=True)
    boxes: list[OutboxPort] = []
    uplinks: list[Uplink] = []
    for gi, gp in enumerate(plan.gateways):
        boot = new_boot_id()
        box: OutboxPort = (MemOutbox(OUTBOX_BUDGET_BYTES, boot) if outbox_dir is None
                           else Outbox(outbox_dir / f"{gp.gw}.db", OUTBOX_BUDGET_BYTES, boot))
        infos = device_infos(plan, gp, gi)

        def status(b: str = boot, d: list[DeviceInfo] = infos) -> Status:
            return Status("online", b, "loadgen", d, {})

        gw_mqtt = mqtt.model_copy(update={"client_id": f"citywatch-{gp.gw}"})
        boxes.append(box)
        link_cls = LoadUplink if outbox_dir is None else Uplink
        uplinks.append(link_cls(gp.gw, boot, gw_mqtt, publish, box, status=status, status_interval_s=300.0))
    generated = ticks = late = 0
    t_prod = cpu_setup = 0.0
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(up.run()) for up in uplinks]
            # births before data, as an agent's first connect: bounded, a dead broker only delays
            born = time.monotonic() + BIRTH_WAIT_S
            while not stop.is_set() and time.monotonic() < born and not all(up.connects for up in uplinks):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.05)
            # the plan, births and links are millions of long-lived objects: keep them out of the
            # collector's full passes, which would otherwise rescan them while readings churn
            gc.collect()
            gc.freeze()
            cpu1 = time.process_time()
            cpu_setup = cpu1 - cpu0
            t0 = time.monotonic()
            t_end = t0 + duration_s
            behind = False
            last_ts = 0.0
            while not stop.is_set():
                due = t0 + ticks * plan.tick_s
                if due >= t_end:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), wait)
                    if stop.is_set():
                        break
                elif -wait > plan.tick_s:
                    late += 1
                if (-wait > plan.tick_s) != behind:
                    behind = not behind
                    log.warning("loadgen %s schedule (%.1f s late)", "behind" if behind else "back on", max(0.0, -wait))
                # strictly increasing sample times: catching up, two ticks must not share an identity
                ts = last_ts = max(round(time.time(), 3), round(last_ts + 0.001, 3))
                for gp, box, up in zip(plan.gateways, boxes, uplinks, strict=True):
                    if isinstance(box, MemOutbox):
                        chunks, n = chunks_at(plan, gp, ticks, ts)
                        if n:
                            box.append_chunks(chunks)
                    else:
                        batch = readings_at(plan, gp, ticks, ts)
                        n = len(batch)
                        if n:
                            box.append(batch)
                    if n:
                        up.notify_appended()
                        generated += n
                ticks += 1
                await asyncio.sleep(0)  # let the uplinks publish between ticks even when behind
            t_prod = time.monotonic() - t0
            log.info("loadgen produced %d readings in %.1f s; draining", generated, t_prod)
            deadline = math.inf if hold_until_stopped else time.monotonic() + drain_timeout_s
            while not stop.is_set() and time.monotonic() < deadline:
                if not hold_until_stopped and _pending(boxes) == 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(0.2, max(0.0, deadline - time.monotonic())))
            for t in tasks:
                t.cancel()
        pending = _pending(boxes)
        cpu_run = time.process_time() - cpu1
    finally:
        gc.unfreeze()  # back to the collector's care (an in-process caller may run again)
        for b in boxes:
            b.close()
    return LoadReport(len(plan.gateways), plan.n_devices, plan.rate_per_s, generated, ticks, late, t_prod,
                      pending, pending == 0, len(plan.storm_devices()), round(cpu_setup, 3), round(cpu_run, 3),
                      sum(up.sent_batches for up in uplinks), sum(up.resent_batches for up in uplinks))


# ------------------------------------------------------------------ CLI


def _mix(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in text.split(","):
        kind, _, weight = part.partition("=")
        try:
            out[kind.strip()] = float(weight)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"--mix {text!r}: expected kind=weight[,kind=weight...]") from exc
    return out


def args_loadgen(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gateways", type=int, required=True, help="number of synthetic gateways")
    parser.add_argument("--devices-per-gateway", type=int, required=True, help="devices behind each gateway")
    parser.add_argument("--rate", type=float, required=True, help="readings/s of the whole district")
    parser.add_argument("--duration-s", type=float, required=True,
                        help=f"production time (required; at most {MAX_DURATION_S:.0f})")
    parser.add_argument("--drain-timeout-s", type=float, default=60.0,
                        help="after production, wait at most this long for every batch to be acked (default 60)")
    parser.add_argument("--storm-fraction", type=float, default=0.0,
                        help="fraction of water gauges flooded above the road-water-depth thresholds (default 0)")
    parser.add_argument("--storm-start-s", type=float, default=0.0, help="storm start, s after production starts")
    parser.add_argument("--storm-end-s", type=float, default=math.inf, help="storm end (default: never)")
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="broker URL (mqtt:// or mqtts://)")
    parser.add_argument("--username", help="broker user (all gateways share it; default none)")
    parser.add_argument("--password", help="broker password")
    parser.add_argument("--outbox-dir", default=None,
                        help="keep each gateway's outbox on disk (the agent's SQLite outbox, one file per gateway) "
                             "in this directory; default: in memory (same batch/ack/resend discipline, no fsync)")
    parser.add_argument("--gateway-prefix", default="gw-load-", help="gateway ids are PREFIX0001, PREFIX0002, ...")
    default_mix = ",".join(f"{k}={v}" for k, v in DEFAULT_MIX.items())
    parser.add_argument("--mix", type=_mix, default=None,
                        help=f"kind weights (default {default_mix}; kinds: {', '.join(KINDS)})")
    parser.add_argument("--tick-s", type=float, default=None,
                        help="scheduling tick, one outbox append per gateway (default 1 s, shorter for fast intervals)")
    parser.add_argument("--batch-max-readings", type=int, default=500, help="readings per MQTT message (default 500)")
    parser.add_argument("--linger-s", type=float, default=None,
                        help="how long a partial batch waits to fill up (default 0.2; the agent's default is 2.0: "
                             "bigger batches, less generator CPU per reading, up to that much more latency)")
    parser.add_argument("--ack-timeout-s", type=float, default=30.0,
                        help="resend batches unacked this long (doubling while no progress; default 30 as the agent)")
    parser.add_argument("--seed", type=int, default=1, help="plan seed: same seed, same district and storm")
    parser.add_argument("--json", action="store_true", help="print the plan and the report as JSON lines")


def cmd_loadgen(args: argparse.Namespace) -> int:
    """Plan, run for --duration-s, drain, print the report; exit 1 if batches were left unacked."""
    gws = [f"{args.gateway_prefix}{i:04d}" for i in range(1, args.gateways + 1)]
    plan = make_plan(gws, args.devices_per_gateway, args.rate, mix=args.mix, storm_fraction=args.storm_fraction,
                     storm_start_s=args.storm_start_s, storm_end_s=args.storm_end_s, tick_s=args.tick_s,
                     seed=args.seed)
    if not (math.isfinite(args.drain_timeout_s) and 0 <= args.drain_timeout_s <= 3600):
        raise LoadgenError(f"drain_timeout_s={args.drain_timeout_s!r}: must be within [0, 3600]")
    try:
        mqtt = MqttSettings(url=args.broker, username=args.username, password=args.password, keepalive_s=30)
        # the same bounds as an agent's config
        publish = PublishConfig.model_validate({**default_publish().model_dump(),
                                                "batch_max_readings": args.batch_max_readings,
                                                "ack_timeout_s": args.ack_timeout_s,
                                                **({} if args.linger_s is None else {"linger_s": args.linger_s})})
    except ValidationError as exc:
        raise LoadgenError(f"--broker/--batch-max-readings/--ack-timeout-s/--linger-s: {exc}") from exc
    head = {"gateways": len(gws), "devices": plan.n_devices, "planned_rate_per_s": round(plan.rate_per_s, 1),
            "interval_scale": round(plan.interval_scale, 4), "kinds": plan.kind_counts(),
            "storm_devices": len(plan.storm_devices())}
    if args.json:
        print(json.dumps({"plan": head}), flush=True)
    else:
        log.info("loadgen plan: %s", head)

    async def main() -> LoadReport:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        outbox_dir = None if args.outbox_dir is None else Path(args.outbox_dir)
        return await run_load(plan, mqtt, outbox_dir, duration_s=args.duration_s,
                              drain_timeout_s=args.drain_timeout_s, publish=publish, stop=stop)

    report = asyncio.run(main())
    out: dict[str, Any] = {**asdict(report), "achieved_rate_per_s": round(report.achieved_rate_per_s, 1),
                           "cpu_us_per_reading": round(report.cpu_us_per_reading, 2)}
    if args.json:
        print(json.dumps({"report": out}), flush=True)
    else:
        log.info("loadgen report: %s", out)
    if not report.drained:
        log.error("loadgen: %d readings left unacked in the outboxes (drain ended or stopped)", report.pending)
        return 1
    return 0
