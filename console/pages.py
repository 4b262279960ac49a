"""Server-rendered pages (Jinja2): overview, device, worklist, case, statistics, login, docs.

Pages read the same stores and apply the same policy as the API; the small script in
``static/console.js`` adds live updates (SSE), acknowledgements, workflow actions and charts
drawn as inline SVG. Labels are 中文 first, then English.
"""

from __future__ import annotations

import hmac
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from case_bridge.policy import event_window
from console import board, onemap, serialize, stats, thresholds
from console.api import case_actions, load_case, login, overview_data
from console.auth import csrf_token, verify_token
from console.context import SESSION_COOKIE, Ctx, client_ip, ctx_of, principal_of, session_token
from console.errors import AuthError, ConsoleError, Forbidden, NotFound
from console.labels import ACTIONS, KINDS, METRICS, ROLES, SEVERITIES, STATES, URGENCIES, rule_label, zh_en
from console.lamps import circuits
from console.open311 import parse_form
from console.policy import Perm, Principal, case_scope, case_visible, contact_visible, has, media_upload_allowed
from console.svg import sparkline
from console.views import AlarmView, CaseFilter, CaseView, DeviceView, TimelineEntry
from lighting.schedule import position, upcoming

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
        METRICS=METRICS, rule_label=rule_label,
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


@router.post("/logout")
async def logout(request: Request) -> Response:
    """A POST carrying the session's CSRF value (form field or header), so no other site can log a user out.

    Tokens are stateless: this drops the cookie; the token itself lapses at its expiry.
    """
    ctx = ctx_of(request)
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        form = parse_form(await request.body())
        sent = form.get("csrf_token") or request.headers.get("x-csrf-token", "")
        if not hmac.compare_digest(sent, csrf_token(ctx.settings.secret_key, token)):
            raise Forbidden("missing or wrong CSRF token for log out")
        try:
            who = verify_token(ctx.settings.secret_key, token, ctx.clock()).sub
        except AuthError:
            who = "?"
        ctx.audit(who, "logout", f"user:{who}", 303, ip=client_ip(request))
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
    items = onemap.board_items(ctx, now)
    return _page(request, "overview.html", p, board=onemap.board_rows(ctx, items[:100]),
                 board_counts=board.counts_by_kind(items),
                 counts=data["counts"], kinds=sorted(data["counts"]), gauges=gauges, gauges_total=data["gauges_total"],
                 grids=onemap.map_data(ctx).grids, sound=ctx.settings.board.sound, now=now)


@router.get("/cockpit", response_class=HTMLResponse)
def cockpit_page(request: Request) -> HTMLResponse:
    """The wall display (驾驶舱): full screen, large type, live; the first paint is server-side."""
    p = _require(request, Perm.DEVICES_READ)
    ctx = ctx_of(request)
    return _page(request, "cockpit.html", p, data=onemap.cockpit_data(ctx, p, ctx.clock()))


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
    metric = CHART_METRIC.get(d.kind, "depth")
    if metric not in d.latest and d.latest:
        metric = sorted(d.latest)[0]
    now = ctx.clock()
    return _page(request, "device.html", p, d=d, alarms=alarms, cases=cases, metric=metric, now=now,
                 address=onemap.address_of(ctx, d), grid_name=onemap.grid_name(ctx, d.grid),
                 latest=onemap.latest_json(d), chart=chart_context(ctx, d, alarms, now))


def chart_context(ctx: Ctx, d: DeviceView, alarms: list[AlarmView], now: float) -> dict[str, Any]:
    """Thresholds the rule engine applies to this device, its alarm bands, and a window around its last alarm."""
    bands = [[a.raised_at, a.updated_at if a.state == "cleared" else now, a.severity, rule_label(a.rule)]
             for a in alarms if a.raised_at >= now - 7 * 86400]
    last = max((a.raised_at for a in alarms), default=None)
    start, end = (last - 3 * 3600, min(now, last + 3 * 3600)) if last is not None and last > now - 7 * 86400 else (
        now - 6 * 3600, now)
    th = [{"rule": x.rule, "label": rule_label(x.rule), "metric": x.metric, "severity": x.severity, "value": x.value,
           "kind": x.kind} for x in thresholds.for_device(rules_of(ctx), d)]
    return {"thresholds": th, "bands": bands, "start": start, "end": end, "mark": last}


def rules_of(ctx: Ctx) -> list[Any]:
    """The rule engine's rule files, read once (the same files it evaluates)."""
    rules: list[Any] = ctx.cache.get("rules", 1e12, lambda: thresholds.load(ctx.settings.rules_files))
    return rules


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
    timeline = ctx.stores.cases.timeline(c.id)
    chart = case_chart(ctx, c, timeline, now)
    return _page(request, "case.html", p, c=serialize.case(c, now, contact=contact_visible(p, c.unit)),
                 timeline=timeline, urges=serialize.urges(timeline), actions=case_actions(ctx, p, c), chart=chart,
                 now=now, units=ctx.stores.cases.units(), can_upload=media_upload_allowed(p, c.unit))


def case_chart(ctx: Ctx, c: CaseView, timeline: list[TimelineEntry], now: float) -> dict[str, Any]:
    """The window around the case's alarm (not the last 6 h with the event at the edge), the rule's
    thresholds and the device's alarm bands, as the device page draws them."""
    raised = next((e.data.get("t") for e in timeline if e.action == "report"), None)  # the alarm's sample time
    mark = float(raised) if isinstance(raised, int | float) else c.created_at
    start, end = event_window(mark, c.closed_at or now)
    chart: dict[str, Any] = {"start": start, "end": end, "mark": mark, "metric": "depth", "thresholds": [],
                             "bands": []}
    dev = ctx.stores.devices.device(c.device) if c.device else None
    if dev is not None:
        ctx_chart = chart_context(ctx, dev, ctx.stores.alarms.for_device(dev.id, 50), now)
        rule_ths = [t for t in ctx_chart["thresholds"] if t["rule"] == c.rule] or ctx_chart["thresholds"]
        metric = next((t["metric"] for t in rule_ths), CHART_METRIC.get(dev.kind, "depth"))
        chart.update(metric=metric, thresholds=rule_ths, bands=ctx_chart["bands"])
    return chart


@router.get("/stats", response_class=HTMLResponse)
def stats_page(request: Request, days: int = 30, first: str = "", last: str = "") -> HTMLResponse:
    """Period selector, trend lines, a heat overlay of places, every table with its CSV/XLSX export."""
    p = _require(request, Perm.STATS_READ)
    ctx = ctx_of(request)
    days = min(max(days, 1), stats.MAX_PERIOD_DAYS)
    per = stats.dates_period(ctx.clock(), ctx.tz, days, first[:10], last[:10])
    st, inc, tables = stats.collect(ctx, per)
    by_id = {t.id: t for t in tables}
    day_counts = [int(str(r[1])) for r in by_id["by_day"].rows]
    week_counts = [int(str(r[2])) for r in by_id["by_week"].rows]
    peak = max(st.by_hour.values(), default=0)
    query = urlencode({"start": per.start, "end": per.end})
    return _page(request, "stats.html", p, per=per, days=days, first=first, last=last, tables=tables, total=st.total,
                 day_line=stats.trend_points(day_counts), week_line=stats.trend_points(week_counts),
                 day_peak=max(day_counts, default=0), week_peak=max(week_counts, default=0),
                 dots=stats.heat_dots(inc), peak=peak, query=query, weeks=by_id["by_week"].rows)


@router.get("/lamps", response_class=HTMLResponse)
def lamps_page(request: Request) -> HTMLResponse:
    """Lamps by circuit with their switching schedule; controls for roles that may switch them."""
    p = _require(request, Perm.DEVICES_READ)
    ctx = ctx_of(request)
    by_circuit = circuits(ctx.stores.devices.devices())
    now = ctx.clock()
    groups = []
    for c, ds in by_circuit.items():
        cfg = ctx.lighting.circuits.get(c)
        where = position((d.lat, d.lon) for d in ds)
        steps = upcoming(c, cfg, where, now, ZoneInfo(ctx.lighting.timezone)) if cfg and where else []
        note = "" if cfg is None else (
            f"黄昏 dusk {cfg.on_after_dusk_min:+g} min, 黎明 dawn −{cfg.off_before_dawn_min:g} min, "
            f"{len(cfg.night_steps)} 夜间调光 night steps; "
            + ("云端下发 sent by the cloud" if ctx.lighting.enabled else "未启用 not enabled (lighting.enabled)"))
        groups.append({"circuit": c, "lamps": ds, "schedule": steps, "schedule_note": note})
    return _page(request, "lamps.html", p, groups=groups, n_lamps=sum(len(ds) for ds in by_circuit.values()),
                 can_control=has(p, Perm.LAMPS_CONTROL))


def render_docs(request: Request, spec: dict[str, Any]) -> HTMLResponse:
    ops = []
    for path, methods in sorted(spec.get("paths", {}).items()):
        for method, op in methods.items():
            ops.append({"method": method.upper(), "path": path, "summary": op.get("summary", ""),
                        "tags": ", ".join(op.get("tags", []))})
    return templates.TemplateResponse(request, "docs.html", {"ops": ops, "title": spec["info"]["title"],
                                                             "generated": time.time(), "quote": quote})
