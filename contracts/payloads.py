"""Versioned JSON payloads (v1) for every topic, encoded and decoded strictly.

Decoders raise :class:`PayloadError` with a short ``reason`` (used as the dead-letter
reason) and never return partial data. Telemetry uses SenML (RFC 8428) field names:
``bn``/``bt``/``bu`` carry over to following records until changed; ``q`` is our
quality extension. Sample times are rounded to the millisecond, the resolution of a
reading's identity (see :func:`ts_ms`), so a batch split differently on resend decodes
to the same identities.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from contracts.alarms import AlarmTransition, Severity, TransitionKind
from contracts.errors import PayloadError
from contracts.ids import is_valid_id
from contracts.metrics import METRIC_UNITS
from contracts.reading import DeviceInfo, Event, Quality, Reading

VERSION = 1
BOOT_PATTERN = re.compile(r"[A-Za-z0-9-]{1,64}")
_QUALITIES = {int(q): q for q in Quality}


def ts_ms(ts: float) -> int:
    """Identity resolution of a sample time: integer milliseconds."""
    return round(ts * 1000)


@dataclass(frozen=True, slots=True)
class Batch:
    """One telemetry or events message: a (gw, boot, seq) envelope around records."""

    gw: str
    boot: str
    seq: int
    readings: list[Reading] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Status:
    state: str  # online | offline
    boot: str
    agent: str | None = None
    devices: list[DeviceInfo] = field(default_factory=list)
    health: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Command:
    id: str
    action: str  # lamp_on | lamp_off | dim | poll_now | storm_mode
    device: str | None = None
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CommandResult:
    id: str
    ok: bool
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- helpers


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _loads(raw: bytes | str, max_bytes: int | None) -> dict[str, Any]:
    if max_bytes is not None and len(raw) > max_bytes:
        raise PayloadError("too_large", f"{len(raw)} bytes > {max_bytes}")
    try:
        obj = orjson.loads(raw)  # rejects NaN/Infinity, invalid UTF-8, lone surrogates
    except orjson.JSONDecodeError as exc:
        raise PayloadError("not_json", str(exc)[:200]) from exc
    if not isinstance(obj, dict):
        raise PayloadError("wrong_type", "payload is not a JSON object")
    v = obj.get("v")
    if v != VERSION or isinstance(v, bool):
        raise PayloadError("unsupported_version", f"v={v!r}")
    return obj


def _num(obj: dict[str, Any], key: str, where: str) -> float:
    val = obj.get(key)
    if isinstance(val, bool) or not isinstance(val, int | float):
        raise PayloadError("wrong_type", f"{where}.{key} is not a number")
    fval = float(val)
    if not math.isfinite(fval):
        raise PayloadError("not_finite", f"{where}.{key}")
    return fval


def _str(obj: dict[str, Any], key: str, where: str) -> str:
    val = obj.get(key)
    if not isinstance(val, str):
        raise PayloadError("wrong_type", f"{where}.{key} is not a string")
    if "\x00" in val:
        raise PayloadError("nul_char", f"{where}.{key}")
    return val


def _check_json_clean(obj: Any, where: str, depth: int = 0) -> None:
    """Free-form bodies: no NUL (PostgreSQL refuses it), finite numbers, bounded depth."""
    if depth > 16:
        raise PayloadError("too_deep", where)
    if isinstance(obj, str):
        if "\x00" in obj:
            raise PayloadError("nul_char", where)
    elif isinstance(obj, float):
        if not math.isfinite(obj):
            raise PayloadError("not_finite", where)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_json_clean(k, where, depth + 1)
            _check_json_clean(v, where, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            _check_json_clean(v, where, depth + 1)


def _envelope(obj: dict[str, Any]) -> tuple[str, str, int]:
    gw = obj.get("gw")
    if not is_valid_id(gw):
        raise PayloadError("bad_gateway_id", repr(gw)[:80])
    boot = obj.get("boot")
    if not isinstance(boot, str) or not BOOT_PATTERN.fullmatch(boot):
        raise PayloadError("bad_boot", repr(boot)[:80])
    seq = obj.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or seq >= 2**63:
        raise PayloadError("bad_seq", repr(seq)[:80])
    assert isinstance(gw, str)
    return gw, boot, seq


# ---------------------------------------------------------------- telemetry


def encode_telemetry(gw: str, boot: str, seq: int, readings: Sequence[Reading]) -> bytes:
    """Encode readings as one SenML-shaped batch; base name/time set per device run."""
    records: list[dict[str, Any]] = []
    cur_dev: str | None = None
    base_t = 0.0
    for r in readings:
        rec: dict[str, Any] = {}
        if r.device != cur_dev:
            cur_dev = r.device
            base_t = r.ts
            rec["bn"] = r.device + "/"
            rec["bt"] = r.ts
        else:
            rec["t"] = round(r.ts - base_t, 6)
        rec["n"] = r.metric
        if r.unit:
            rec["u"] = r.unit
        rec["v"] = r.value
        if r.quality:
            rec["q"] = int(r.quality)
        records.append(rec)
    return _dumps({"v": VERSION, "gw": gw, "boot": boot, "seq": seq, "e": records})


def decode_telemetry(raw: bytes | str, max_bytes: int | None = None) -> Batch:
    """Decode and validate a telemetry batch; any bad record rejects the whole payload."""
    obj = _loads(raw, max_bytes)
    gw, boot, seq = _envelope(obj)
    recs = obj.get("e")
    if not isinstance(recs, list):
        raise PayloadError("wrong_type", "e is not a list")
    readings: list[Reading] = []
    device: str | None = None
    bt = 0.0
    bu = ""
    for i, rec in enumerate(recs):
        where = f"e[{i}]"
        if not isinstance(rec, dict):
            raise PayloadError("wrong_type", f"{where} is not an object")
        if "bn" in rec:
            bn = _str(rec, "bn", where)
            dev = bn[:-1] if bn.endswith("/") else ""
            if not is_valid_id(dev):
                raise PayloadError("bad_device_id", f"{where}.bn={bn[:80]!r}")
            device = dev
        if "bt" in rec:
            bt = _num(rec, "bt", where)
        if "bu" in rec:
            bu = _str(rec, "bu", where)
        if device is None:
            raise PayloadError("bad_device_id", f"{where} has no base name")
        metric = _str(rec, "n", where)
        expected_unit = METRIC_UNITS.get(metric)
        if expected_unit is None:
            raise PayloadError("unknown_metric", f"{where}.n={metric[:40]!r}")
        unit = _str(rec, "u", where) if "u" in rec else bu
        if unit != expected_unit:
            raise PayloadError("unit_mismatch", f"{where}: {metric} in {unit!r}, expected {expected_unit!r}")
        value = _num(rec, "v", where)
        t = _num(rec, "t", where) if "t" in rec else 0.0
        q_raw = rec.get("q", 0)
        if isinstance(q_raw, bool) or not isinstance(q_raw, int) or q_raw not in _QUALITIES:
            raise PayloadError("bad_quality", f"{where}.q={q_raw!r}")
        ts = round(bt + t, 3)
        readings.append(Reading(device, metric, ts, value, unit, _QUALITIES[q_raw]))
    return Batch(gw, boot, seq, readings=readings)


# ---------------------------------------------------------------- events


def encode_events(gw: str, boot: str, seq: int, events: Sequence[Event]) -> bytes:
    return _dumps(
        {
            "v": VERSION,
            "gw": gw,
            "boot": boot,
            "seq": seq,
            "events": [{"device": e.device, "kind": e.kind, "id": e.id, "t": e.ts, "body": e.body} for e in events],
        }
    )


def decode_events(raw: bytes | str, max_bytes: int | None = None) -> Batch:
    obj = _loads(raw, max_bytes)
    gw, boot, seq = _envelope(obj)
    recs = obj.get("events")
    if not isinstance(recs, list):
        raise PayloadError("wrong_type", "events is not a list")
    out: list[Event] = []
    for i, rec in enumerate(recs):
        where = f"events[{i}]"
        if not isinstance(rec, dict):
            raise PayloadError("wrong_type", f"{where} is not an object")
        device = rec.get("device")
        if not is_valid_id(device):
            raise PayloadError("bad_device_id", f"{where}.device")
        kind = _str(rec, "kind", where)
        if not is_valid_id(kind.replace("_", "-")):
            raise PayloadError("bad_event_kind", f"{where}.kind={kind[:40]!r}")
        ev_id = _str(rec, "id", where)
        if not 0 < len(ev_id) <= 64:
            raise PayloadError("bad_event_id", where)
        ts = round(_num(rec, "t", where), 3)
        body = rec.get("body", {})
        if not isinstance(body, dict):
            raise PayloadError("wrong_type", f"{where}.body is not an object")
        _check_json_clean(body, f"{where}.body")
        assert isinstance(device, str)
        out.append(Event(device, kind, ev_id, ts, body))
    return Batch(gw, boot, seq, events=out)


# ---------------------------------------------------------------- status, ack


def encode_status(status: Status) -> bytes:
    obj: dict[str, Any] = {"v": VERSION, "state": status.state, "boot": status.boot}
    if status.state == "online":
        obj["agent"] = status.agent
        obj["devices"] = [d.to_json() for d in status.devices]
        obj["health"] = status.health
    return _dumps(obj)


def _device_info(obj: Any, where: str) -> DeviceInfo:
    if not isinstance(obj, dict):
        raise PayloadError("wrong_type", f"{where} is not an object")
    dev_id = obj.get("id")
    if not is_valid_id(dev_id):
        raise PayloadError("bad_device_id", where)
    _check_json_clean(obj, where)
    opt_num = {}
    for key in ("lat", "lon", "interval_s"):
        if obj.get(key) is not None:
            opt_num[key] = _num(obj, key, where)
    opt_str = {}
    for key in ("grid", "component_id", "owner", "circuit"):
        if obj.get(key) is not None:
            opt_str[key] = _str(obj, key, where)
    tags = obj.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise PayloadError("wrong_type", f"{where}.tags")
    assert isinstance(dev_id, str)
    return DeviceInfo(
        id=dev_id,
        profile=_str(obj, "profile", where),
        kind=_str(obj, "kind", where),
        tags=tuple(tags),
        lat=opt_num.get("lat"),
        lon=opt_num.get("lon"),
        interval_s=opt_num.get("interval_s"),
        grid=opt_str.get("grid"),
        component_id=opt_str.get("component_id"),
        owner=opt_str.get("owner"),
        circuit=opt_str.get("circuit"),
    )


def decode_status(raw: bytes | str, max_bytes: int | None = None) -> Status:
    obj = _loads(raw, max_bytes)
    state = obj.get("state")
    if state not in ("online", "offline"):
        raise PayloadError("bad_state", repr(state)[:40])
    boot = obj.get("boot")
    if not isinstance(boot, str) or not BOOT_PATTERN.fullmatch(boot):
        raise PayloadError("bad_boot", repr(boot)[:80])
    devices_raw = obj.get("devices", [])
    if not isinstance(devices_raw, list):
        raise PayloadError("wrong_type", "devices is not a list")
    devices = [_device_info(d, f"devices[{i}]") for i, d in enumerate(devices_raw)]
    health = obj.get("health", {})
    if not isinstance(health, dict):
        raise PayloadError("wrong_type", "health is not an object")
    _check_json_clean(health, "health")
    agent = obj.get("agent")
    return Status(str(state), boot, agent if isinstance(agent, str) else None, devices, health)


def encode_ack(acked: dict[str, int]) -> bytes:
    return _dumps({"v": VERSION, "acked": acked})


def decode_ack(raw: bytes | str) -> dict[str, int]:
    obj = _loads(raw, 1 << 16)
    acked = obj.get("acked")
    if not isinstance(acked, dict):
        raise PayloadError("wrong_type", "acked is not an object")
    out: dict[str, int] = {}
    for boot, seq in acked.items():
        if not BOOT_PATTERN.fullmatch(boot) or isinstance(seq, bool) or not isinstance(seq, int):
            raise PayloadError("bad_ack", f"{boot!r}: {seq!r}")
        out[boot] = seq
    return out


# ---------------------------------------------------------------- commands


def encode_command(cmd: Command) -> bytes:
    return _dumps({"v": VERSION, "id": cmd.id, "device": cmd.device, "action": cmd.action, "args": cmd.args})


def decode_command(raw: bytes | str) -> Command:
    obj = _loads(raw, 1 << 16)
    cmd_id = _str(obj, "id", "cmd")
    if not 0 < len(cmd_id) <= 64:
        raise PayloadError("bad_command_id", cmd_id[:80])
    action = _str(obj, "action", "cmd")
    device = obj.get("device")
    if device is not None and not is_valid_id(device):
        raise PayloadError("bad_device_id", "cmd.device")
    args = obj.get("args") or {}
    if not isinstance(args, dict):
        raise PayloadError("wrong_type", "cmd.args is not an object")
    _check_json_clean(args, "cmd.args")
    return Command(cmd_id, action, device, args)


def encode_command_result(res: CommandResult) -> bytes:
    return _dumps({"v": VERSION, "id": res.id, "ok": res.ok, "error": res.error, "detail": res.detail})


def decode_command_result(raw: bytes | str) -> CommandResult:
    obj = _loads(raw, 1 << 16)
    ok = obj.get("ok")
    if not isinstance(ok, bool):
        raise PayloadError("wrong_type", "ok is not a boolean")
    err = obj.get("error")
    detail = obj.get("detail") or {}
    if not isinstance(detail, dict):
        raise PayloadError("wrong_type", "detail is not an object")
    return CommandResult(_str(obj, "id", "result"), ok, err if isinstance(err, str) else None, detail)


# ---------------------------------------------------------------- alarms


def encode_alarm(tr: AlarmTransition) -> bytes:
    obj: dict[str, Any] = {
        "v": VERSION,
        "alarm_id": tr.alarm_id,
        "device": tr.device,
        "rule": tr.rule,
        "kind": tr.kind.value,
        "severity": tr.severity.value,
        "t": tr.t,
        "value": tr.value,
        "evidence": tr.evidence,
    }
    if tr.actor is not None:
        obj["actor"] = tr.actor
    return _dumps(obj)


def decode_alarm(raw: bytes | str) -> AlarmTransition:
    obj = _loads(raw, 1 << 20)
    device = obj.get("device")
    if not is_valid_id(device):
        raise PayloadError("bad_device_id", "alarm.device")
    try:
        kind = TransitionKind(str(obj.get("kind")))
        severity = Severity(str(obj.get("severity")))
    except ValueError as exc:
        raise PayloadError("bad_alarm", str(exc)) from exc
    value = obj.get("value")
    if value is not None:
        value = _num(obj, "value", "alarm")
    evidence = obj.get("evidence") or {}
    if not isinstance(evidence, dict):
        raise PayloadError("wrong_type", "alarm.evidence is not an object")
    _check_json_clean(evidence, "alarm.evidence")
    actor = obj.get("actor")
    assert isinstance(device, str)
    return AlarmTransition(
        alarm_id=_str(obj, "alarm_id", "alarm"),
        device=device,
        rule=_str(obj, "rule", "alarm"),
        kind=kind,
        severity=severity,
        t=_num(obj, "t", "alarm"),
        value=value,
        evidence=evidence,
        actor=actor if isinstance(actor, str) else None,
    )


# ---------------------------------------------------------------- alarm acks, open cases


ACK_ACTIONS = ("ack", "clear")


@dataclass(frozen=True, slots=True)
class AlarmAck:
    """A person's decision on an alarm: acknowledge it, or clear one that no sensor can clear."""

    alarm_id: str
    device: str
    actor: str
    t: float
    note: str = ""
    action: str = "ack"  # ack | clear


def encode_alarm_ack(ack: AlarmAck) -> bytes:
    obj: dict[str, Any] = {"v": VERSION, "alarm_id": ack.alarm_id, "device": ack.device, "actor": ack.actor,
                           "t": ack.t, "note": ack.note}
    if ack.action != "ack":
        obj["action"] = ack.action
    return _dumps(obj)


def decode_alarm_ack(raw: bytes | str) -> AlarmAck:
    obj = _loads(raw, 1 << 16)
    device = obj.get("device")
    if not is_valid_id(device):
        raise PayloadError("bad_device_id", "ack.device")
    assert isinstance(device, str)
    note = obj.get("note", "")
    action = obj.get("action", "ack")
    if action not in ACK_ACTIONS:
        raise PayloadError("bad_action", "ack.action")
    return AlarmAck(
        _str(obj, "alarm_id", "ack"),
        device,
        _str(obj, "actor", "ack"),
        _num(obj, "t", "ack"),
        note if isinstance(note, str) else "",
        str(action),
    )


@dataclass(frozen=True, slots=True)
class OpenCases:
    """Retained per device: rule names (conditions) that currently have an open case."""

    device: str
    cases: dict[str, str] = field(default_factory=dict)  # rule -> case id


def encode_open_cases(oc: OpenCases) -> bytes:
    return _dumps({"v": VERSION, "device": oc.device, "cases": oc.cases})


def decode_open_cases(raw: bytes | str) -> OpenCases:
    obj = _loads(raw, 1 << 16)
    device = obj.get("device")
    if not is_valid_id(device):
        raise PayloadError("bad_device_id", "open_cases.device")
    cases = obj.get("cases") or {}
    if not isinstance(cases, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in cases.items()):
        raise PayloadError("wrong_type", "open_cases.cases")
    assert isinstance(device, str)
    return OpenCases(device, cases)
