"""Sparklines, the coordinate map, the SSE hub and the console config section."""

from __future__ import annotations

import asyncio

import pytest

from console.config import ConsoleSettings
from console.geo import wgs84_to_gcj02
from console.live import Hub, LiveEvent, stream
from console.onemap import marker_rows
from console.svg import sparkline
from console.views import DeviceView
from contracts.config import parse_cloud_section
from contracts.errors import ConfigError
from firmware_sim.district import grid_at


def test_sparkline_points() -> None:
    assert sparkline([]) == ""
    assert sparkline([1.0]) == ""
    pts = sparkline([0.0, 1.0], width=100, height=20, pad=0)
    assert pts == "0.0,20.0 100.0,0.0"
    flat = sparkline([2.0, 2.0, 2.0], width=10, height=10, pad=0)
    assert flat.count(",10.0") == 3


def test_map_places_devices_and_grids() -> None:
    """The map's marker rows (Leaflet draws them; grids are the district's polygons, not device boxes)."""
    devs = [DeviceView("a", "water_gauge", lat=30.25, lon=120.135, grid="330106001001", online=True),
            DeviceView("b", "manhole", lat=30.26, lon=120.145, grid="330106001001"),
            DeviceView("c", "lamp", lat=30.27, lon=120.135, grid="330106002001", online=True),
            DeviceView("d", "wim")]
    m = marker_rows(devs, {"c": "critical"}, gcj02=False)
    assert [r[0] for r in m.rows] == ["a", "b", "c"]
    assert m.unplaced == ["d"]
    by_id = {r[0]: r for r in m.rows}
    assert by_id["c"][2] > by_id["a"][2]  # north
    assert by_id["b"][3] > by_id["a"][3]  # east
    assert [by_id[x][4] for x in "abc"] == ["online", "offline", "critical"]
    assert m.center is not None and 30.25 < m.center[0] < 30.27
    assert [grid_at(r[2], r[3]) for r in m.rows] == ["330106001001", "330106001001", "330106002001"]
    shifted = marker_rows(devs, {}, gcj02=True)
    assert shifted.rows[0][2:4] == [round(x, 6) for x in wgs84_to_gcj02(30.25, 120.135)]


def test_map_without_coordinates() -> None:
    m = marker_rows([DeviceView("x", "lamp")], {}, gcj02=False)
    assert m.rows == [] and len(m.unplaced) == 1 and m.center is None


async def test_hub_coalesces_readings_and_bounds_queues() -> None:
    hub = Hub(queue_max=3)
    sub = hub.subscribe()
    for i in range(100):
        hub.reading("wl-1", "depth", ts=float(i), value=i / 100, unit="m", quality=0)
    assert hub.flush() == 1
    ev = sub.queue.get_nowait()
    assert ev.kind == "reading" and ev.data["readings"][0]["value"] == 0.99
    for i in range(10):
        hub.publish(LiveEvent("alarm", {"i": i}))
    assert sub.queue.qsize() == 3 and sub.dropped == 7
    assert sub.queue.get_nowait().data == {"i": 7}  # the oldest were dropped


async def test_stream_filters_and_reports_gaps() -> None:
    hub = Hub(queue_max=2)
    sub = hub.subscribe()
    gen = stream(hub, sub, allow=lambda e: e.unit in (None, "a"), heartbeat_s=0.05)
    assert (await gen.__anext__()).startswith(b"retry:")
    hub.publish(LiveEvent("case", {"id": "1"}, unit="b"))
    hub.publish(LiveEvent("case", {"id": "2"}, unit="a"))
    hub.publish(LiveEvent("case", {"id": "3"}, unit="a"))  # drops case 1
    first = await gen.__anext__()
    assert first.startswith(b"event: gap")
    assert b'"id":"2"' in await gen.__anext__()
    assert b'"id":"3"' in await gen.__anext__()
    assert await asyncio.wait_for(gen.__anext__(), 1) == b": keepalive\n\n"
    await gen.aclose()
    assert hub.subscribers == 0


def test_sse_format() -> None:
    assert LiveEvent("alarm", {"a": 1}).sse() == b'event: alarm\ndata: {"a":1}\n\n'


def test_console_section_validates() -> None:
    text = "console:\n  secret_key: " + "k" * 40 + "\n  listen_port: 8081\n"
    s = parse_cloud_section(text, "console", ConsoleSettings, "cloud.yaml")
    assert s.listen_port == 8081 and s.production is True
    with pytest.raises(ConfigError, match=r"console\.secret_key"):
        parse_cloud_section("console:\n  secret_key: short\n", "console", ConsoleSettings, "cloud.yaml")
    with pytest.raises(ConfigError, match="unknown key"):
        parse_cloud_section(text + "  lisen_port: 1\n", "console", ConsoleSettings, "cloud.yaml")
    bad_user = text + "  users:\n    - {username: bob, password_hash: plain, role: admin}\n"
    with pytest.raises(ConfigError, match="argon2"):
        parse_cloud_section(bad_user, "console", ConsoleSettings, "cloud.yaml")
    no_unit = text + "  users:\n    - {username: bob, password_hash: $argon2id$x, role: case_handler}\n"
    with pytest.raises(ConfigError, match="unit"):
        parse_cloud_section(no_unit, "console", ConsoleSettings, "cloud.yaml")


def test_example_cloud_config_has_a_valid_console_section() -> None:
    from pathlib import Path

    from console.config import load_console_config

    cfg = load_console_config(Path(__file__).resolve().parents[3] / "configs" / "cloud.example.yaml")
    assert cfg.console.production is True
    assert {u.role.value for u in cfg.console.users} == {"duty_officer", "case_handler", "supervisor", "admin"}
    assert all(u.password_hash.startswith("$argon2") for u in cfg.console.users)


def test_ttl_cache_single_flight_and_stale_while_revalidate() -> None:
    import threading
    import time as _time

    from console.context import TtlCache

    cache = TtlCache()
    calls = []
    assert cache.get("k", 60, lambda: calls.append(1) or "v1") == "v1"
    assert cache.get("k", 60, lambda: "never") == "v1"  # fresh: not recomputed
    assert cache.get("k", 0, lambda: "v2") == "v2"  # ttl 0: always recomputed
    release = threading.Event()

    def slow() -> str:
        release.wait(5)
        return "v3"

    cache._values["k"] = (_time.monotonic() - 10, "old")
    t = threading.Thread(target=lambda: cache.get("k", 1, slow))
    t.start()
    _time.sleep(0.05)
    assert cache.get("k", 1, lambda: "other") == "old"  # refresh in progress elsewhere: stale value at once
    release.set()
    t.join()
    assert cache.get("k", 1, lambda: "x") == "v3"
