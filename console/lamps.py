"""Lamp control from the console: on, off or dim one lamp or a whole circuit, with the result.

The console plans one ``lamp_on``/``lamp_off``/``dim`` command per lamp (the edge agent's
command set, see :mod:`edge_agent.commands`) on its gateway's ``.../cmd`` topic and waits for
each ``.../cmd/result``: *success* with the value the agent read back from the device,
*refused* with the agent's error code, or *timed out*. Planning and reading a result are
pure; :class:`LampControl` is the thin async shell around an MQTT port.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Depends
from pydantic import Field, model_validator

from console.context import Ctx, ctx_of, need, writer
from console.errors import NotFound, StoreUnavailable
from console.policy import Perm, Principal
from console.schemas import Body
from console.views import DeviceView
from contracts.payloads import Command, CommandResult
from lighting.schedule import COMMAND_ACTIONS

log = logging.getLogger(__name__)

LAMP_KIND = "lamp"
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class LampCommandBody(Body):
    """One lamp (``device``) or every lamp of a ``circuit``; ``confirm`` must be true (the page asks first)."""

    action: Literal["on", "off", "dim"]
    level_pct: float | None = Field(default=None, ge=0, le=100)
    device: str | None = Field(default=None, pattern=_ID)
    circuit: str | None = Field(default=None, pattern=_ID)
    confirm: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> LampCommandBody:
        if (self.device is None) == (self.circuit is None):
            raise ValueError("give exactly one of device or circuit")
        if (self.action == "dim") != (self.level_pct is not None):
            raise ValueError("level_pct is required for dim and only for dim")
        if not self.confirm:
            raise ValueError("confirm must be true: switching street lamps is confirmed by the operator")
        return self


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one lamp's command."""

    device: str
    gateway: str
    command_id: str
    status: Literal["success", "refused", "timed_out"]
    error: str | None = None
    readback: dict[str, Any] = field(default_factory=dict)  # e.g. {"dim_level_pct": 40.0} or {"relay": 1}
    detail: str = ""


def lamps_of(devices: list[DeviceView], *, device: str | None = None, circuit: str | None = None) -> list[DeviceView]:
    """The lamps a command addresses, by id order; :class:`NotFound` if there are none."""
    if device is not None:
        found = [d for d in devices if d.id == device and d.kind == LAMP_KIND]
        if not found:
            raise NotFound(f"no lamp {device!r}")
        return found
    found = sorted((d for d in devices if d.kind == LAMP_KIND and d.circuit == circuit), key=lambda d: d.id)
    if not found:
        raise NotFound(f"no lamp on circuit {circuit!r}")
    return found


def circuits(devices: list[DeviceView]) -> dict[str, list[DeviceView]]:
    """Lamps grouped by circuit (lamps without one under ``""``), each sorted by id."""
    out: dict[str, list[DeviceView]] = {}
    for d in sorted(devices, key=lambda d: d.id):
        if d.kind == LAMP_KIND:
            out.setdefault(d.circuit or "", []).append(d)
    return dict(sorted(out.items()))


def plan(lamps: list[DeviceView], action: str, level_pct: float | None, request_id: str) -> list[tuple[str, Command]]:
    """(gateway, command) per lamp; ids ``{request_id}-{n}`` tie each result back to its lamp."""
    out = []
    for n, lamp in enumerate(lamps):
        if lamp.gateway is None:
            raise StoreUnavailable(f"lamp {lamp.id} has no known gateway (no birth message yet)")
        args: dict[str, Any] = {"level_pct": level_pct} if action == "dim" else {}
        out.append((lamp.gateway, Command(f"{request_id}-{n}", COMMAND_ACTIONS[action], lamp.id, args)))
    return out


def outcome(gateway: str, cmd: Command, result: CommandResult | None) -> Outcome:
    """Read one agent result (None: none arrived in time)."""
    device = cmd.device or "?"
    if result is None:
        return Outcome(device, gateway, cmd.id, "timed_out", "timeout", detail="no result from the gateway in time")
    if not result.ok:
        detail = result.detail.get("detail", "") if isinstance(result.detail, dict) else ""
        return Outcome(device, gateway, cmd.id, "refused", result.error, detail=str(detail)[:300])
    readback = {k: v for k, v in result.detail.items() if k in ("relay", "dim_level_pct")}
    return Outcome(device, gateway, cmd.id, "success", None, readback)


class CommandPort(Protocol):
    """Publish a command on a gateway's ``.../cmd`` (MQTT QoS 1); :class:`StoreUnavailable` if it cannot."""

    def send_command(self, gateway: str, cmd: Command) -> None: ...


class LampControl:
    """Sends planned commands and waits for their results, which the live feed hands to :meth:`on_result`.

    Runs on the event loop (the feed's callbacks and the async handler share it). Every
    console replica sees every result; only the one waiting for an id takes it.
    """

    def __init__(self, port: CommandPort | None = None, timeout_s: float = 10.0) -> None:
        self.port = port
        self.timeout_s = timeout_s
        self._waiting: dict[str, asyncio.Future[CommandResult]] = {}

    def on_result(self, result: CommandResult) -> None:
        fut = self._waiting.get(result.id)
        if fut is not None and not fut.done():
            fut.set_result(result)

    async def run(self, commands: list[tuple[str, Command]]) -> list[Outcome]:
        if self.port is None:
            raise StoreUnavailable("no broker connection for lamp commands")
        loop = asyncio.get_running_loop()
        futures = {cmd.id: loop.create_future() for _gw, cmd in commands}
        self._waiting.update(futures)
        try:
            for gw, cmd in commands:
                self.port.send_command(gw, cmd)
            await asyncio.wait(futures.values(), timeout=self.timeout_s)
            return [outcome(gw, cmd, futures[cmd.id].result() if futures[cmd.id].done() else None)
                    for gw, cmd in commands]
        finally:
            for cid in futures:
                self._waiting.pop(cid, None)


# ------------------------------------------------------------------ API

router = APIRouter(prefix="/api/v1")


def _control(ctx: Ctx) -> LampControl:
    lamps = ctx.stores.lamps
    if lamps is None:
        raise StoreUnavailable("no broker connection for lamp commands")
    return lamps


def lamp_json(d: DeviceView) -> dict[str, Any]:
    latest = {m: {"value": v.value, "unit": v.unit, "ts": v.ts} for m, v in d.latest.items()
              if m in ("relay", "dim_level", "power", "voltage")}
    return {"id": d.id, "circuit": d.circuit, "gateway": d.gateway, "online": d.online, "lat": d.lat, "lon": d.lon,
            "latest": latest}


@router.get("/lamps", tags=["lamps"], summary="Lamps by circuit with relay, dim level and power")
def list_lamps(ctx: Annotated[Ctx, Depends(ctx_of)],
               _p: Annotated[Principal, Depends(need(Perm.DEVICES_READ))]) -> dict[str, Any]:
    return {"circuits": [{"circuit": c, "lamps": [lamp_json(d) for d in ds]}
                         for c, ds in circuits(ctx.stores.devices.devices()).items()]}


@router.post("/lamps/commands", tags=["lamps"],
             summary="Switch or dim one lamp or a circuit; returns each lamp's result and read-back value")
async def lamp_command(body: LampCommandBody, ctx: Annotated[Ctx, Depends(ctx_of)],
                       p: Annotated[Principal, Depends(writer(Perm.LAMPS_CONTROL))]) -> dict[str, Any]:
    target = f"device:{body.device}" if body.device else f"circuit:{body.circuit}"
    action = f"lamp.{body.action}"
    try:
        devices = await asyncio.to_thread(ctx.stores.devices.devices)
        lamps = lamps_of(devices, device=body.device, circuit=body.circuit)
        control = _control(ctx)
        request_id = uuid.uuid4().hex[:16]
        commands = plan(lamps, body.action, body.level_pct, request_id)
        # the intent first (202): a street changes even if this process dies before the results come
        ctx.audit(p.actor, action, target, 202, level_pct=body.level_pct, request_id=request_id,
                  lamps=[lamp.id for lamp in lamps][:50])
        outcomes = await control.run(commands)
    except (NotFound, StoreUnavailable) as exc:
        ctx.audit(p.actor, action, target, exc.status_code, level_pct=body.level_pct, error=str(exc)[:200])
        raise
    summary = {s: sum(1 for o in outcomes if o.status == s) for s in ("success", "refused", "timed_out")}
    ctx.audit(p.actor, action, target, 200, level_pct=body.level_pct, request_id=request_id, **summary,
              failed=[o.device for o in outcomes if o.status != "success"][:50])
    log.info("lamp command %s %s by %s: %s", action, target, p.actor, summary)
    return {"request_id": request_id, "action": body.action, "level_pct": body.level_pct, "target": target,
            "summary": summary, "results": [asdict(o) for o in outcomes]}
