"""Server-rendered pages (Jinja2): overview, device, worklist, case, statistics, login, docs.

Pages read the same stores and apply the same policy as the API; the small script in
``static/console.js`` adds live updates (SSE), acknowledgements, workflow actions and charts
drawn as inline SVG. Labels are 中文 first, then English.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from console import serialize
from console.api import case_actions, load_case, login, overview_data
from console.auth import csrf_token
from console.context import SESSION_COOKIE, Ctx, ctx_of, principal_of, session_token
from console.errors import AuthError, ConsoleError, Forbidden, NotFound
from console.labels import ACTIONS, KINDS, ROLES, SEVERITIES, STATES, URGENCIES, zh_en
from console.open311 import parse_form
from console.policy import Perm, Principal, case_scope, case_visible, has
from console.svg import layout_map, sparkline
from console.views import CaseFilter

router = APIRouter(include_in_schema=False)
CHART_METRIC = {"water_gauge": "depth", "manhole": "tilt", "lamp": "power", "wim": "record_count"}
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def _fmt_time(ts: float | None, ctx: Ctx) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, ctx.tz).strftime("%m-%d %H:%M")


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    sign = "-" if seconds < 0 else ""
    s = abs(int(seconds))
    if s >= 86400:
        return f"{sign}{s // 86400}d {s % 86400 // 3600}h"
    if s >= 3600:
        return f"{sign}{s // 3600}h {s % 3600 // 60}m"
    return f"{sign}{s // 60}m"


def _page(request: Request, name: str, p: Principal, **data: Any) -> HTMLResponse:
    ctx = ctx_of(request)
    token, _ = session_token(request)
    data.update(
        request=request, me=p, role_label=zh_en(ROLES, p.role.value if p.role else ""),
        csrf=csrf_token(ctx.settings.secret_key, token or ""), t=lambda ts: _fmt_time(ts, ctx),
        dur=_fmt_duration, zh_en=zh_en, STATES=STATES, KINDS=KINDS, SEVERITIES=SEVERITIES, ACTIONS=ACTIONS,
        URGENCIES=URGENCIES, can=lambda perm: has(p, Perm(perm)),
        tz_offset_min=int((ctx.tz.utcoffset(datetime.now(ctx.tz)) or timedelta(0)).total_seconds() // 60),
    )
    return templates.TemplateResponse(request, name, data)


def _require(request: Request, perm: Perm) -> Principal:
    p = principal_of(request)
    if not has(p, perm):
        raise Forbidden(f"role {p.role} lacks {perm.value}")
    return p


def _safe_next(target: str | None) -> str:
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/", error: str = "") -> HTMLResponse:
    return templates.TemplateResponse(request, "login.html", {"next": _safe_next(next), "error": error})


@router.post("/login")
async def login_submit(request: Request) -> Response:
    ctx = ctx_of(request)
    form = parse_form(await request.body())
    nxt = _safe_next(form.get("next"))
    try:
        from starlette.concurrency import run_in_threadpool

        token, _out = await run_in_threadpool(login, ctx, request, form.get("username", "")[:64],
                                              form.get("password", "")[:256])
    except ConsoleError as exc:
        return templates.TemplateResponse(request, "login.html", {"next": nxt, "error": str(exc)},
                                          status_code=exc.status_code)
    resp = RedirectResponse(nxt, 303)
    resp.set_cookie(SESSION_COOKIE, token, max_age=ctx.settings.token_ttl_s, httponly=True, samesite="strict",
                    secure=ctx.settings.cookie_secure)
    return resp


@router.get("/logout")
def logout() -> Response:
    resp = RedirectResponse("/login", 303)
    resp.delete_cookie(SESSION_COOKIE)
    return resp


@router.get("/")
def home(request: Request) -> Response:
    try:
        p = principal_of(request)
    except AuthError:
        return RedirectResponse("/login", 303)
    if has(p, Perm.ALARMS_ACK):
        return RedirectResponse("/overview", 303)
    if has(p, Perm.CASES_READ):
        return RedirectResponse("/cases", 303)
    return RedirectResponse("/stats", 303)


@router.get("/overview", response_class=HTMLResponse)
def overview(request: Request) -> HTMLResponse:
    p = _require(request, Perm.DEVICES_READ)
    ctx = ctx_of(request)
    now = ctx.clock()
    data = overview_data(ctx, now)
    gauges = []
    for g in data["gauges"]:
        trend = g["trend"][-1] - g["trend"][0] if len(g["trend"]) >= 2 else 0.0
        gauges.append({**g, "spark": sparkline(g["trend"]), "delta": trend})
    return _page(request, "overview.html", p, alarms=data["alarms"], alarmed=data["alarmed"], counts=data["counts"],
                 kinds=sorted(data["counts"]), gauges=gauges, gauges_total=data["gauges_total"],
                 map=layout_map(data["devices"]), now=now)


@router.get("/devices/{device_id}", response_class=HTMLResponse)
def device_page(device_id: str, request: Request) -> HTMLResponse:
    p = _require(request, Perm.DEVICES_READ)
    ctx = ctx_of(request)
    d = ctx.stores.devices.device(device_id)
    if d is None:
        raise NotFound(f"no device {device_id!r}")
    alarms = ctx.stores.alarms.for_device(device_id, 50)
    cases: list[Any] = []
    if has(p, Perm.CASES_READ):
        page = ctx.stores.cases.worklist(CaseFilter(device=device_id, unit=case_scope(p), limit=50), ctx.clock())
        cases = [c for c in page.items if case_visible(p, c.unit)]
    metric = "depth" if "depth" in d.latest else (sorted(d.latest)[0] if d.latest else "depth")
    return _page(request, "device.html", p, d=d, alarms=alarms, cases=cases, metric=metric, now=ctx.clock())


@router.get("/cases", response_class=HTMLResponse)
def worklist_page(  # noqa: PLR0917
    request: Request, state: str = "", category: str = "", overdue: str = "", unit: str = "",
                  show: str = "open", offset: int = 0) -> HTMLResponse:
    p = _require(request, Perm.CASES_READ)
    ctx = ctx_of(request)
    now = ctx.clock()
    scope = case_scope(p)
    flt = CaseFilter(
        states=tuple(s for s in state.split(",") if s), category=category or None,
        overdue=True if overdue == "1" else None, unit=scope if scope is not None else (unit or None),
        status="open" if show == "open" and not state else None, limit=100, offset=max(0, offset),
    )
    page = ctx.stores.cases.worklist(flt, now)
    return _page(request, "cases.html", p, page=page, cases=[serialize.case(c, now) for c in page.items],
                 categories=ctx.stores.cases.categories(), units=ctx.stores.cases.units(), scoped=scope is not None,
                 f={"state": state, "category": category, "overdue": overdue, "unit": unit, "show": show}, now=now)


@router.get("/cases/{case_id}", response_class=HTMLResponse)
def case_page(case_id: str, request: Request) -> HTMLResponse:
    p = _require(request, Perm.CASES_READ)
    ctx = ctx_of(request)
    c = load_case(ctx, p, case_id)
    now = ctx.clock()
    around = c.created_at
    chart = {"start": around - 6 * 3600, "end": min(now, max(around + 6 * 3600, (c.closed_at or now))),
             "metric": "depth"}
    if c.device:
        dev = ctx.stores.devices.device(c.device)
        chart["metric"] = CHART_METRIC.get(dev.kind, "depth") if dev else "depth"
    return _page(request, "case.html", p, c=serialize.case(c, now), timeline=ctx.stores.cases.timeline(c.id),
                 actions=case_actions(ctx, p, c), chart=chart, now=now, units=ctx.stores.cases.units())


@router.get("/stats", response_class=HTMLResponse)
def stats_page(request: Request, days: int = 30) -> HTMLResponse:
    p = _require(request, Perm.STATS_READ)
    ctx = ctx_of(request)
    now = ctx.clock()
    days = min(max(days, 1), 366)
    st = ctx.stores.cases.statistics(now - days * 86400, now, now)
    cats = sorted({c for (_h, c) in st.by_hour})
    peak = max(st.by_hour.values(), default=0)
    unit_names = {u.id: u.name for u in ctx.stores.cases.units()}
    cat_names = {c.code: c.name for c in ctx.stores.cases.categories()}
    return _page(request, "stats.html", p, st=st, by_hour=st.by_hour, cats=cats, peak=peak, days=days,
                 unit_names=unit_names, cat_names=cat_names)


def render_docs(request: Request, spec: dict[str, Any]) -> HTMLResponse:
    ops = []
    for path, methods in sorted(spec.get("paths", {}).items()):
        for method, op in methods.items():
            ops.append({"method": method.upper(), "path": path, "summary": op.get("summary", ""),
                        "tags": ", ".join(op.get("tags", []))})
    return templates.TemplateResponse(request, "docs.html", {"ops": ops, "title": spec["info"]["title"],
                                                             "generated": time.time(), "quote": quote})
