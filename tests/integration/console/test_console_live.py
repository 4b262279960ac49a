"""Live feed over a real Mosquitto: alarm transitions and telemetry reach an SSE client; an
acknowledgement from the console reaches the broker as ``alarm-ack``; pages over a real server."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion

from console.live import Hub, MqttFeed
from contracts import payloads, topics
from contracts.alarms import AlarmTransition, Severity, TransitionKind
from contracts.config import MqttSettings
from contracts.reading import Reading
from tests.support.console_demo import PASSWORD, build_demo
from tests.support.services import free_port, mosquitto_binary

pytestmark = pytest.mark.integration


class Probe:
    """A plain paho client for the test: publish, and collect messages of one filter."""

    def __init__(self, port: int, filt: str) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.ready = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{port}-{time.monotonic_ns()}")
        self.c.on_connect = lambda c, *_a: (c.subscribe(filt, 1), self.ready.set())
        self.c.on_message = lambda _c, _u, m: self.got.append((m.topic, bytes(m.payload)))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.ready.wait(5)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


async def _serve(app: Any) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=3))
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    assert server.started
    return server, task, f"http://127.0.0.1:{port}"


async def _until(pred: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


async def test_live_alarm_reading_and_ack(broker: Any, tmp_path: Path) -> None:
    if mosquitto_binary() is None:
        from tests.support.services import missing

        missing("mosquitto binary")
    hub = Hub(flush_s=0.1)
    feed = MqttFeed(MqttSettings(url=broker.url), hub)
    env = build_demo(str(tmp_path), now=time.time(), acks=feed, background=feed.run, hub=hub)
    server, task, base = await _serve(env.app)
    probe = Probe(broker.port, topics.ALARM_ACK_FILTER)
    try:
        await _until(lambda: feed.connected)
        async with httpx.AsyncClient(base_url=base, timeout=10) as c:
            tok = (await c.post("/api/v1/auth/login", json={"username": "duty", "password": PASSWORD})).json()
            h = {"Authorization": f"Bearer {tok['access_token']}"}
            seen: dict[str, str] = {}
            async with c.stream("GET", "/api/v1/live", headers=h) as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                lines = r.aiter_lines()
                assert (await lines.__anext__()).startswith("retry:")
                await _until(lambda: hub.subscribers == 1)
                tr = AlarmTransition("al-live-1", "wl-0000", "road-water-depth", TransitionKind.RAISED,
                                     Severity.CRITICAL, time.time(), 0.42, {})
                probe.c.publish(topics.alarms("wl-0000"), payloads.encode_alarm(tr), qos=1)
                probe.c.publish(topics.telemetry("gw-demo-01"), payloads.encode_telemetry(
                    "gw-demo-01", "b1", 1, [Reading("wl-0000", "depth", time.time(), 0.43, "m")]), qos=1)
                event = None
                async with asyncio.timeout(10):
                    async for line in lines:
                        if line.startswith("event: "):
                            event = line[7:]
                        elif line.startswith("data: ") and event:
                            seen[event] = line[6:]
                            if {"alarm", "reading"} <= set(seen):
                                break
            assert '"al-live-1"' in seen["alarm"] and '"critical"' in seen["alarm"]
            assert '"wl-0000"' in seen["reading"] and "0.43" in seen["reading"]
            alarm = env.demo.alarm_ids[0]
            r2 = await c.post(f"/api/v1/alarms/{alarm}/ack", headers=h, json={"note": "crew sent"})
            assert r2.status_code == 202
            await _until(lambda: bool(probe.got))
            topic, raw = probe.got[0]
            ack = payloads.decode_alarm_ack(raw)
            assert topic == topics.alarm_ack(ack.device)
            assert (ack.alarm_id, ack.actor, ack.note) == (alarm, "duty", "crew sent")
    finally:
        probe.close()
        server.should_exit = True
        await task
        env.close()


async def test_ack_without_broker_is_503(tmp_path: Path) -> None:
    hub = Hub()
    feed = MqttFeed(MqttSettings(url=f"mqtt://127.0.0.1:{free_port()}"), hub)  # nothing listens there
    env = build_demo(str(tmp_path), now=time.time(), acks=feed, background=feed.run, hub=hub)
    server, task, base = await _serve(env.app)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as c:
            tok = (await c.post("/api/v1/auth/login", json={"username": "duty", "password": PASSWORD})).json()
            h = {"Authorization": f"Bearer {tok['access_token']}"}
            r = await c.post(f"/api/v1/alarms/{env.demo.alarm_ids[0]}/ack", headers=h, json={})
            assert r.status_code == 503 and "broker" in r.json()["error"]["message"]
    finally:
        server.should_exit = True
        await task
        env.close()


async def test_case_events_respect_units(tmp_path: Path) -> None:
    """A handler's live stream carries case events of their unit only."""
    hub = Hub(flush_s=0.1)
    env = build_demo(str(tmp_path), now=time.time(), hub=hub)
    server, task, base = await _serve(env.app)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as c:
            async def token(user: str) -> dict[str, str]:
                tok = (await c.post("/api/v1/auth/login", json={"username": user, "password": PASSWORD})).json()
                return {"Authorization": f"Bearer {tok['access_token']}"}

            ha, hb = await token("handler-a"), await token("handler-b")
            async with c.stream("GET", "/api/v1/live", headers=hb) as r:
                lines = r.aiter_lines()
                await lines.__anext__()
                await _until(lambda: hub.subscribers == 1)
                own = env.demo.case_ids["lingyin-street"][0]
                theirs = env.demo.case_ids["hubin-street"][0]
                r1 = await c.post(f"/api/v1/cases/{own}/actions", headers=ha, json={"action": "accept"})
                assert r1.status_code == 200
                assert (await c.post(f"/api/v1/cases/{theirs}/actions", headers=hb,
                                     json={"action": "accept"})).status_code == 200
                data = []
                async with asyncio.timeout(5):
                    async for line in lines:
                        if line.startswith("data: "):
                            data.append(line)
                            break
            assert f'"id":"{theirs}"' in data[0]  # the first (and only) case event is handler-b's own
    finally:
        server.should_exit = True
        await task
        env.close()


async def test_pages_render_for_each_role(tmp_path: Path) -> None:
    env = build_demo(str(tmp_path), now=time.time())
    server, task, base = await _serve(env.app)
    try:
        for user, pages in (("duty", ["/overview", "/devices/wl-0000", "/cases", "/stats", "/cases/1"]),
                            ("handler-a", ["/cases", "/cases/1", "/overview"]),
                            ("sup", ["/stats", "/cases"])):
            async with httpx.AsyncClient(base_url=base, timeout=10, follow_redirects=False) as c:
                assert (await c.get("/overview", headers={"Accept": "text/html"})).status_code == 303
                r = await c.post("/login", data={"username": user, "password": PASSWORD, "next": "/"})
                assert r.status_code == 303
                for page in pages:
                    r = await c.get(page)
                    assert r.status_code == 200, (user, page, r.text[:300])
                    assert '<html lang="zh-CN">' in r.text
        async with httpx.AsyncClient(base_url=base, timeout=10) as c:
            r = await c.post("/login", data={"username": "duty", "password": "wrong"})
            assert r.status_code == 401 and "wrong username or password" in r.text
            r = await c.post("/login", data={"username": "duty", "password": PASSWORD, "next": "//evil.example"},
                             follow_redirects=False)
            assert r.headers["location"] == "/"
    finally:
        server.should_exit = True
        await task
        env.close()


async def test_feed_survives_broker_restart_and_high_descriptors(broker: Any) -> None:
    """The feed reconnects after the broker comes back, and works with descriptor numbers > 1024
    (paho's own select() loop would not: that is why the feed is driven by asyncio)."""
    import os
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1400:
        if hard != resource.RLIM_INFINITY and hard < 1400:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < 1400: cannot open descriptors past 1024")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1400, hard))
    probe: Probe | None = Probe(broker.port, "nothing/#")  # a plain paho client: connected before the flood
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]  # push the next socket past fd 1024
    hub = Hub(flush_s=0.05)
    feed = MqttFeed(MqttSettings(url=broker.url), hub)
    task = asyncio.create_task(feed.run())
    try:
        await _until(lambda: feed.connected, 10)
        assert feed.fileno is not None and feed.fileno > 1024
        sub = hub.subscribe()
        await asyncio.sleep(0.2)  # the SUBACK
        assert probe is not None
        tr = AlarmTransition("al-fd", "wl-0001", "road-water-depth", TransitionKind.RAISED, Severity.MAJOR,
                             time.time(), 0.3, {})
        probe.c.publish(topics.alarms("wl-0001"), payloads.encode_alarm(tr), qos=1)
        ev = await asyncio.wait_for(sub.queue.get(), 5)
        assert ev.kind == "alarm" and ev.data["alarm_id"] == "al-fd"
        probe.close()
        probe = None
        broker.stop()
        await _until(lambda: not feed.connected, 10)
        broker.start()
        await _until(lambda: feed.connected, 20)
        feed.send_ack("al-fd", "wl-0001", "duty", time.time(), "")  # publishing works again
    finally:
        if probe is not None:
            probe.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for fd in filler:
            os.close(fd)
