"""The REST API (``/api/v1``): devices, readings, alarms, cases, statistics, admin, live feed.

Handlers are plain ``def`` (FastAPI runs them in its thread pool) because the stores are
synchronous and thread-safe. Every case handler checks the object-level policy
(:mod:`console.policy`) on the case it loaded, not only the route permission.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse

from case_bridge.errors import MediaRejected
from case_bridge.media import STAGES, check_upload
from case_bridge.policy import SENSOR_GATED, StreetReading
from cloud_ingest.rollup import auto_bucket_s
from console import media_files, serialize, thresholds
from console.auth import DUMMY_HASH, csrf_token, issue_token, verify_password
from console.context import SESSION_COOKIE, Ctx, client_ip, ctx_of, need, principal_of, writer
from console.errors import AuthError, BadRequest, Conflict, Forbidden, NotFound, RateLimited, StoreUnavailable
from console.live import LiveEvent, stream
from console.policy import (
    Perm,
    Principal,
    case_scope,
    case_visible,
    contact_visible,
    filter_actions,
    has,
    media_upload_allowed,
)
from console.schemas import AckBody, ActionBody, LoginBody, TokenOut
from console.views import CaseFilter, CaseView

router = APIRouter(prefix="/api/v1")

CtxDep = Annotated[Ctx, Depends(ctx_of)]
MAX_POINTS = 5000


class PageTooLarge(BadRequest):
    status_code = 422
    code = "validation"

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def check_page(ctx: Ctx, limit: int) -> None:
    if limit > ctx.settings.max_page_size:
        raise PageTooLarge("query.limit", f"limit must be <= {ctx.settings.max_page_size}")


# ------------------------------------------------------------------ auth


def login(ctx: Ctx, request: Request, username: str, password: str) -> tuple[str, TokenOut]:
    """Shared by the API and the login page.

    Two limits (policy in docs/security.md): a token bucket per client address, and an
    exponential backoff per (account, address) on failures, reset by a success. There is
    no per-account lock: one that anyone could trigger would lock the owner out for as
    long as the attacker keeps trying.
    """
    now = ctx.clock()
    ip = client_ip(request)
    ctx.login_limiter.take(f"ip:{ip}", now)
    try:
        ctx.login_backoff.check(username, ip, now)
    except RateLimited:
        ctx.audit(username[:64], "login", f"user:{username[:64]}", 429, ip=ip)
        raise
    user = ctx.users.get(username)
    ok = verify_password(user.password_hash if user else DUMMY_HASH, password) and user is not None
    if not ok or user is None:
        ctx.login_backoff.failed(username, ip, now)
        ctx.audit(username[:64], "login", f"user:{username[:64]}", 401, ip=ip)
        raise AuthError("wrong username or password")
    ctx.login_backoff.succeeded(username, ip)
    principal = Principal(user.username, user.role, user.unit)
    token, claims = issue_token(ctx.settings.secret_key, principal, now, ctx.settings.token_ttl_s)
    ctx.audit(user.username, "login", f"user:{user.username}", 200, ip=ip)
    return token, TokenOut(access_token=token, expires_at=claims.exp, username=user.username, role=user.role.value,
                           unit=user.unit, csrf_token=csrf_token(ctx.settings.secret_key, token))


@router.post("/auth/login", response_model=TokenOut, tags=["auth"], summary="Log in; returns a bearer token")
def api_login(body: LoginBody, request: Request, response: Response, ctx: CtxDep) -> TokenOut:
    token, out = login(ctx, request, body.username, body.password)
    response.set_cookie(SESSION_COOKIE, token, max_age=ctx.settings.token_ttl_s, httponly=True, samesite="strict",
                        secure=ctx.settings.cookie_secure)
    return out


@router.get("/auth/me", tags=["auth"], summary="Who am I")
def me(principal: Annotated[Principal, Depends(principal_of)]) -> dict[str, Any]:
    return {"username": principal.username, "role": principal.role, "unit": principal.unit}


# ------------------------------------------------------------------ devices and readings


@router.get("/devices", tags=["devices"], summary="Devices with location, profile, online state, latest values")
def list_devices(
    ctx: CtxDep, _p: Annotated[Principal, Depends(need(Perm.DEVICES_READ))],
    kind: Annotated[str | None, Query(max_length=32)] = None,
    online: bool | None = None,
    limit: Annotated[int, Query(ge=1)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    check_page(ctx, limit)
    devs = [d for d in ctx.stores.devices.devices()
            if (kind is None or d.kind == kind) and (online is None or d.online == online)]
    devs.sort(key=lambda d: d.id)
    return {"total": len(devs), "items": [serialize.device(d) for d in devs[offset: offset + limit]]}


def _device_or_404(ctx: Ctx, device_id: str) -> Any:
    dev = ctx.stores.devices.device(device_id)
    if dev is None:
        raise NotFound(f"no device {device_id!r}")
    return dev


@router.get("/devices/{device_id}", tags=["devices"], summary="One device")
def get_device(device_id: str, ctx: CtxDep,
               _p: Annotated[Principal, Depends(need(Perm.DEVICES_READ))]) -> dict[str, Any]:
    return serialize.device(_device_or_404(ctx, device_id))


@router.get("/devices/{device_id}/readings", tags=["devices"], summary="Readings over a range, downsampled")
def readings(  # noqa: PLR0917
    device_id: str, ctx: CtxDep, _p: Annotated[Principal, Depends(need(Perm.DEVICES_READ))],
    metric: Annotated[str, Query(min_length=1, max_length=32)] = "depth",
    start: Annotated[float | None, Query(ge=0, le=1e11)] = None,
    end: Annotated[float | None, Query(ge=0, le=1e11)] = None,
    bucket_s: Annotated[float | None, Query(gt=0, le=86400 * 31)] = None,
    max_points: Annotated[int, Query(ge=10, le=MAX_POINTS)] = 300,
) -> dict[str, Any]:
    """Averages (with min/max) per bucket; the bucket defaults to what fits ``max_points``."""
    _device_or_404(ctx, device_id)
    end_t = ctx.clock() if end is None else end
    start_t = end_t - 86400 if start is None else start
    if start_t >= end_t:
        raise PageTooLarge("query.start", "start must be before end")
    span = end_t - start_t
    # by default a bucket that fits max_points, rounded to a rollup resolution on long windows
    bucket = bucket_s if bucket_s is not None else auto_bucket_s(span, max_points)
    if span / bucket > MAX_POINTS:
        raise PageTooLarge("query.bucket_s", f"more than {MAX_POINTS} points: use a larger bucket_s")
    points = ctx.stores.devices.series(device_id, metric, start_t, end_t, bucket)
    return {"device": device_id, "metric": metric, "start": start_t, "end": end_t, "bucket_s": bucket,
            "points": [[p.t, p.value, p.lo, p.hi] for p in points]}


# ------------------------------------------------------------------ overview

TOP_GAUGES = 40


def overview_data(ctx: Ctx, now: float) -> dict[str, Any]:
    """Devices by type and state, the deepest water gauges with a 6 h trend, active alarms.

    Only the ``TOP_GAUGES`` deepest gauges get a trend series: a wall screen cannot show
    thousands of sparklines, and each one is a range query. The result is the same for every
    viewer, so it is shared for ``overview_cache_s`` (live changes arrive over SSE meanwhile).
    """
    data: dict[str, Any] = ctx.cache.get("overview", ctx.settings.overview_cache_s, lambda: _overview(ctx, now))
    return data


def _overview(ctx: Ctx, now: float) -> dict[str, Any]:
    devices = ctx.stores.devices.devices()
    alarms = serialize.sort_alarms(ctx.stores.alarms.active())
    alarmed: dict[str, str] = {}
    for a in alarms:
        alarmed.setdefault(a.device, a.severity)
    counts: dict[str, dict[str, int]] = {}
    for d in devices:
        state = "alarm" if d.id in alarmed else ("online" if d.online else "offline")
        per = counts.setdefault(d.kind, {"online": 0, "alarm": 0, "offline": 0})
        per[state] += 1
    gauges = [d for d in devices if d.kind == "water_gauge"]
    gauges.sort(key=lambda d: (d.id not in alarmed, -(d.latest["depth"].value if "depth" in d.latest else -1.0), d.id))
    top = []
    for d in gauges[:TOP_GAUGES]:
        pts = ctx.stores.devices.series(d.id, "depth", now - 6 * 3600, now, 600)
        depth = d.latest.get("depth")
        top.append({"device": d.id, "depth_m": depth.value if depth else None, "ts": depth.ts if depth else None,
                    "trend": [round(p.value, 4) for p in pts], "severity": alarmed.get(d.id)})
    return {"counts": counts, "gauges": top, "gauges_total": len(gauges), "alarms": alarms, "alarmed": alarmed,
            "devices": devices}


@router.get("/overview", tags=["devices"], summary="Duty-officer overview: counts, deepest gauges, active alarms")
def overview(ctx: CtxDep, _p: Annotated[Principal, Depends(need(Perm.DEVICES_READ))]) -> dict[str, Any]:
    data = overview_data(ctx, ctx.clock())
    return {"counts": data["counts"], "gauges": data["gauges"], "gauges_total": data["gauges_total"],
            "alarms": [serialize.alarm(a) for a in data["alarms"]]}


# ------------------------------------------------------------------ alarms


@router.get("/alarms", tags=["alarms"], summary="Active alarms, most severe first")
def list_alarms(
    ctx: CtxDep, _p: Annotated[Principal, Depends(need(Perm.ALARMS_READ))],
    device: Annotated[str | None, Query(max_length=63)] = None,
    severity: Annotated[str | None, Query(pattern="^(minor|major|critical)$")] = None,
) -> dict[str, Any]:
    alarms = [a for a in ctx.stores.alarms.active()
              if (device is None or a.device == device) and (severity is None or a.severity == severity)]
    return {"total": len(alarms), "items": [serialize.alarm(a) for a in serialize.sort_alarms(alarms)]}


@router.get("/alarms/{alarm_id}", tags=["alarms"], summary="One alarm")
def get_alarm(alarm_id: str, ctx: CtxDep, _p: Annotated[Principal, Depends(need(Perm.ALARMS_READ))]) -> dict[str, Any]:
    a = ctx.stores.alarms.get(alarm_id)
    if a is None:
        raise NotFound(f"no alarm {alarm_id!r}")
    return serialize.alarm(a)


@router.post("/alarms/{alarm_id}/ack", status_code=202, tags=["alarms"],
             summary="Acknowledge: sent to the rule engine, which publishes the acknowledged transition")
def ack_alarm(alarm_id: str, ctx: CtxDep, p: Annotated[Principal, Depends(writer(Perm.ALARMS_ACK))],
              body: AckBody | None = None) -> dict[str, Any]:
    a = ctx.stores.alarms.get(alarm_id)
    if a is None:
        ctx.audit(p.actor, "alarm.ack", f"alarm:{alarm_id[:64]}", 404)
        raise NotFound(f"no alarm {alarm_id!r}")
    if a.state == "cleared":
        ctx.audit(p.actor, "alarm.ack", f"alarm:{alarm_id}", 409)
        raise Conflict("alarm already cleared")
    if ctx.stores.acks is None:
        raise StoreUnavailable("no broker connection for acknowledgements")
    note = body.note if body else ""
    now = ctx.clock()
    try:
        ctx.stores.acks.send_ack(a.alarm_id, a.device, p.actor, now, note)
    except StoreUnavailable:
        ctx.audit(p.actor, "alarm.ack", f"alarm:{alarm_id}", 503)
        raise
    ctx.audit(p.actor, "alarm.ack", f"alarm:{alarm_id}", 202, device=a.device, note=note)
    ctx.hub.publish(LiveEvent("alarm", {"alarm_id": a.alarm_id, "device": a.device, "rule": a.rule,
                                        "kind": "ack-sent", "severity": a.severity, "t": now, "actor": p.actor}))
    return {"status": "sent", "alarm_id": a.alarm_id, "actor": p.actor, "t": now}


# ------------------------------------------------------------------ cases


def load_case(ctx: Ctx, p: Principal, case_id: str) -> CaseView:
    """The case if this principal may see it; otherwise 404, exactly as if it did not exist."""
    c = ctx.stores.cases.get(case_id)
    if c is None or not case_visible(p, c.unit):
        raise NotFound(f"no case {case_id!r}")
    return c


def case_actions(ctx: Ctx, p: Principal, c: CaseView) -> list[str]:
    if p.role is None:
        return []
    return filter_actions(p, c.unit, ctx.stores.cases.allowed_actions(c, p.role.value))


@router.get("/cases", tags=["cases"], summary="Worklist: overdue first, then by deadline")
def list_cases(  # noqa: PLR0917
    ctx: CtxDep, p: Annotated[Principal, Depends(need(Perm.CASES_READ))],
    state: Annotated[str | None, Query(max_length=200, pattern=r"^[a-z_,]*$")] = None,
    unit: Annotated[str | None, Query(max_length=64)] = None,
    category: Annotated[str | None, Query(max_length=32)] = None,
    overdue: bool | None = None,
    device: Annotated[str | None, Query(max_length=63)] = None,
    open_only: bool = False,
    limit: Annotated[int, Query(ge=1)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    check_page(ctx, limit)
    scope = case_scope(p)
    if scope is not None:
        if unit is not None and unit != scope:
            raise Forbidden("you may only list the cases of your own unit")
        unit = scope
    states = tuple(s for s in (state or "").split(",") if s)
    now = ctx.clock()
    page = ctx.stores.cases.worklist(
        CaseFilter(states=states, unit=unit, category=category, overdue=overdue, device=device,
                   status="open" if open_only else None, limit=limit, offset=offset), now)
    return {"total": page.total, "items": [serialize.case(c, now) for c in page.items]}


@router.get("/cases/{case_id}", tags=["cases"], summary="Case detail with timeline, audit and allowed actions")
def get_case(case_id: str, ctx: CtxDep, p: Annotated[Principal, Depends(need(Perm.CASES_READ))]) -> dict[str, Any]:
    c = load_case(ctx, p, case_id)
    now = ctx.clock()
    audit = [{"t": e.t, "actor": e.actor, "action": e.action, "result": e.result, "detail": e.detail}
             for e in ctx.stores.audit.entries(f"case:{c.id}", limit=50)]
    timeline = ctx.stores.cases.timeline(c.id)
    return {"case": serialize.case(c, now, contact=contact_visible(p, c.unit)),
            "timeline": serialize.timeline(timeline), "urges": serialize.urges(timeline),
            "actions": case_actions(ctx, p, c), "audit": audit}


@router.post("/cases/{case_id}/actions", tags=["cases"], summary="Take a workflow action on a case")
def act_on_case(case_id: str, body: ActionBody, ctx: CtxDep,
                p: Annotated[Principal, Depends(writer(Perm.CASES_ACT))]) -> dict[str, Any]:
    c = load_case(ctx, p, case_id)
    allowed = case_actions(ctx, p, c)
    if body.action not in allowed:
        ctx.audit(p.actor, f"case.{body.action}", f"case:{c.id}", 409, state=c.state)
        raise Conflict(f"action {body.action!r} not allowed in state {c.state!r} for you; allowed: {allowed}")
    assert p.role is not None
    now = ctx.clock()
    request_id = body.request_id or uuid.uuid4().hex
    readings = street_readings(ctx, c) if body.action in GATED_ACTIONS else ()
    updated = ctx.stores.cases.transition(c.id, body.action, actor=p.actor, role=p.role.value, note=body.note,
                                           request_id=request_id, now=now, override_reason=body.override_reason,
                                           unit=body.unit, readings=readings)
    ctx.audit(p.actor, f"case.{body.action}", f"case:{c.id}", 200, frm=c.state, to=updated.state,
              request_id=request_id, override=body.override_reason)
    ctx.hub.publish(LiveEvent("case", serialize.case(updated, now), unit=updated.unit))
    return {"case": serialize.case(updated, now), "actions": case_actions(ctx, p, updated)}


@router.post("/cases/{case_id}/media", status_code=201, tags=["cases"],
             summary="Attach a photo (raw JPEG/PNG/WebP body; stage before | after | report)",
             openapi_extra={"requestBody": {"content": {t: {"schema": {"type": "string", "format": "binary"}}
                                                        for t in ("image/jpeg", "image/png", "image/webp")}}})
async def upload_media(case_id: str, request: Request, ctx: CtxDep,
                       p: Annotated[Principal, Depends(writer(Perm.CASES_ACT))],
                       stage: Annotated[str, Query(pattern="^(before|after|report)$")] = "after") -> dict[str, Any]:
    """The body is the image itself (no multipart dependency); its type is read from its magic bytes."""
    from starlette.concurrency import run_in_threadpool

    c = await run_in_threadpool(load_case, ctx, p, case_id)
    if not media_upload_allowed(p, c.unit):
        raise NotFound(f"no case {case_id!r}")  # as for reading: another unit's case does not exist
    if not request.headers.get("content-type", "").startswith("image/"):
        raise BadRequest("send the photo as the raw body with Content-Type image/jpeg, image/png or image/webp")
    data = await request.body()
    try:
        kind = check_upload(data, ctx.settings.media_max_bytes)
    except MediaRejected as exc:
        ctx.audit(p.actor, "case.media", f"case:{c.id}", 400, error=str(exc))
        raise BadRequest(str(exc)) from exc
    assert stage in STAGES and p.role is not None
    now = ctx.clock()
    name, digest = await run_in_threadpool(media_files.store, ctx.settings.media_dir, c.id, data, kind)
    entry = {"id": uuid.uuid4().hex[:16], "stage": stage, "content_type": kind, "size_bytes": len(data),
             "sha256": digest, "file": name, "t": now, "by": p.actor}
    updated = await run_in_threadpool(lambda: ctx.stores.cases.add_media(c.id, entry, actor=p.actor,
                                                                         role=p.role.value if p.role else "",
                                                                         now=now))
    ctx.audit(p.actor, "case.media", f"case:{c.id}", 201, stage=stage, media=entry["id"], bytes=len(data))
    return {"media": serialize.media_item(c.id, entry), "case": serialize.case(updated, now)}


@router.get("/cases/{case_id}/media/{media_id}", tags=["cases"], summary="One photo of a case (case access rules)")
def get_media(case_id: str, media_id: str, ctx: CtxDep,
              p: Annotated[Principal, Depends(need(Perm.CASES_READ))]) -> Response:
    c = load_case(ctx, p, case_id)
    entry = next((m for m in c.media if m.get("id") == media_id), None)
    if entry is None:
        raise NotFound(f"no photo {media_id[:32]!r} on case {c.id}")
    body = media_files.read(ctx.settings.media_dir, str(entry.get("file", "")))
    return Response(body, media_type=str(entry.get("content_type")),
                    headers={"Cache-Control": "private, no-store", "Content-Disposition": "inline"})


GATED_ACTIONS = frozenset(a.value for a in SENSOR_GATED)


def street_readings(ctx: Ctx, c: CaseView) -> tuple[StreetReading, ...]:
    """The latest reading of a sensor case's device for its rule, with the rule's clear condition.

    The shell half of the sensor gate: the time-series store's latest value and the rule files'
    clear level are read here and passed to the pure gate (:func:`case_bridge.policy.sensor_gate`).
    """
    if c.source != "iot" or not c.device or not c.rule:
        return ()
    d = ctx.stores.devices.device(c.device)
    if d is None:
        return ()
    rules = ctx.cache.get("rules", 1e12, lambda: thresholds.load(ctx.settings.rules_files))
    out: list[StreetReading] = []
    for cond in thresholds.clear_conditions(rules, d):
        if cond.rule == c.rule:
            m = d.latest.get(cond.metric)
            out.append(StreetReading(d.id, cond, None if m is None else m.value, None if m is None else m.ts))
    return tuple(out)


@router.get("/categories", tags=["cases"], summary="Case categories (Open311 services)")
def categories(ctx: CtxDep, _p: Annotated[Principal, Depends(principal_of)]) -> list[dict[str, Any]]:
    return [{"code": c.code, "name": c.name, "kind": c.kind, "group": c.group} for c in ctx.stores.cases.categories()]


@router.get("/units", tags=["cases"], summary="Responsible units")
def units(ctx: CtxDep, _p: Annotated[Principal, Depends(principal_of)]) -> list[dict[str, Any]]:
    return [{"id": u.id, "name": u.name} for u in ctx.stores.cases.units()]


@router.get("/statistics", tags=["statistics"], summary="On-time rate per unit and category; cases by hour")
def statistics(
    ctx: CtxDep, _p: Annotated[Principal, Depends(need(Perm.STATS_READ))],
    start: Annotated[float | None, Query(ge=0, le=1e11)] = None,
    end: Annotated[float | None, Query(ge=0, le=1e11)] = None,
) -> dict[str, Any]:
    now = ctx.clock()
    end_t = now if end is None else end
    start_t = end_t - 30 * 86400 if start is None else start
    if start_t >= end_t:
        raise PageTooLarge("query.start", "start must be before end")
    st = ctx.stores.cases.statistics(start_t, end_t, now)
    return {
        "start": start_t, "end": end_t,
        "by_unit": [asdict(r) for r in st.by_unit],
        "by_category": [asdict(r) for r in st.by_category],
        "total": asdict(st.total) if st.total else None,
        "by_hour": [{"hour": h, "category": cat, "cases": n} for (h, cat), n in sorted(st.by_hour.items())],
    }


# ------------------------------------------------------------------ admin and audit


@router.get("/admin/users", tags=["admin"], summary="Configured users (never their hashes)")
def admin_users(ctx: CtxDep, _p: Annotated[Principal, Depends(need(Perm.USERS_ADMIN))]) -> list[dict[str, Any]]:
    return [{"username": u.username, "role": u.role.value, "unit": u.unit, "display_name": u.display_name}
            for u in ctx.users.values()]


@router.post("/admin/reload", tags=["admin"], summary="Reload users, API keys and limits from the config file")
def admin_reload(ctx: CtxDep, p: Annotated[Principal, Depends(writer(Perm.CONFIG_RELOAD))]) -> dict[str, Any]:
    if ctx.reload is None:
        raise Conflict("this console was not started from a config file")
    try:
        settings = ctx.reload()
    except Exception as exc:  # a bad file must not take the running console down
        ctx.audit(p.actor, "config.reload", "config", 400, error=str(exc)[:300])
        raise BadRequest(f"config not reloaded: {exc}") from exc
    ctx.apply(settings)
    ctx.audit(p.actor, "config.reload", "config", 200, users=len(settings.users))
    return {"status": "reloaded", "users": len(settings.users), "api_keys": len(settings.api_keys)}


@router.get("/audit", tags=["admin"], summary="Console audit log (logins, acknowledgements, actions)")
def audit_log(
    ctx: CtxDep, _p: Annotated[Principal, Depends(need(Perm.AUDIT_READ))],
    object: Annotated[str | None, Query(max_length=120)] = None,
    limit: Annotated[int, Query(ge=1)] = 100,
) -> dict[str, Any]:
    check_page(ctx, limit)
    items = ctx.stores.audit.entries(object, limit)
    return {"items": [{"t": e.t, "actor": e.actor, "action": e.action, "object": e.obj, "result": e.result,
                       "detail": e.detail} for e in items], "chain_ok": ctx.stores.audit.verify()}


# ------------------------------------------------------------------ live


@router.get("/live", tags=["live"], summary="Server-Sent Events: reading, alarm, case (and gap) events",
            response_class=StreamingResponse)
async def live(request: Request, ctx: CtxDep) -> StreamingResponse:
    p = principal_of(request)
    if not has(p, Perm.DEVICES_READ):
        raise Forbidden("no live feed for this role")

    def allow(ev: LiveEvent) -> bool:
        return ev.kind != "case" or case_visible(p, ev.unit)

    sub = ctx.hub.subscribe()
    return StreamingResponse(stream(ctx.hub, sub, allow, is_disconnected=request.is_disconnected),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
