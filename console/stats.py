"""Statistics: by unit and category (rates), by time (hour of day, day, week) and by place.

The numbers come from case_bridge (``CaseStore.statistics`` for the rates and the hour x
category counts, :mod:`case_bridge.incidence` for days, grids, streets and places); this
module only lays them out as tables (the same tables the page shows and the CSV/XLSX
exports write), fills the days without cases, rolls days up into ISO weeks, and serves the
places as GeoJSON for the map's heat layer. Everything but the routes is pure.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response

from case_bridge.incidence import Incidence
from console.context import Ctx, ctx_of, need
from console.errors import BadRequest, NotFound
from console.export import Cell, Column, Table, to_csv, to_xlsx
from console.geo import wgs84_to_gcj02
from console.policy import Perm, Principal
from console.views import Statistics, StatRow

MAX_PERIOD_DAYS = 731


@dataclass(frozen=True, slots=True)
class Period:
    start: float
    end: float
    first_day: dt.date  # local calendar days covered, inclusive
    last_day: dt.date


def period(now: float, tz: ZoneInfo, *, days: int | None = None, start: float | None = None,
           end: float | None = None) -> Period:
    """[start, end): explicit epoch seconds, else the last ``days`` local days up to now (default 30)."""
    end_t = now if end is None else end
    if start is None:
        today = dt.datetime.fromtimestamp(end_t, tz).date()
        first = today - dt.timedelta(days=(days or 30) - 1)
        start_t = dt.datetime(first.year, first.month, first.day, tzinfo=tz).timestamp()
    else:
        start_t = start
    if start_t >= end_t:
        raise BadRequest("start must be before end")
    if end_t - start_t > MAX_PERIOD_DAYS * 86400:
        raise BadRequest(f"a period is at most {MAX_PERIOD_DAYS} days")
    last = dt.datetime.fromtimestamp(max(start_t, end_t - 1e-3), tz).date()
    return Period(start_t, end_t, dt.datetime.fromtimestamp(start_t, tz).date(), last)


def dates_period(now: float, tz: ZoneInfo, days: int | None, first: str, last: str) -> Period:
    """The page's period: local dates ``first``..``last`` inclusive (YYYY-MM-DD), else the last ``days``."""
    if not first and not last:
        return period(now, tz, days=days)
    try:
        d0 = dt.date.fromisoformat(first) if first else None
        d1 = dt.date.fromisoformat(last) if last else dt.datetime.fromtimestamp(now, tz).date()
    except ValueError as exc:
        raise BadRequest(f"dates are YYYY-MM-DD: {exc}") from exc
    if d0 is None:
        d0 = d1 - dt.timedelta(days=(days or 30) - 1)
    end = dt.datetime(d1.year, d1.month, d1.day, tzinfo=tz) + dt.timedelta(days=1)
    return period(now, tz, start=dt.datetime(d0.year, d0.month, d0.day, tzinfo=tz).timestamp(),
                  end=end.timestamp())


@dataclass(frozen=True, slots=True)
class HeatDot:
    x: float
    y: float
    r: float
    opacity: float
    label: str


def heat_dots(inc: Incidence, width: float = 640, height: float = 400, pad: float = 16) -> list[HeatDot]:
    """Places on a plain equirectangular SVG (no base map): radius and opacity grow with the count."""
    pts = inc.places
    if not pts:
        return []
    lat0, lat1 = min(p.lat for p in pts), max(p.lat for p in pts)
    lon0, lon1 = min(p.lon for p in pts), max(p.lon for p in pts)
    span = max(lat1 - lat0, lon1 - lon0, 1e-4)
    scale = min(width - 2 * pad, height - 2 * pad) / span
    top = max(p.cases for p in pts)
    return [HeatDot(round(pad + (p.lon - lon0) * scale, 1), round(height - pad - (p.lat - lat0) * scale, 1),
                    round(4 + 14 * (p.cases / top) ** 0.5, 1), round(0.25 + 0.6 * p.cases / top, 2),
                    f"{p.address or p.grid or ''} · {p.cases}")
            for p in sorted(pts, key=lambda p: p.cases)]


def daily(by_day: list[tuple[dt.date, int]], first: dt.date, last: dt.date) -> list[tuple[dt.date, int]]:
    """Every day from ``first`` to ``last`` with its count (0 where no case was reported)."""
    counts = dict(by_day)
    n = (last - first).days + 1
    return [(first + dt.timedelta(days=i), counts.get(first + dt.timedelta(days=i), 0)) for i in range(max(0, n))]


def weekly(days: list[tuple[dt.date, int]]) -> list[tuple[str, dt.date, int]]:
    """(ISO week ``2026-W49``, its Monday, cases) for the weeks the days touch."""
    out: dict[str, tuple[dt.date, int]] = {}
    for day, n in days:
        year, week, _ = day.isocalendar()
        key = f"{year}-W{week:02d}"
        monday = day - dt.timedelta(days=day.weekday())
        out[key] = (monday, out.get(key, (monday, 0))[1] + n)
    return [(k, m, n) for k, (m, n) in sorted(out.items(), key=lambda kv: kv[1][0])]


_RATE_COLS = (Column("cases", "案件 Cases", "int"), Column("due", "到期 Due", "int"),
              Column("on_time", "按时 On time", "int"), Column("on_time_rate", "按时解决率 On-time rate", "rate"),
              Column("closed", "结案 Closed", "int"), Column("closure_rate", "结案率 Closure rate", "rate"),
              Column("overridden", "强制核查 Overridden", "int"))


def _rate_rows(rows: list[StatRow], names: dict[str, str]) -> tuple[tuple[Cell, ...], ...]:
    return tuple((r.key, names.get(r.key, ""), r.total, r.due, r.on_time, r.on_time_rate, r.closed, r.closure_rate,
                  r.overridden)
                 for r in rows)


def tables(st: Statistics, inc: Incidence, p: Period, unit_names: dict[str, str],
           cat_names: dict[str, str]) -> list[Table]:
    """Every statistics table, in page order."""
    days = daily(inc.by_day, p.first_day, p.last_day)
    cats = sorted({c for (_h, c) in st.by_hour})
    hour_rows: tuple[tuple[Cell, ...], ...] = tuple(
        (c, cat_names.get(c, ""), *(st.by_hour.get((h, c), 0) for h in range(24)),
         sum(st.by_hour.get((h, c), 0) for h in range(24))) for c in cats)
    return [
        Table("by_unit", "责任单位 By unit", (Column("unit", "单位 Unit"), Column("name", "名称 Name"), *_RATE_COLS),
              _rate_rows(st.by_unit, unit_names)),
        Table("by_category", "类别 By category", (Column("category", "类别 Category"), Column("name", "名称 Name"),
                                                  *_RATE_COLS), _rate_rows(st.by_category, cat_names)),
        Table("by_hour", "时段 By hour of day", (Column("category", "类别 Category"), Column("name", "名称 Name"),
                                                 *(Column(f"h{h:02d}", f"{h}时", "int") for h in range(24)),
                                                 Column("total", "合计 Total", "int")), hour_rows),
        Table("by_day", "按日 By day", (Column("day", "日期 Day", "date"), Column("cases", "案件 Cases", "int")),
              tuple(days)),
        Table("by_week", "按周 By week", (Column("week", "周 ISO week"), Column("monday", "周一 Monday", "date"),
                                          Column("cases", "案件 Cases", "int")), tuple(weekly(days))),
        Table("by_street", "街道 By street", (Column("street", "街道 Street"), Column("name", "名称 Name"),
                                              Column("cases", "案件 Cases", "int")),
              tuple((a.key or "—", a.name, a.cases) for a in inc.by_street)),
        Table("by_grid", "网格 By grid", (Column("grid", "网格 Grid"), Column("name", "名称 Name"),
                                          Column("cases", "案件 Cases", "int"), Column("lat", "纬度 Lat", "float"),
                                          Column("lon", "经度 Lon", "float")),
              tuple((a.key or "—", a.name, a.cases, a.lat, a.lon) for a in inc.by_grid)),
        Table("places", "高发地点 High-incidence places",
              (Column("rank", "排名 Rank", "int"), Column("address", "地址 Address"), Column("grid", "网格 Grid"),
               Column("cases", "案件 Cases", "int"), Column("lat", "纬度 Lat", "float"),
               Column("lon", "经度 Lon", "float")),
              tuple((i + 1, pl.address, pl.grid or "", pl.cases, pl.lat, pl.lon) for i, pl in enumerate(inc.places))),
    ]


def geojson(inc: Incidence) -> dict[str, Any]:
    """Places (and grids, as their cases' mean position) as GeoJSON points with counts, WGS-84.

    ``kind`` tells a place cell from a grid; a map with grid polygons joins on ``grid``.
    ``max_cases`` (a foreign member) lets a heat layer scale its intensity without a second pass.
    """
    feats: list[dict[str, Any]] = [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [pl.lon, pl.lat]},
         "properties": {"kind": "place", "cases": pl.cases, "address": pl.address, "grid": pl.grid}}
        for pl in inc.places
    ]
    feats += [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [round(a.lon, 6), round(a.lat, 6)]},
         "properties": {"kind": "grid", "cases": a.cases, "grid": a.key, "name": a.name}}
        for a in inc.by_grid if a.key and a.lat is not None and a.lon is not None
    ]
    return {"type": "FeatureCollection", "features": feats, "start": inc.since, "end": inc.until,
            "max_cases": max((pl.cases for pl in inc.places), default=0)}


def heat_rows(inc: Incidence, gcj02: bool) -> list[list[Any]]:
    """Places as ``[lat, lon, cases, address]`` in the map's display datum (the heat layer on the one map)."""
    out: list[list[Any]] = []
    for pl in inc.places:
        lat, lon = wgs84_to_gcj02(pl.lat, pl.lon) if gcj02 else (pl.lat, pl.lon)
        out.append([round(lat, 6), round(lon, 6), pl.cases, pl.address])
    return out


def trend_points(values: list[int], width: float = 720, height: float = 120, pad: float = 4) -> str:
    """``points`` of a polyline over counts with zero at the bottom (a count trend starts from nothing)."""
    if not values:
        return ""
    top = max(values) or 1
    step = (width - 2 * pad) / max(1, len(values) - 1)
    return " ".join(f"{pad + i * step:.1f},{height - pad - v / top * (height - 2 * pad):.1f}"
                    for i, v in enumerate(values))


# ------------------------------------------------------------------ data and routes


def collect(ctx: Ctx, p: Period) -> tuple[Statistics, Incidence, list[Table]]:
    now = ctx.clock()
    st = ctx.stores.cases.statistics(p.start, p.end, now)
    inc = ctx.stores.cases.incidence(p.start, p.end)
    unit_names = {u.id: u.name for u in ctx.stores.cases.units()}
    cat_names = {c.code: c.name for c in ctx.stores.cases.categories()}
    return st, inc, tables(st, inc, p, unit_names, cat_names)


router = APIRouter(prefix="/api/v1/statistics")
StatsReader = Annotated[Principal, Depends(need(Perm.STATS_READ))]
StartQ = Annotated[float | None, Query(ge=0, le=1e11)]
DaysQ = Annotated[int | None, Query(ge=1, le=MAX_PERIOD_DAYS)]


def _period(ctx: Ctx, days: int | None, start: float | None, end: float | None) -> Period:
    return period(ctx.clock(), ctx.tz, days=days, start=start, end=end)


def _table_json(t: Table) -> dict[str, Any]:
    def cell(v: Any) -> Any:
        return v.isoformat() if isinstance(v, dt.date) else v

    return {"id": t.id, "title": t.title, "columns": [{"key": c.key, "title": c.title, "kind": c.kind}
                                                      for c in t.columns],
            "rows": [[cell(v) for v in row] for row in t.rows]}


@router.get("/tables", tags=["statistics"], summary="Every statistics table for a period (as the page and exports)")
def stats_tables(ctx: Annotated[Ctx, Depends(ctx_of)], _p: StatsReader, days: DaysQ = None, start: StartQ = None,
                 end: StartQ = None) -> dict[str, Any]:
    p = _period(ctx, days, start, end)
    _st, _inc, ts = collect(ctx, p)
    return {"start": p.start, "end": p.end, "tables": [_table_json(t) for t in ts]}


@router.get("/places", tags=["statistics"],
            summary="High-incidence places and grids as GeoJSON points with case counts (heat layer)")
def stats_places(ctx: Annotated[Ctx, Depends(ctx_of)], _p: StatsReader, days: DaysQ = None, start: StartQ = None,
                 end: StartQ = None) -> Response:
    p = _period(ctx, days, start, end)
    return JSONResponse(geojson(ctx.stores.cases.incidence(p.start, p.end)), media_type="application/geo+json")


@router.get("/heat", tags=["statistics"],
            summary="High-incidence places as [lat, lon, cases, address] in the map datum (the map heat layer)")
def stats_heat(ctx: Annotated[Ctx, Depends(ctx_of)], _p: StatsReader, days: DaysQ = None, start: StartQ = None,
               end: StartQ = None) -> dict[str, Any]:
    p = _period(ctx, days, start, end)
    inc = ctx.stores.cases.incidence(p.start, p.end)
    return {"fields": ["lat", "lon", "cases", "address"], "rows": heat_rows(inc, ctx.settings.map.gcj02),
            "max_cases": max((pl.cases for pl in inc.places), default=0), "start": p.start, "end": p.end}


_MEDIA = {"csv": "text/csv; charset=utf-8",
          "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


def export_bytes(ts: list[Table], table: str, fmt: Literal["csv", "xlsx"], p: Period,
                 when: Callable[[float], str]) -> tuple[bytes, str]:
    """(file body, file name) for one table (CSV or XLSX) or every table (``all``, XLSX only)."""
    chosen = ts if table == "all" else [t for t in ts if t.id == table]
    if not chosen:
        raise NotFound(f"no statistics table {table!r}; known: all, {', '.join(t.id for t in ts)}")
    if fmt == "csv" and len(chosen) != 1:
        raise BadRequest("CSV holds one table: name it, or ask for xlsx")
    stem = f"citywatch-{table}-{p.first_day.isoformat()}_{p.last_day.isoformat()}"
    if fmt == "csv":
        return to_csv(chosen[0]), f"{stem}.csv"
    about = [("统计 Statistics", "citywatch"), ("开始 From", when(p.start)), ("结束 To", when(p.end)),
             ("表 Tables", ", ".join(t.title for t in chosen))]
    return to_xlsx(chosen, about), f"{stem}.xlsx"


@router.get("/export", tags=["statistics"], summary="Download a statistics table as CSV or XLSX (table=all: XLSX)")
def stats_export(ctx: Annotated[Ctx, Depends(ctx_of)], p_: StatsReader, *,
                 table: Annotated[str, Query(pattern="^[a-z_]{1,32}$")] = "all",
                 format: Annotated[Literal["csv", "xlsx"], Query()] = "xlsx",
                 days: DaysQ = None, start: StartQ = None, end: StartQ = None) -> Response:
    p = _period(ctx, days, start, end)
    _st, _inc, ts = collect(ctx, p)
    body, name = export_bytes(ts, table, format, p,
                              lambda t: dt.datetime.fromtimestamp(t, ctx.tz).strftime("%Y-%m-%d %H:%M %Z"))
    ctx.audit(p_.actor, "stats.export", f"stats:{table}", 200, format=format, start=p.start, end=p.end)
    return Response(body, media_type=_MEDIA[format],
                    headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})
