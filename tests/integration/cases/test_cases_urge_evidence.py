"""督办 reaches the unit, and an automatic return carries its readings: on real PostgreSQL.

The store is a throwaway schema in the session's PostgreSQL; notices go through the real outbox
to a local HTTP endpoint standing in for the unit's group robot.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cases_support import GAUGE, T0, alarm, pg_store

from case_bridge.bridge import CaseBridge
from case_bridge.config import CasesSettings, NotifySettings
from case_bridge.notify import Notifier
from case_bridge.store import CaseStore
from contracts.config import MqttSettings

pytestmark = pytest.mark.integration

EVIDENCE = {"metric": "depth", "value": 0.27, "threshold": 0.25, "clear_at": 0.13, "direction": "above"}


@pytest.fixture
def store(pg_dsn: str) -> Iterator[CaseStore]:
    with pg_store(pg_dsn, verify_hold_s=600.0, verify_grace_s=300.0) as s:
        yield s


@pytest.fixture
def robots() -> Iterator[tuple[list[tuple[str, dict[str, Any]]], int]]:
    got: list[tuple[str, dict[str, Any]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length", "0"))
            got.append((self.path, json.loads(self.rfile.read(n))))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *_a: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield got, server.server_address[1]
    server.shutdown()
    server.server_close()


async def test_urge_notifies_the_units_channel_once(store: CaseStore,
                                                    robots: tuple[list[tuple[str, dict[str, Any]]], int]) -> None:
    got, port = robots
    settings = NotifySettings.model_validate({
        "targets": [{"name": "duty", "type": "webhook", "url": f"http://127.0.0.1:{port}/duty"},
                    {"name": "lingyin", "type": "webhook", "url": f"http://127.0.0.1:{port}/lingyin"}],
        "primary": ["duty"], "unit_targets": {"lingyin-street": ["lingyin"]},
        "retry_attempts": 3, "retry_base_s": 0.01, "retry_max_s": 0.05})
    c = store.create_reported("S0111", "积水 30 cm", grid="330106001001", now=T0)
    store.transition(c.id, "file", "sup", role="supervision", now=T0 + 60)
    c = store.transition(c.id, "dispatch", "cmd", role="command", now=T0 + 120)
    assert c.unit == "lingyin-street" and c.deadline is not None
    urged_at = c.deadline - 1800  # due in half an hour: inside the 4 h window
    store.transition(c.id, "urge", "cmd", role="command", note="请今日内处置", now=urged_at)
    n = Notifier(settings, store.notices, clock=lambda: urged_at + 5)
    bridge = CaseBridge(store, MqttSettings(), CasesSettings(), n, clock=lambda: urged_at + 5)
    stop = asyncio.Event()
    task = asyncio.create_task(n.run(stop))
    bridge.tick(urged_at + 5, urged_at - 5)
    bridge.tick(urged_at + 6, urged_at - 5)  # an overlapping tick: the outbox's dedup sends it once
    await n.drain(10)
    stop.set()
    await task
    ((path, body),) = got
    assert path == "/lingyin"  # the unit's own channel, not the duty room
    assert body["title"] == f"督办 案件 #{c.id} 道路积水"
    assert body["lines"][:3] == ["派遣 @ 灵隐街道办事处", "距时限 due in 0.5 h", "督办 cmd: 请今日内处置"]
    assert body["data"]["case_id"] == c.id and body["data"]["overdue_s"] == -1800.0
    urge = store.timeline(c.id)[-1]
    assert (urge.action, urge.role, urge.data["overdue_s"]) == ("urge", "dispatcher", -1800.0)


def test_auto_return_carries_readings_condition_and_chart(store: CaseStore) -> None:
    out = store.apply_alarm(alarm("wl-0001", "road-water-depth", value=0.27, evidence=EVIDENCE), GAUGE, T0)
    assert out.case_id is not None
    cid = out.case_id
    store.transition(cid, "file", "sup", role="supervision", now=T0 + 60)
    store.transition(cid, "dispatch", "cmd", role="command", now=T0 + 120)
    store.transition(cid, "report_fix", "ha", role="case_handler", now=T0 + 3600)
    (res,) = store.due_verifications(T0 + 3600 + 301)
    assert res.actions == ("fail_verification",) and res.case is not None and res.case.state == "returned"
    entry = store.timeline(cid)[-1]
    assert entry.action == "fail_verification"
    assert entry.note.startswith("alarm still active: wl-0001 depth 0.27 at ")
    assert entry.note.endswith("(clears at depth < 0.13)")
    (reading,) = entry.data["readings"]
    assert reading["value"] == 0.27 and reading["t"] == T0 and reading["clear"] is False
    assert reading["condition"]["clear_at"] == 0.13 and reading["condition"]["direction"] == "above"
    chart = entry.data["chart"]
    assert chart["device"] == "wl-0001" and chart["metric"] == "depth" and chart["mark"] == T0
    assert chart["start"] < T0 < chart["end"]
