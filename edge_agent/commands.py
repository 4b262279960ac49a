"""Commands on ``.../cmd``: every command gets a result on ``.../cmd/result`` with its id.

Actions (``contracts.payloads.Command.action``):

========== ======================== ==================================================
action     args                     effect
========== ======================== ==================================================
lamp_on    –                        relay := 1, read back
lamp_off   –                        relay := 0, read back
dim        ``level_pct`` 0–100      dim_level := level, read back
poll_now   –                        poll the device (or every device) at once
storm_mode ``on``: true/false/"auto" pin storm mode on/off for a device (or all), or
                                    return to automatic
========== ======================== ==================================================

Errors are returned, never dropped: an undecodable command still gets a result (with the id
if one could be read, else ``"?"``).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Protocol

import orjson

from contracts import payloads
from contracts.errors import PayloadError
from edge_agent.errors import CommandError

log = logging.getLogger(__name__)

ACTIONS = ("lamp_on", "lamp_off", "dim", "poll_now", "storm_mode")
LAMP_KIND = "lamp"
#: read-back tolerance: the dim register holds whole percent
DIM_TOLERANCE_PCT = 0.5


class CommandTarget(Protocol):
    """What the dispatcher needs from the agent."""

    def device_kind(self, device: str) -> str | None: ...

    async def write_field(self, device: str, field: str, value: float) -> float: ...

    def poll_now(self, device: str | None) -> list[str]: ...

    def set_storm(self, device: str | None, on: bool | None) -> list[str]: ...


def _error_code(exc: Exception) -> str:
    """Short stable codes for gateway failures (no import of gateway needed to name them)."""
    name = type(exc).__name__
    return {
        "Quarantined": "device_quarantined",
        "NoResponse": "no_response",
        "WriteMismatch": "readback_mismatch",
        "BadFrame": "bad_frame",
        "ConfigFault": "device_refused",
        "SlaveBusy": "device_busy",
        "BusError": "bus_down",
        "BusClosed": "bus_down",
        "EncodeError": "bad_value",
    }.get(name, "device_error")


def _salvage_id(raw: bytes) -> str:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "?"
    cid = obj.get("id") if isinstance(obj, dict) else None
    return cid if isinstance(cid, str) and 0 < len(cid) <= 64 else "?"


def _lamp(target: CommandTarget, cmd: payloads.Command) -> str:
    if cmd.device is None:
        raise CommandError("missing_device", f"{cmd.action} needs a device")
    kind = target.device_kind(cmd.device)
    if kind is None:
        raise CommandError("unknown_device", cmd.device)
    if kind != LAMP_KIND:
        raise CommandError("wrong_device_kind", f"{cmd.device} is a {kind}, not a lamp")
    return cmd.device


async def execute(target: CommandTarget, cmd: payloads.Command) -> dict[str, Any]:
    """Carry out one command; returns the result detail or raises :class:`CommandError`."""
    from contracts.errors import CitywatchError

    try:
        if cmd.action in ("lamp_on", "lamp_off"):
            device = _lamp(target, cmd)
            want = 1.0 if cmd.action == "lamp_on" else 0.0
            got = await target.write_field(device, "relay", want)
            if got != want:
                raise CommandError("readback_mismatch", f"relay: wrote {want:g}, read back {got:g}")
            return {"device": device, "relay": int(got)}
        if cmd.action == "dim":
            device = _lamp(target, cmd)
            level = cmd.args.get("level_pct")
            if isinstance(level, bool) or not isinstance(level, int | float) or not math.isfinite(level):
                raise CommandError("bad_argument", "dim needs args.level_pct, a number 0-100")
            if not 0 <= level <= 100:
                raise CommandError("bad_argument", f"level_pct {level} outside 0-100")
            got = await target.write_field(device, "dim_level", float(level))
            if abs(got - level) > DIM_TOLERANCE_PCT:
                raise CommandError("readback_mismatch", f"dim_level: wrote {level}, read back {got:g}")
            return {"device": device, "dim_level_pct": got}
        if cmd.action == "poll_now":
            if cmd.device is not None and target.device_kind(cmd.device) is None:
                raise CommandError("unknown_device", cmd.device)
            return {"devices": target.poll_now(cmd.device)}
        if cmd.action == "storm_mode":
            on = cmd.args.get("on")
            if on == "auto":
                on = None
            if on is not None and not isinstance(on, bool):
                raise CommandError("bad_argument", 'storm_mode needs args.on: true, false or "auto"')
            if cmd.device is not None and target.device_kind(cmd.device) is None:
                raise CommandError("unknown_device", cmd.device)
            devices = target.set_storm(cmd.device, on)
            if not devices:
                raise CommandError("not_applicable", "no device with a storm_poll_interval_s matches")
            return {"devices": devices, "storm": "auto" if on is None else on}
    except CommandError:
        raise
    except CitywatchError as exc:
        raise CommandError(_error_code(exc), str(exc)) from exc
    raise CommandError("unknown_action", f"{cmd.action!r}; known: {', '.join(ACTIONS)}")


async def handle(target: CommandTarget, raw: bytes) -> bytes:
    """Decode, execute and encode the result. Never raises for a bad command."""
    try:
        cmd = payloads.decode_command(raw)
    except PayloadError as exc:
        res = payloads.CommandResult(_salvage_id(raw), False, f"bad_command:{exc.reason}", {"detail": exc.detail})
        return payloads.encode_command_result(res)
    try:
        detail = await execute(target, cmd)
    except CommandError as exc:
        log.warning("command %s (%s %s) failed: %s", cmd.id, cmd.action, cmd.device or "*", exc)
        res = payloads.CommandResult(cmd.id, False, exc.code, {"detail": exc.detail})
    else:
        log.info("command %s (%s %s) done: %s", cmd.id, cmd.action, cmd.device or "*", detail)
        res = payloads.CommandResult(cmd.id, True, None, detail)
    return payloads.encode_command_result(res)
