"""The edge agent process: poll scheduler + outbox + uplink + commands, in one asyncio TaskGroup.

Each device has its own polling task, so a dead slave or an unplugged serial port only delays
the devices that share its bus (the gateway's bus layer serialises a bus and quarantines dead
slaves); every sample is appended to the outbox (committed, fsync'd) before the uplink sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Protocol

from contracts import payloads
from contracts.errors import CitywatchError
from contracts.reading import Event, Reading
from edge_agent import commands, storm
from edge_agent.config import AgentConfig
from edge_agent.errors import OutboxError
from edge_agent.outbox import Outbox
from edge_agent.uplink import Uplink
from gateway import deadband, profiles
from gateway.deadband import ReportByException

log = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"


class HealthLike(Protocol):
    last_good_ts: float | None
    consecutive_failures: int
    quarantined_until: float | None
    last_error: str | None


class PollResultLike(Protocol):
    readings: Sequence[Reading]
    events: Sequence[Event]


class PollerLike(Protocol):
    """The part of ``gateway.poller.DevicePoller`` the agent uses."""

    health: Any

    async def poll(self, now: float) -> Any: ...

    async def write_field(self, field: str, value: float, now: float) -> float: ...


def new_boot_id() -> str:
    """Unique per agent start: hex seconds + random, so boots sort roughly by time and never repeat."""
    return f"{int(time.time()):x}-{secrets.token_hex(4)}"


@dataclass
class DeviceRuntime:
    id: str
    kind: str
    interval_s: float
    storm_interval_s: float | None
    poller: PollerLike
    storm: storm.StormState = field(default_factory=storm.StormState)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    failing: bool = False
    polls: int = 0
    skipped: int = 0
    report: ReportByException | None = None  # deadbands: which sampled readings to publish

    @property
    def current_interval_s(self) -> float:
        return storm.interval_s(self.storm, self.interval_s, self.storm_interval_s)


class Agent:
    """Wire config, pollers, outbox and uplink together. ``run()`` until cancelled."""

    def __init__(
        self,
        cfg: AgentConfig,
        *,
        boot: str | None = None,
        pollers: dict[str, PollerLike] | None = None,
        buses: Sequence[Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self.boot = boot or new_boot_id()
        self._pollers_given = pollers
        self._buses_given = buses
        self.outbox = Outbox(cfg.outbox.path, cfg.outbox.budget_bytes, self.boot, cfg.outbox.overflow_policy)
        self.devices: dict[str, DeviceRuntime] = {}
        self.uplink = Uplink(
            cfg.gateway.id,
            self.boot,
            cfg.mqtt,
            cfg.publish,
            self.outbox,
            status=self.status,
            commands=self._command,
            status_interval_s=cfg.gateway.status_interval_s,
        )
        self.started = asyncio.Event()

    # ------------------------------------------------------------ run

    async def run(self) -> None:
        async with AsyncExitStack() as stack:
            pollers = self._pollers_given
            buses: Sequence[Any] = self._buses_given or ()
            if pollers is None:
                from gateway.config import FieldConfig
                from gateway.poller import build_pollers

                buses, built = build_pollers(FieldConfig(buses=self.cfg.buses, devices=self.cfg.devices))
                pollers = dict(built)
            for bus in buses:
                await stack.enter_async_context(bus)
            for d in self.cfg.devices:
                self.devices[d.id] = DeviceRuntime(
                    d.id, d.kind, d.poll_interval_s, d.storm_poll_interval_s, pollers[d.id],
                    report=deadband.for_device(profiles.get(d.profile).deadbands, d.deadband_overrides()),
                )
            stack.callback(self.outbox.close)
            log.info("agent %s boot %s: %d devices on %d buses, outbox %s (%d unacked batches, %d records)",
                     self.cfg.gateway.id, self.boot, len(self.devices), len(self.cfg.buses), self.outbox.path,
                     self.outbox.unacked_count, self.outbox.ledger().depth)
            self.started.set()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.uplink.run(), name="uplink")
                for dev in self.devices.values():
                    tg.create_task(self._poll_loop(dev), name=f"poll-{dev.id}")

    async def _poll_loop(self, dev: DeviceRuntime) -> None:
        next_due = time.monotonic()
        while True:
            delay = next_due - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(dev.wake.wait(), delay)
            dev.wake.clear()
            await self.poll_once(dev)
            step = dev.current_interval_s
            next_due += step
            now_m = time.monotonic()
            if next_due < now_m:  # fell behind (slow bus, outage): skip, do not burst
                missed = int((now_m - next_due) // step) + 1
                dev.skipped += missed
                next_due += missed * step
            if next_due - now_m > step:  # interval shortened (storm): do not wait the old one out
                next_due = now_m + step

    async def poll_once(self, dev: DeviceRuntime) -> None:
        now = time.time()
        dev.polls += 1
        try:
            res = await dev.poller.poll(now)
        except CitywatchError as exc:
            self._failing(dev, exc)
            return
        except Exception as exc:  # a bug in one device's decoding must not stop the others
            if not dev.failing:
                log.exception("device %s: unexpected error while polling", dev.id)
            self._failing(dev, exc)
            return
        if dev.failing:
            dev.failing = False
            log.info("device %s recovered", dev.id)
            self.uplink.request_status()
        readings: Sequence[Reading] = res.readings
        events: Sequence[Event] = res.events
        published = readings if dev.report is None else dev.report.select(readings)
        try:
            self.outbox.append(published, events)
        except OutboxError as exc:
            self.uplink.raise_fault("outbox_write", str(exc))
            return
        self.uplink.clear_fault("outbox_write")
        cap = self.outbox.disk_full_cap
        if cap is not None and "outbox_disk_full" not in self.uplink.faults:
            self.uplink.raise_fault("outbox_disk_full",
                                    f"disk filled before the budget; the policy now keeps {cap} bytes")
        self.uplink.notify_appended()
        if dev.storm_interval_s is not None:
            self._feed_storm(dev, readings)

    def _failing(self, dev: DeviceRuntime, exc: Exception) -> None:
        if not dev.failing:  # log the transition, not every repeat
            dev.failing = True
            log.error("device %s failing: %s", dev.id, exc)
            self.uplink.request_status()

    def _feed_storm(self, dev: DeviceRuntime, readings: Sequence[Reading]) -> None:
        before = dev.storm.storm
        for r in readings:
            if r.metric == self.cfg.storm.metric and r.quality.is_good:
                dev.storm = storm.observe(dev.storm, r.ts, r.value, self.cfg.storm)
        if dev.storm.storm != before:
            log.info("device %s storm mode %s (%s): poll every %g s", dev.id, "on" if dev.storm.storm else "off",
                     dev.storm.reason, dev.current_interval_s)
            self.uplink.request_status()

    # ------------------------------------------------------------ commands (CommandTarget)

    async def _command(self, raw: bytes) -> bytes:
        return await commands.handle(self, raw)

    def device_kind(self, device: str) -> str | None:
        dev = self.devices.get(device)
        return dev.kind if dev is not None else None

    async def write_field(self, device: str, field_name: str, value: float) -> float:
        got = await self.devices[device].poller.write_field(field_name, value, time.time())
        self.devices[device].wake.set()  # publish the new state promptly
        return got

    def poll_now(self, device: str | None) -> list[str]:
        chosen = [d for d in self.devices.values() if device is None or d.id == device]
        for d in chosen:
            d.wake.set()
        return [d.id for d in chosen]

    def set_storm(self, device: str | None, on: bool | None) -> list[str]:
        chosen = [d for d in self.devices.values()
                  if (device is None or d.id == device) and d.storm_interval_s is not None]
        for d in chosen:
            d.storm = storm.force(d.storm, on)
            d.wake.set()
        if chosen:
            self.uplink.request_status()
        return [d.id for d in chosen]

    # ------------------------------------------------------------ status

    def device_health(self) -> dict[str, Any]:
        now = time.time()
        out: dict[str, Any] = {}
        for dev in self.devices.values():
            h = dev.poller.health
            until = getattr(h, "quarantined_until", None)
            out[dev.id] = {
                "last_good_ts": getattr(h, "last_good_ts", None),
                "consecutive_failures": getattr(h, "consecutive_failures", 0),
                "quarantined": until is not None and until > now,
                "quarantined_until": until,
                "last_error": getattr(h, "last_error", None),
                "interval_s": dev.current_interval_s,
                "storm": dev.storm.storm,
                "storm_forced": dev.storm.forced,
                "polls": dev.polls,
                "skipped_polls": dev.skipped,
            }
        return out

    def status(self) -> payloads.Status:
        health = {"devices": self.device_health(), **self.uplink.health()}
        return payloads.Status(
            "online", self.boot, AGENT_VERSION, [d.to_device_info() for d in self.cfg.devices], health
        )
