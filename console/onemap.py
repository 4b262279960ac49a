"""The one map (一张图), the alarm board and the cockpit (驾驶舱) data: ``/api/v1/map|board|cockpit``.

The district layer, grid polygons and MBTiles archives are read once when the app is built
(:func:`load_map`), so a bad file stops the console at start with the file and key named,
never a blank map later. Device markers for 100 000 devices go out as compact rows (not
GeoJSON), computed once per ``overview_cache_s`` for every screen.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, Depends, Query, Response

from console import board
from console.api import overview_data
from console.config import MapSettings, MbtilesLayer, TiandituLayer, XyzLayer
from console.context import Ctx, ctx_of, need, writer
from console.errors import BadRequest, Conflict, NotFound, StoreUnavailable
from console.geo import Street, street_address, wgs84_to_gcj02
from console.labels import KINDS, METRICS, STATES, fmt_value, zh_en
from console.live import LiveEvent
from console.policy import Perm, Principal, case_scope, case_visible, has
from console.schemas import AckBody
from console.views import CaseFilter, DeviceView
from contracts.errors import ConfigError
from contracts.geo import in_polygon

router = APIRouter(prefix="/api/v1")
tiles_router = APIRouter()
CtxDep = Annotated[Ctx, Depends(ctx_of)]
TILE_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}


@dataclass(frozen=True, slots=True)
class GridShape:
    code: str
    name: str
    rings: list[list[list[float]]]


@dataclass
class MapData:
    """What :func:`load_map` read: the district layer as sent, streets for addresses, grid names."""

    district: dict[str, Any] | None = None  # GeoJSON, already in the display datum
    streets: list[Street] = field(default_factory=list)
    grids: list[GridShape] = field(default_factory=list)
    tile_formats: dict[int, str] = field(default_factory=dict)  # base layer index -> mbtiles format
    addresses: dict[str, str] = field(default_factory=dict)  # device -> surveyed address (layer=device points)


def _shift_coords(coords: Any) -> Any:
    if coords and isinstance(coords[0], int | float):
        lat, lon = wgs84_to_gcj02(float(coords[1]), float(coords[0]))
        return [round(lon, 7), round(lat, 7)]
    return [_shift_coords(c) for c in coords]


def load_map(settings: MapSettings, source: str = "console.map") -> MapData:
    """Read and check the district GeoJSON and MBTiles archives; ConfigError names what is wrong."""
    out = MapData()
    for i, layer in enumerate(settings.base_layers):
        if isinstance(layer, MbtilesLayer):
            out.tile_formats[i] = _mbtiles_format(layer.path, f"{source}.base_layers.{i}.path")
    path = settings.district_geojson
    if path is None:
        return out
    key = f"{source}.district_geojson"
    try:
        doc = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError(source, key, str(path), f"cannot read: {exc.strerror}") from exc
    except orjson.JSONDecodeError as exc:
        raise ConfigError(source, key, str(path), f"not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection" or not isinstance(doc.get("features"), list):
        raise ConfigError(source, key, str(path), "not a GeoJSON FeatureCollection")
    for n, f in enumerate(doc["features"]):
        props = f.get("properties") or {} if isinstance(f, dict) else None
        geom = f.get("geometry") if isinstance(f, dict) else None
        if not isinstance(props, dict) or not isinstance(geom, dict) or "coordinates" not in geom:
            raise ConfigError(source, f"{key}.features[{n}]", str(path), "a Feature with geometry and properties")
        if props.get("layer") == "grid":
            if geom.get("type") != "Polygon" or not props.get("grid"):
                raise ConfigError(source, f"{key}.features[{n}]", str(path), "a grid is a Polygon with a 'grid' code")
            out.grids.append(GridShape(str(props["grid"]), str(props.get("name", props["grid"])), geom["coordinates"]))
        elif props.get("layer") == "street" and geom.get("type") == "LineString" and props.get("name"):
            out.streets.append(Street(str(props["name"]), geom["coordinates"]))
        elif props.get("layer") == "device":
            if not props.get("device") or not props.get("address"):
                raise ConfigError(source, f"{key}.features[{n}]", str(path), "a device point needs device and address")
            out.addresses[str(props["device"])] = str(props["address"])
    if settings.gcj02:
        doc = {**doc, "features": [{**f, "geometry": {**f["geometry"], "coordinates": _shift_coords(
            f["geometry"]["coordinates"])}} for f in doc["features"]]}
    out.district = doc
    return out


def _mbtiles_format(path: Path, key: str) -> str:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows = dict(db.execute("SELECT name, value FROM metadata").fetchall())
    except sqlite3.Error as exc:
        raise ConfigError("console.map", key, str(path), f"not a readable MBTiles archive: {exc}") from exc
    fmt = str(rows.get("format", "png")).lower()
    if fmt not in TILE_TYPES:
        raise ConfigError("console.map", key, str(path), f"tile format {fmt!r}: only raster png/jpg/webp")
    return fmt


def map_data(ctx: Ctx) -> MapData:
    data = ctx.cache.get("map-data", 1e12, lambda: load_map(ctx.settings.map))
    assert isinstance(data, MapData)
    return data


def _tile_origin(url: str) -> str:
    parts = urlsplit(url.replace("{s}", "a"))
    host = parts.netloc
    if "{s}" in url.split("/")[2]:
        host = "*." + host.split(".", 1)[1]
    return f"{parts.scheme}://{host}"


def tile_sources(settings: MapSettings) -> list[str]:
    """Origins the page must load tiles from (for the CSP ``img-src``)."""
    out = []
    for layer in settings.base_layers:
        if isinstance(layer, TiandituLayer):
            out.append("https://*.tianditu.gov.cn")
        elif isinstance(layer, XyzLayer):
            out.append(_tile_origin(layer.url))
    return sorted(set(out))


def _layers_json(settings: MapSettings) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, layer in enumerate(settings.base_layers):
        if isinstance(layer, TiandituLayer):
            def wmts(lyr: str, key: str = layer.key) -> str:
                return (f"https://t{{s}}.tianditu.gov.cn/{lyr}_w/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0"
                        f"&LAYER={lyr}&STYLE=default&TILEMATRIXSET=w&FORMAT=tiles&TILEMATRIX={{z}}&TILEROW={{y}}"
                        f"&TILECOL={{x}}&tk={key}")
            urls = [wmts(layer.layer)] + ([wmts({"vec": "cva", "img": "cia", "ter": "cta"}[layer.layer])]
                                          if layer.labels else [])
            out.append({"name": layer.name, "urls": urls, "subdomains": "01234567", "max_zoom": 18,
                        "attribution": "天地图 © 国家地理信息公共服务平台"})
        elif isinstance(layer, XyzLayer):
            out.append({"name": layer.name, "urls": [layer.url], "subdomains": "abc", "max_zoom": layer.max_zoom,
                        "attribution": layer.attribution})
        else:
            out.append({"name": layer.name, "urls": [f"/tiles/{i}/{{z}}/{{x}}/{{y}}"], "subdomains": "",
                        "max_zoom": layer.max_zoom, "attribution": ""})
    return out


# ------------------------------------------------------------------ map


@router.get("/map/config", tags=["map"], summary="Base layers, start view and clustering for the map")
def map_config(ctx: CtxDep, _p: Annotated[Principal, Depends(need(Perm.DEVICES_READ))]) -> dict[str, Any]:
    m = ctx.settings.map
    center = m.center
    if center is not None and m.gcj02:
        center = wgs84_to_gcj02(*center)
    return {"base_layers": _layers_json(m), "district": map_data(ctx).district is not None, "center": center,
            "zoom": m.zoom, "cluster_below_zoom": m.cluster_below_zoom, "datum": "gcj02" if m.gcj02 else "wgs84"}


@router.get("/map/district", tags=["map"], summary="The district's own vector layer (grids, streets, river)")
def district(ctx: CtxDep, _p: Annotated[Principal, Depends(need(Perm.DEVICES_READ))]) -> Response:
    doc = map_data(ctx).district
    if doc is None:
        raise NotFound("no district layer configured (console.map.district_geojson)")
    return Response(orjson.dumps(doc), media_type="application/geo+json",
                    headers={"Cache-Control": "private, max-age=300"})


def _state(d: DeviceView, alarmed: dict[str, str]) -> str:
    return alarmed.get(d.id) or ("online" if d.online else "offline")


@dataclass(frozen=True, slots=True)
class Markers:
    rows: list[list[Any]]  # [id, kind, lat, lon, state] in the display datum
    unplaced: list[str]  # devices without coordinates (counted under the map, not drawn)
    center: list[float] | None


def marker_rows(devices: list[DeviceView], alarmed: dict[str, str], gcj02: bool) -> Markers:
    """One compact row per placed device; state is its worst active alarm's severity, else online/offline."""
    rows = []
    unplaced = []
    lat_sum = lon_sum = 0.0
    for d in devices:
        if d.lat is None or d.lon is None:
            unplaced.append(d.id)
            continue
        lat, lon = wgs84_to_gcj02(d.lat, d.lon) if gcj02 else (d.lat, d.lon)
        lat_sum += lat
        lon_sum += lon
        rows.append([d.id, d.kind, round(lat, 6), round(lon, 6), _state(d, alarmed)])
    return Markers(rows, unplaced, [lat_sum / len(rows), lon_sum / len(rows)] if rows else None)


def _markers(ctx: Ctx, now: float) -> dict[str, Any]:
    data = overview_data(ctx, now)
    m = marker_rows(data["devices"], data["alarmed"], ctx.settings.map.gcj02)
    body = orjson.dumps({"fields": ["id", "kind", "lat", "lon", "state"], "rows": m.rows, "center": m.center,
                         "unplaced": len(m.unplaced), "t": now})
    return {"body": body}


@router.get("/map/devices", tags=["map"], summary="Every placed device as [id, kind, lat, lon, state] rows")
def map_devices(ctx: CtxDep, _p: Annotated[Principal, Depends(need(Perm.DEVICES_READ))]) -> Response:
    """``state`` is online, offline or the severity of its worst active alarm; shared by all viewers."""
    now = ctx.clock()
    cached = ctx.cache.get("map-markers", ctx.settings.overview_cache_s, lambda: _markers(ctx, now))
    return Response(cached["body"], media_type="application/json")


def grid_name(ctx: Ctx, code: str | None) -> str:
    return next((g.name for g in map_data(ctx).grids if g.code == code), code or "")


def grid_at(ctx: Ctx, lat: float, lon: float) -> str | None:
    return next((g.code for g in map_data(ctx).grids if in_polygon(lon, lat, g.rings)), None)


def address_of(ctx: Ctx, d: DeviceView) -> str:
    """The surveyed address (a ``layer: device`` point), else the nearest streets; then the grid's name."""
    if d.lat is None or d.lon is None:
        return map_data(ctx).addresses.get(d.id, "")
    street = map_data(ctx).addresses.get(d.id) or street_address(d.lat, d.lon, map_data(ctx).streets,
                                                                  ctx.settings.map.address_max_m)
    grid = grid_name(ctx, d.grid or grid_at(ctx, d.lat, d.lon))
    return " · ".join(x for x in (street, grid) if x)


def latest_json(d: DeviceView) -> list[dict[str, Any]]:
    return [{"metric": m, "label": zh_en(METRICS, m), "value": v.value, "unit": v.unit, "ts": v.ts,
             "text": fmt_value(v.value, v.unit)} for m, v in sorted(d.latest.items())]


@router.get("/map/devices/{device_id}", tags=["map"], summary="A marker's popup: latest values, address, open case")
def map_popup(device_id: str, ctx: CtxDep, p: Annotated[Principal, Depends(need(Perm.DEVICES_READ))]) -> dict[str, Any]:
    d = ctx.stores.devices.device(device_id)
    if d is None:
        raise NotFound(f"no device {device_id!r}")
    now = ctx.clock()
    alarms = [a for a in ctx.stores.alarms.for_device(d.id, 20) if a.state != "cleared"]
    case = None
    if has(p, Perm.CASES_READ):
        page = ctx.stores.cases.worklist(CaseFilter(device=d.id, unit=case_scope(p), status="open", limit=5), now)
        visible = [c for c in page.items if case_visible(p, c.unit)]
        if visible:
            case = {"id": visible[0].id, "state": visible[0].state, "category_name": visible[0].category_name}
    return {"id": d.id, "kind": d.kind, "kind_label": zh_en(KINDS, d.kind), "online": d.online,
            "last_seen": d.last_seen, "address": address_of(ctx, d), "grid": d.grid, "latest": latest_json(d),
            "alarms": [{"alarm_id": a.alarm_id, "rule": a.rule, "severity": a.severity} for a in alarms],
            "open_case": case}


@tiles_router.get("/tiles/{layer}/{z}/{x}/{y}", include_in_schema=False)
def tile(layer: int, z: int, x: int, y: int, ctx: CtxDep,
         _p: Annotated[Principal, Depends(need(Perm.DEVICES_READ))]) -> Response:
    """One tile of a local MBTiles archive (TMS rows: y is flipped)."""
    layers = ctx.settings.map.base_layers
    if not 0 <= layer < len(layers) or not isinstance(layers[layer], MbtilesLayer) or not 0 <= z <= 22:
        raise NotFound("no such tile layer")
    spec = layers[layer]
    assert isinstance(spec, MbtilesLayer)
    if not (0 <= x < 1 << z and 0 <= y < 1 << z):
        raise NotFound("tile outside the world")
    try:
        with sqlite3.connect(f"file:{spec.path}?mode=ro", uri=True) as db:
            row = db.execute("SELECT tile_data FROM tiles WHERE zoom_level=? AND tile_column=? AND tile_row=?",
                             (z, x, (1 << z) - 1 - y)).fetchone()
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"tile archive: {exc}") from exc
    if row is None:
        return Response(status_code=204)  # not in the archive: Leaflet shows the background
    fmt = map_data(ctx).tile_formats.get(layer, "png")
    return Response(bytes(row[0]), media_type=TILE_TYPES[fmt], headers={"Cache-Control": "private, max-age=86400"})


# ------------------------------------------------------------------ alarm board


@dataclass(frozen=True, slots=True)
class BoardState:
    items: list[board.Incident]
    addresses: dict[str, str]  # device -> address, for the devices on the board


def board_state(ctx: Ctx, now: float) -> BoardState:
    """Incidents and their devices' addresses, computed once per ``overview_cache_s`` for every screen.

    The addresses are looked up here, from the overview's device list, not per row from the
    device store: at 100 000 devices one registry rebuild takes longer than its cache lives.
    """
    def compute() -> BoardState:
        devices = {d.id: d for d in overview_data(ctx, now)["devices"]}
        recent = ctx.stores.alarms.recent(now - ctx.settings.board.repeat_window_s, 5000)
        items = board.incidents(ctx.stores.alarms.active(), recent, devices, ctx.settings.board.priority)
        addresses = {i.device: address_of(ctx, devices[i.device]) for i in items if i.device in devices}
        return BoardState(items, addresses)

    state: BoardState = ctx.cache.get("board", ctx.settings.overview_cache_s, compute)
    return state


def board_items(ctx: Ctx, now: float) -> list[board.Incident]:
    return board_state(ctx, now).items


@router.get("/board", tags=["alarms"], summary="Alarm board: one row per device and condition, in priority order")
def alarm_board(  # noqa: PLR0917
    ctx: CtxDep, _p: Annotated[Principal, Depends(need(Perm.ALARMS_READ))],
    kind: Annotated[str | None, Query(max_length=32)] = None,
    severity: Annotated[str | None, Query(pattern="^(minor|major|critical)$")] = None,
    grid: Annotated[str | None, Query(max_length=32)] = None,
    acknowledged: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    items = board_items(ctx, ctx.clock())
    flt = board.BoardFilter(kind or None, severity or None, grid or None, acknowledged)
    shown = [i for i in items if flt.keep(i)]
    return {"total": len(shown), "all": len(items), "counts": board.counts_by_kind(items),
            "items": board_rows(ctx, shown[:limit])}


def board_rows(ctx: Ctx, items: list[board.Incident]) -> list[dict[str, Any]]:
    """Board rows as JSON, with each device's street address (people find a flooded underpass by it)."""
    clearable = set(ctx.settings.board.manual_clear_rules)
    addresses = board_state(ctx, ctx.clock()).addresses
    return [{**board.to_json(i, i.rule in clearable), "address": addresses.get(i.device, "")} for i in items]


@router.post("/alarms/{alarm_id}/clear", status_code=202, tags=["alarms"],
             summary="Manual clear of an event alarm no sensor can clear; the rule engine decides and publishes it")
def clear_alarm(alarm_id: str, body: AckBody, ctx: CtxDep,
                p: Annotated[Principal, Depends(writer(Perm.ALARMS_ACK))]) -> dict[str, Any]:
    a = ctx.stores.alarms.get(alarm_id)
    obj = f"alarm:{alarm_id[:64]}"
    if a is None:
        ctx.audit(p.actor, "alarm.clear", obj, 404)
        raise NotFound(f"no alarm {alarm_id!r}")
    if a.state == "cleared":
        ctx.audit(p.actor, "alarm.clear", obj, 409)
        raise Conflict("alarm already cleared")
    if a.rule not in ctx.settings.board.manual_clear_rules:
        ctx.audit(p.actor, "alarm.clear", obj, 409, rule=a.rule)
        raise Conflict(f"{a.rule} is cleared by its sensor, not by hand (console.board.manual_clear_rules)")
    if not body.note.strip():
        raise BadRequest("a manual clear needs a note saying why")
    if ctx.stores.acks is None:
        raise StoreUnavailable("no broker connection for manual clears")
    now = ctx.clock()
    try:
        ctx.stores.acks.send_ack(a.alarm_id, a.device, p.actor, now, body.note, action="clear")
    except StoreUnavailable:
        ctx.audit(p.actor, "alarm.clear", obj, 503)
        raise
    ctx.audit(p.actor, "alarm.clear", obj, 202, device=a.device, rule=a.rule, note=body.note,
              request_id=uuid.uuid4().hex)
    ctx.hub.publish(LiveEvent("alarm", {"alarm_id": a.alarm_id, "device": a.device, "rule": a.rule,
                                        "kind": "clear-sent", "severity": a.severity, "t": now, "actor": p.actor}))
    return {"status": "sent", "alarm_id": a.alarm_id, "actor": p.actor, "t": now}


# ------------------------------------------------------------------ cockpit


def _day_start(ctx: Ctx, now: float) -> float:
    from datetime import datetime

    local = datetime.fromtimestamp(now, ctx.tz)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def cockpit_data(ctx: Ctx, p: Principal, now: float) -> dict[str, Any]:
    """KPIs for the wall: alarms by kind, devices online, cases open/overdue, 及时解决率 today and 30 d."""
    ov = overview_data(ctx, now)
    items = board_items(ctx, now)
    online = sum(c["online"] + c["alarm"] for c in ov["counts"].values())
    total = sum(c["online"] + c["alarm"] + c["offline"] for c in ov["counts"].values())
    out: dict[str, Any] = {
        "t": now, "alarms_by_kind": board.counts_by_kind(items), "alarms_total": len(items),
        "devices": {"online": online, "total": total, "by_kind": ov["counts"]},
        "gauges": [{**g, "trend": g["trend"][-36:]} for g in ov["gauges"][:6]],
        "top": board_rows(ctx, items[:8]),
    }
    if has(p, Perm.CASES_READ):
        scope = case_scope(p)
        open_page = ctx.stores.cases.worklist(CaseFilter(unit=scope, status="open", limit=1), now)
        overdue = ctx.stores.cases.worklist(CaseFilter(unit=scope, status="open", overdue=True, limit=1), now)
        recent = ctx.stores.cases.worklist(CaseFilter(unit=scope, created_from=now - 7 * 86400, limit=8), now)
        out["cases"] = {"open": open_page.total, "overdue": overdue.total,
                        "recent": [{"id": c.id, "category_name": c.category_name, "state": c.state,
                                    "state_label": zh_en(STATES, c.state),
                                    "unit_name": c.unit_name, "created_at": c.created_at, "overdue": c.overdue(now)}
                                   for c in recent.items if case_visible(p, c.unit)]}
    if has(p, Perm.STATS_READ):
        today = ctx.stores.cases.statistics(_day_start(ctx, now), now, now).total
        month = ctx.stores.cases.statistics(now - 30 * 86400, now, now).total
        out["on_time"] = {"today": today.on_time_rate if today else None,
                          "days30": month.on_time_rate if month else None}
    return out


@router.get("/cockpit", tags=["map"], summary="Cockpit (驾驶舱) KPIs, deepest gauges, top alarms, recent cases")
def cockpit(ctx: CtxDep, p: Annotated[Principal, Depends(need(Perm.DEVICES_READ))]) -> dict[str, Any]:
    started = time.monotonic()
    data = cockpit_data(ctx, p, ctx.clock())
    data["compute_ms"] = round((time.monotonic() - started) * 1000, 1)
    return data
