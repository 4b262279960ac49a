"""Notifications against a real local HTTP server and a real local SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cases_support import COVER_WATER, GAUGE, T0, alarm

from case_bridge.bridge import CaseBridge
from case_bridge.config import CasesSettings, NotifySettings
from case_bridge.notify import Notice, Notifier
from case_bridge.store import CaseStore, open_case_store
from contracts.config import MqttSettings
from tests.support.services import free_port

pytestmark = pytest.mark.integration


@dataclass
class Recorder:
    """A local HTTP endpoint: records requests, answers from a script (then 200 + errcode 0)."""

    replies: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def http() -> Iterator[Recorder]:
    rec = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length", "0"))
            rec.requests.append((self.path, json.loads(self.rfile.read(n))))
            status, body = rec.replies.pop(0) if rec.replies else (200, {"errcode": 0, "errmsg": "ok"})
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_a: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    from aiosmtpd.controller import Controller

    box = Mailbox()
    port = free_port()
    ctl = Controller(box, hostname="127.0.0.1", port=port)
    ctl.start()
    yield box, port
    ctl.stop()


def settings(targets: list[dict[str, Any]], **kw: Any) -> NotifySettings:
    base: dict[str, Any] = {"targets": targets, "primary": [t["name"] for t in targets if not t.get("esc")],
                            "retry_attempts": 4, "retry_base_s": 0.01, "retry_max_s": 0.05}
    for t in targets:
        t.pop("esc", None)
    base.update(kw)
    return NotifySettings.model_validate(base)


@pytest.fixture
def store() -> Iterator[CaseStore]:
    s = open_case_store("sqlite://:memory:")
    yield s
    s.close()


NOTICE = Notice("k1", "CRITICAL road-water-depth @ wl-0001", ("告警 raised: value=0.42", "案件 #1"), "critical")


async def run_notifier(n: Notifier, *notices: Notice) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(n.run(stop))
    for notice in notices:
        n.notify(notice)
    await n.drain(10)
    stop.set()
    await task


async def test_dingtalk_signed_markdown(http: Recorder, store: CaseStore) -> None:
    secret = "SECtest-secret"
    s = settings([{"name": "ding", "type": "dingtalk", "url": http.url("/robot/send?access_token=abc"),
                   "secret": secret}])
    n = Notifier(s, store.notices)
    await run_notifier(n, NOTICE)
    ((path, body),) = http.requests
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    assert q["access_token"] == ["abc"]
    ts = q["timestamp"][0]
    expect = base64.b64encode(hmac.new(secret.encode(), f"{ts}\n{secret}".encode(), hashlib.sha256).digest()).decode()
    assert q["sign"] == [expect]
    assert body["msgtype"] == "markdown" and body["markdown"]["title"] == NOTICE.title
    assert "value=0.42" in body["markdown"]["text"]
    assert n.sent == [("ding", "k1")]


async def test_wecom_rate_limit_is_retried(http: Recorder, store: CaseStore) -> None:
    http.replies = [(200, {"errcode": 45009, "errmsg": "api freq out of limit"})]
    n = Notifier(settings([{"name": "wecom", "type": "wecom", "url": http.url("/cgi-bin/webhook/send?key=k")}]),
                 store.notices)
    await run_notifier(n, NOTICE)
    assert len(http.requests) == 2
    body = http.requests[1][1]
    assert body["msgtype"] == "markdown" and NOTICE.title in body["markdown"]["content"]
    assert n.sent == [("wecom", "k1")] and n.failed == []


async def test_webhook_backoff_dedup_and_giving_up(http: Recorder, store: CaseStore) -> None:
    http.replies = [(500, {}), (503, {})]
    n = Notifier(settings([{"name": "hook", "type": "webhook", "url": http.url("/hook")}]), store.notices)
    await run_notifier(n, NOTICE, NOTICE)  # the second is a duplicate
    assert len(http.requests) == 3 and n.sent == [("hook", "k1")]
    assert http.requests[-1][1]["key"] == "k1" and http.requests[-1][1]["severity"] == "critical"
    # a refusal (4xx) is not retried
    http.requests.clear()
    http.replies = [(400, {})]
    n2 = Notifier(settings([{"name": "hook", "type": "webhook", "url": http.url("/hook")}]), store.notices)
    await run_notifier(n2, Notice("k2", "t", ()))
    assert len(http.requests) == 1 and n2.failed and n2.failed[0][:2] == ("hook", "k2")


async def test_unreachable_target_gives_up_after_the_attempts(store: CaseStore) -> None:
    url = f"http://127.0.0.1:{free_port()}/nothing"
    n = Notifier(settings([{"name": "hook", "type": "webhook", "url": url}], retry_attempts=3), store.notices)
    await run_notifier(n, NOTICE)
    assert n.sent == [] and len(n.failed) == 1


async def test_email(smtp: tuple[Mailbox, int], store: CaseStore) -> None:
    box, port = smtp
    n = Notifier(settings([{"name": "mail", "type": "email", "smtp_host": "127.0.0.1", "smtp_port": port,
                            "from_addr": "citywatch@example.org", "to": ["duty@example.org"]}]), store.notices)
    await run_notifier(n, NOTICE)
    (env,) = box.messages
    assert env.rcpt_tos == ["duty@example.org"]
    text = env.content.decode()
    assert "citywatch" in text and "X-Citywatch-Key: k1" in text


async def test_critical_alarm_escalates_when_unacknowledged(http: Recorder, store: CaseStore) -> None:
    s = settings(
        [{"name": "duty", "type": "webhook", "url": http.url("/duty")},
         {"name": "boss", "type": "webhook", "url": http.url("/boss"), "esc": True}],
        escalate_to=["boss"], escalate_after_s=300,
    )
    clock = [T0]
    first = Notifier(s, store.notices, clock=lambda: clock[0])
    before_restart = CaseBridge(store, MqttSettings(), CasesSettings(), first, clock=lambda: clock[0])
    before_restart.registry.update({GAUGE.id: GAUGE})
    before_restart.handle_alarm(alarm("wl-0001", "road-water-depth", severity="critical", alarm_id="w1"))
    # the bridge restarts: a new notifier over the same store still owes the escalation of w1
    n = Notifier(s, store.notices, clock=lambda: clock[0])
    bridge = CaseBridge(store, MqttSettings(), CasesSettings(), n, clock=lambda: clock[0])
    bridge.registry.update({GAUGE.id: GAUGE, COVER_WATER.id: COVER_WATER})
    stop = asyncio.Event()
    task = asyncio.create_task(n.run(stop))
    bridge.handle_alarm(alarm("mh-0001", "manhole-tilt", severity="critical", alarm_id="m1"))
    bridge.handle_alarm(alarm("wl-0001", "road-water-depth", severity="minor", alarm_id="w-minor"))  # below min
    # the cover alarm is acknowledged in time; the water alarm is not
    clock[0] = T0 + 100
    bridge.handle_alarm(alarm("mh-0001", "manhole-tilt", "acknowledged", "critical", t=T0 + 100, alarm_id="m1"))
    clock[0] = T0 + 301
    bridge.tick(clock[0], T0)
    await n.drain(10)
    stop.set()
    await task
    paths = [p for p, _b in http.requests]
    # the first notifier never ran: its queued notice for w1 survived the "crash" in the outbox and
    # was sent by the new one, with m1's; the escalation of w1 survived too
    assert paths.count("/duty") == 2 and paths.count("/boss") == 1
    boss = next(b for p, b in http.requests if p == "/boss")
    assert boss["title"].startswith("[升级]") and boss["data"]["alarm_id"] == "w1"
    assert boss["data"]["case_id"] is not None


async def test_overdue_case_notifies_once_per_stage(http: Recorder, store: CaseStore) -> None:
    n = Notifier(settings([{"name": "duty", "type": "webhook", "url": http.url("/duty")}]), store.notices)
    bridge = CaseBridge(store, MqttSettings(), CasesSettings(), n)
    c = store.create_reported("S0111", "积水", grid="330106001001", now=T0)
    assert c.deadline is not None
    stop = asyncio.Event()
    task = asyncio.create_task(n.run(stop))
    bridge.tick(c.deadline - 1, T0)  # not yet
    bridge.tick(c.deadline + 1, c.deadline - 1)  # just went overdue
    bridge.tick(c.deadline + 2, c.deadline - 1)  # the same deadline again: de-duplicated
    await n.drain(10)
    stop.set()
    await task
    ((path, body),) = http.requests
    assert path == "/duty" and body["title"].startswith("超期") and body["data"]["case_id"] == c.id
    assert "灵隐街道办事处" in body["lines"][0]
