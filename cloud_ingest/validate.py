"""Pure validation of one MQTT message: accepted batch/status, or a dead letter with a reason.

``classify(topic, payload, now, limits, identity)`` never raises for bad input and never
reads a clock: ``now`` is a parameter. Event bodies are checked against the schema the device
profiles declare (unknown kind, undeclared key, wrong type or range, a list not as long as its
count says); a batch with such an event is dead-lettered whole, with the event and the reason.
A rejected payload keeps its ``(gw, boot, seq)``
when the envelope can be salvaged and belongs to the topic's gateway: a dead-lettered
message still counts as committed for the ack watermark, or the edge would resend it forever.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import orjson

from cloud_ingest.fastdecode import RowBatch, decode_telemetry_rows
from contracts.errors import ContractError, PayloadError
from contracts.ids import is_valid_id
from contracts.payloads import BOOT_PATTERN, Batch, Status, decode_events, decode_status
from contracts.topics import parse_gw_topic
from gateway.events import BodyKey, check_event
from gateway.events import event_schemas as _schemas_of

_HEAD = re.compile(
    rb'"gw"\s*:\s*"([a-z0-9][a-z0-9-]{0,62})"\s*,\s*"boot"\s*:\s*"([A-Za-z0-9-]{1,64})"\s*,\s*"seq"\s*:\s*(\d{1,18})[,}]'
)


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int = 256 * 1024
    late_limit_s: float = 14 * 86400.0  # oldest sample time accepted, relative to now
    skew_limit_s: float = 300.0  # newest sample time accepted ahead of now (gateway clock skew)


@dataclass(frozen=True, slots=True)
class Accepted:
    kind: str  # telemetry | events | status
    gw: str
    batch: Batch | None = None  # events
    rows: RowBatch | None = None  # telemetry, as identity rows (see cloud_ingest.fastdecode)
    status: Status | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    detail: str
    gw: str | None  # gateway of the topic, when the topic is a gateway topic
    seq: tuple[str, int] | None = None  # (boot, seq) to mark committed, when salvageable
    kind: str = ""


def salvage_envelope(payload: bytes, gw: str, max_bytes: int) -> tuple[str, int] | None:
    """(boot, seq) of a rejected payload if its envelope is intact and names ``gw``."""
    if len(payload) > max_bytes:
        m = _HEAD.search(payload[:512])
        if m and m.group(1).decode() == gw:
            return m.group(2).decode(), int(m.group(3))
        return None
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or obj.get("gw") != gw:
        return None
    boot, seq = obj.get("boot"), obj.get("seq")
    if not isinstance(boot, str) or not BOOT_PATTERN.fullmatch(boot):
        return None
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**63:
        return None
    return boot, seq


def classify(
    topic: str, payload: bytes, now: float, limits: Limits, identity: str | None = None
) -> Accepted | Rejected:
    """Decode and check one message; see the module docstring."""
    try:
        gw, kind = parse_gw_topic(topic)
    except ContractError as exc:
        return Rejected("bad_topic", str(exc)[:200], None)
    if identity is not None and identity != gw:
        return Rejected("identity_mismatch", f"publisher {identity[:64]!r} is not gateway {gw!r}", gw, kind=kind)
    try:
        if kind == "status":
            return Accepted("status", gw, status=decode_status(payload, limits.max_bytes))
        if kind == "telemetry":
            rb = decode_telemetry_rows(payload, limits.max_bytes)
            if rb.gw != gw:
                return Rejected("gw_mismatch", f"payload gw {rb.gw!r} on topic of {gw!r}", gw, kind=kind)
            lo, hi = now - limits.late_limit_s, now + limits.skew_limit_s
            if rb.rows and (rb.t_min < lo or rb.t_max > hi):
                return _out_of_window((rb.t_min, rb.t_max), (lo, hi), now, gw, seq=(rb.boot, rb.seq), kind=kind)
            return Accepted(kind, gw, rows=rb)
        if kind == "events":
            batch = decode_events(payload, limits.max_bytes)
        else:
            return Rejected("unexpected_topic", f"ingest does not take {kind!r}", gw, kind=kind)
    except PayloadError as exc:
        seq = None if kind == "status" else salvage_envelope(payload, gw, limits.max_bytes)
        return Rejected(exc.reason, exc.detail[:500], gw, seq, kind)
    except RecursionError:  # defence in depth: a decoder must never take the stream down
        return Rejected("too_deep", "nesting too deep", gw, kind=kind)
    if batch.gw != gw:
        return Rejected("gw_mismatch", f"payload gw {batch.gw!r} on topic of {gw!r}", gw, kind=kind)
    lo, hi = now - limits.late_limit_s, now + limits.skew_limit_s
    times = [e.ts for e in batch.events]
    if times and (min(times) < lo or max(times) > hi):
        return _out_of_window((min(times), max(times)), (lo, hi), now, gw, seq=(batch.boot, batch.seq), kind=kind)
    schemas = event_schemas()
    for i, e in enumerate(batch.events):
        why = check_event(schemas, e.kind, e.body)
        if why is not None:
            reason, _, detail = why.partition(": ")
            return Rejected(reason, f"events[{i}] {e.device} {e.id[:64]}: {detail}"[:500], gw, (batch.boot, batch.seq),
                            kind)
    return Accepted(kind, gw, batch=batch)


@functools.cache
def event_schemas() -> dict[str, dict[str, BodyKey]]:
    """Event kinds and bodies as the shipped device profiles declare them (the gateway's own schema)."""
    from gateway import profiles

    return _schemas_of(profiles.all_profiles())


def _out_of_window(
    span: tuple[float, float], window: tuple[float, float], now: float, gw: str, *, seq: tuple[str, int], kind: str
) -> Rejected:
    (t_min, t_max), (lo, hi) = span, window
    bad, why = (t_min, "too old") if t_min < lo else (t_max, "in the future")
    return Rejected("time_out_of_window", f"sample time {bad} {why} (now {now}, window [{lo}, {hi}])", gw, seq, kind)


def valid_share_group(name: str) -> bool:
    return is_valid_id(name)
