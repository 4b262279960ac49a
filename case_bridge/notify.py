"""Duty-officer notifications: generic webhook, DingTalk and WeCom group robots, SMTP e-mail.

Message building (bodies, DingTalk's signed URL, backoff schedule, escalation bookkeeping)
is pure; :class:`Notifier` is the thin async shell that sends with retries. Formats follow the
robots' documented APIs: DingTalk ``{"msgtype": "markdown", "markdown": {"title", "text"}}``
with ``&timestamp=<ms>&sign=<urlencoded base64 HMAC-SHA256 of "<ms>\\n<secret>">`` when the
robot has 加签; WeCom ``{"msgtype": "markdown", "markdown": {"content"}}``. Both answer HTTP
200 with ``{"errcode": 0, "errmsg": "ok"}``; a non-zero errcode is a failure (rate limits —
DingTalk 130101, WeCom 45009 — are retried, anything else is not).

De-duplication: each (notice key, target) is sent once per ``dedup_window_s``, recorded in
the case store so a restarted bridge does not re-page the duty officer. Escalation timers
live in memory: a restart forgets pending escalations (documented limitation).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import random
import smtplib
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import httpx

from case_bridge.config import NotifySettings, NotifyTarget, TargetKind
from case_bridge.errors import NotifyError

log = logging.getLogger("citywatch.cases.notify")

RETRYABLE_ERRCODES = frozenset({-1, 130101, 45009, 45033})


@dataclass(frozen=True, slots=True)
class Notice:
    """One thing to tell the duty officer. ``key`` identifies it for de-duplication."""

    key: str
    title: str
    lines: tuple[str, ...]
    severity: str = "major"
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n".join([self.title, *self.lines])


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk 加签: urlencoded base64 of HMAC-SHA256(secret, "<timestamp>\\n<secret>")."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return urllib.parse.quote_plus(base64.b64encode(digest).decode())


def dingtalk_url(url: str, secret: str | None, timestamp_ms: int) -> str:
    if not secret:
        return url
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}timestamp={timestamp_ms}&sign={dingtalk_sign(secret, timestamp_ms)}"


def http_body(kind: TargetKind, notice: Notice) -> dict[str, Any]:
    """The JSON body for an HTTP target."""
    if kind is TargetKind.DINGTALK:
        text = "\n\n".join([f"### {notice.title}", *notice.lines])
        return {"msgtype": "markdown", "markdown": {"title": notice.title, "text": text}}
    if kind is TargetKind.WECOM:
        colour = "warning" if notice.severity == "critical" else "comment"
        content = "\n".join([f'## <font color="{colour}">{notice.title}</font>', *[f"> {ln}" for ln in notice.lines]])
        return {"msgtype": "markdown", "markdown": {"content": content[:4000]}}
    return {"v": 1, "key": notice.key, "title": notice.title, "lines": list(notice.lines),
            "severity": notice.severity, "data": notice.data}


def email_message(target: NotifyTarget, notice: Notice) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = f"[citywatch] {notice.title}"
    msg["From"] = target.from_addr or ""
    msg["To"] = ", ".join(target.to)
    msg["X-Citywatch-Key"] = notice.key
    msg.set_content(notice.text)
    return msg


def backoff_s(attempt: int, base_s: float, max_s: float, jitter: float = 0.0) -> float:
    """Delay before retry ``attempt`` (1-based): base * 2^(attempt-1), capped, plus up to ``jitter`` share."""
    delay = min(max_s, base_s * 2.0 ** (attempt - 1))
    return float(delay * (1.0 + jitter))


@dataclass
class Escalations:
    """Critical alarms waiting for an acknowledgement; pure bookkeeping, time is a parameter."""

    after_s: float
    pending: dict[str, tuple[float, Notice]] = field(default_factory=dict)  # alarm id -> (due, notice)

    def start(self, alarm_id: str, notice: Notice, now: float) -> None:
        self.pending.setdefault(alarm_id, (now + self.after_s, notice))

    def stop(self, alarm_id: str) -> None:
        self.pending.pop(alarm_id, None)

    def due(self, now: float) -> list[Notice]:
        out = [(a, n) for a, (t, n) in self.pending.items() if t <= now]
        for a, _n in out:
            del self.pending[a]
        return [n for _a, n in out]


async def send_once(target: NotifyTarget, notice: Notice, client: httpx.AsyncClient) -> None:
    """One delivery attempt; :class:`NotifyError` says whether a retry may help."""
    if target.type is TargetKind.EMAIL:
        await asyncio.to_thread(_send_mail, target, notice)
        return
    assert target.url is not None
    url = target.url
    if target.type is TargetKind.DINGTALK:
        url = dingtalk_url(url, target.secret, int(time.time() * 1000))
    try:
        resp = await client.post(url, json=http_body(target.type, notice), timeout=target.timeout_s)
    except httpx.HTTPError as exc:
        raise NotifyError(target.name, f"{type(exc).__name__}: {exc}") from exc
    if resp.status_code >= 500 or resp.status_code == 429:
        raise NotifyError(target.name, f"HTTP {resp.status_code}")
    if resp.status_code >= 400:
        raise NotifyError(target.name, f"HTTP {resp.status_code}", retryable=False)
    if target.type in (TargetKind.DINGTALK, TargetKind.WECOM):
        try:
            answer = resp.json()
        except ValueError as exc:
            raise NotifyError(target.name, "answer is not JSON") from exc
        code = answer.get("errcode", 0) if isinstance(answer, dict) else -1
        if code != 0:
            raise NotifyError(target.name, f"errcode {code}: {answer.get('errmsg')}", code in RETRYABLE_ERRCODES)


def _send_mail(target: NotifyTarget, notice: Notice) -> None:
    assert target.smtp_host is not None
    try:
        with smtplib.SMTP(target.smtp_host, target.smtp_port, timeout=target.timeout_s) as smtp:
            if target.starttls:
                smtp.starttls()
            if target.username:
                smtp.login(target.username, target.password or "")
            smtp.send_message(email_message(target, notice))
    except smtplib.SMTPResponseException as exc:
        code = int(exc.smtp_code)
        raise NotifyError(target.name, f"SMTP {code}", retryable=400 <= code < 500) from exc
    except (OSError, smtplib.SMTPException) as exc:
        raise NotifyError(target.name, f"{type(exc).__name__}: {exc}") from exc


class Notifier:
    """Sends notices in the background: dedup, retries with backoff, escalation timers."""

    def __init__(
        self,
        settings: NotifySettings,
        dedup: Callable[[str, float, float], bool],
        clock: Callable[[], float] = time.time,
        jitter: bool = True,
    ) -> None:
        self.settings = settings
        self._targets = {t.name: t for t in settings.targets}
        self._dedup = dedup
        self._clock = clock
        self._jitter = jitter
        self._queue: asyncio.Queue[tuple[NotifyTarget, Notice]] = asyncio.Queue(maxsize=10000)
        self.escalations = Escalations(settings.escalate_after_s)
        self.sent: list[tuple[str, str]] = []  # (target, key) delivered, for tests and metrics
        self.failed: list[tuple[str, str, str]] = []  # (target, key, error) given up
        self._failing: set[str] = set()

    @property
    def enabled(self) -> bool:
        return bool(self.settings.targets)

    def notify(self, notice: Notice, escalate: bool = False) -> None:
        """Queue ``notice`` for the primary targets (or the escalation targets)."""
        names = self.settings.escalate_to if escalate else self.settings.primary
        now = self._clock()
        for name in names:
            target = self._targets[name]
            if not self._dedup(f"{name}:{notice.key}", now, self.settings.dedup_window_s):
                continue
            try:
                self._queue.put_nowait((target, notice))
            except asyncio.QueueFull:
                log.error("notification queue full; dropping %s for %s", notice.key, name)

    def tick(self, now: float) -> None:
        for notice in self.escalations.due(now):
            esc = Notice(f"{notice.key}:escalated", f"[升级] {notice.title}", notice.lines, notice.severity,
                         notice.data)
            self.notify(esc, escalate=True)

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient() as client:
            workers = [asyncio.create_task(self._worker(client), name=f"cases.notify.{i}") for i in range(2)]
            try:
                await stop.wait()
            finally:
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until the queue is empty and every notice was sent or given up (tests, shutdown)."""
        await asyncio.wait_for(self._queue.join(), timeout_s)

    async def _worker(self, client: httpx.AsyncClient) -> None:
        while True:
            target, notice = await self._queue.get()
            try:
                await self._deliver(client, target, notice)
            finally:
                self._queue.task_done()

    async def _deliver(self, client: httpx.AsyncClient, target: NotifyTarget, notice: Notice) -> None:
        s = self.settings
        for attempt in range(1, s.retry_attempts + 1):
            try:
                await send_once(target, notice, client)
            except NotifyError as exc:
                if target.name not in self._failing:
                    log.warning("%s (will retry: %s)", exc, exc.retryable)
                    self._failing.add(target.name)
                if not exc.retryable or attempt == s.retry_attempts:
                    self.failed.append((target.name, notice.key, str(exc)))
                    log.error("gave up notifying %s of %s after %d attempt(s): %s", target.name, notice.key,
                              attempt, exc)
                    return
                jitter = random.random() * 0.2 if self._jitter else 0.0
                await asyncio.sleep(backoff_s(attempt, s.retry_base_s, s.retry_max_s, jitter))
                continue
            if target.name in self._failing:
                log.info("notifying %s works again", target.name)
                self._failing.discard(target.name)
            self.sent.append((target.name, notice.key))
            return
