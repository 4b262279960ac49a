"""Duty-officer notifications: generic webhook, DingTalk and WeCom group robots, SMTP e-mail.

Message building (bodies, DingTalk's signed URL, backoff schedule, escalation bookkeeping)
is pure; :class:`Notifier` is the thin async shell that sends with retries. Formats follow the
robots' documented APIs: DingTalk ``{"msgtype": "markdown", "markdown": {"title", "text"}}``
with ``&timestamp=<ms>&sign=<urlencoded base64 HMAC-SHA256 of "<ms>\\n<secret>">`` when the
robot has 加签; WeCom ``{"msgtype": "markdown", "markdown": {"content"}}``. Both answer HTTP
200 with ``{"errcode": 0, "errmsg": "ok"}``; a non-zero errcode is a failure (rate limits —
DingTalk 130101, WeCom 45009 — are retried, anything else is not).

Durability: a notice is written to an outbox in the case store in one transaction with its
de-duplication record (each (key, target) once per ``dedup_window_s``) and, for a critical
alarm, its escalation timer. The sender claims rows with a lease, so a crash loses nothing
and a redelivered alarm pages nobody twice; escalations survive a restart.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Protocol

import httpx

from case_bridge.config import NotifySettings, NotifyTarget, TargetKind
from case_bridge.errors import CaseError, NotifyError

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


def notice_json(n: Notice) -> dict[str, Any]:
    return {"key": n.key, "title": n.title, "lines": list(n.lines), "severity": n.severity, "data": n.data}


def notice_from(j: dict[str, Any]) -> Notice:
    return Notice(str(j["key"]), str(j["title"]), tuple(j.get("lines", ())), str(j.get("severity", "major")),
                  dict(j.get("data", {})))


def escalated(n: Notice) -> Notice:
    return Notice(f"{n.key}:escalated", f"[升级] {n.title}", n.lines, n.severity, n.data)


class NotifyStore(Protocol):
    """The durable side of notifications (implemented by :class:`case_bridge.notices.NoticeOutbox`)."""

    def enqueue_notice(self, targets: Sequence[str], notice: dict[str, Any], now: float, window_s: float,
                       escalation: tuple[str, float, dict[str, Any]] | None = None) -> list[str]: ...

    def take_notices(self, now: float, lease_s: float, limit: int = 20
                     ) -> list[tuple[int, str, dict[str, Any], int]]: ...

    def notice_done(self, outbox_id: int) -> None: ...

    def notice_retry(self, outbox_id: int, attempts: int, next_t: float) -> None: ...

    def pending_notices(self) -> int: ...

    def cancel_escalation(self, alarm_id: str) -> None: ...

    def take_due_escalations(self, now: float) -> list[dict[str, Any]]: ...


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
    """Queues notices in the store's outbox and sends them in the background with retries.

    ``notify`` is a short write transaction (dedup record + outbox rows + optional escalation);
    ``run`` claims due rows, sends them concurrently, deletes them when delivered or given up,
    and reschedules them with exponential backoff otherwise.
    """

    def __init__(
        self,
        settings: NotifySettings,
        store: NotifyStore,
        clock: Callable[[], float] = time.time,
        jitter: bool = True,
    ) -> None:
        self.settings = settings
        self.store = store
        self._targets = {t.name: t for t in settings.targets}
        self._clock = clock
        self._jitter = jitter
        self._wake: asyncio.Event | None = None
        self.sent: list[tuple[str, str]] = []  # (target, key) delivered, for tests and metrics
        self.failed: list[tuple[str, str, str]] = []  # (target, key, error) given up
        self._failing: set[str] = set()

    @property
    def enabled(self) -> bool:
        return bool(self.settings.targets)

    def notify(self, notice: Notice, escalate_alarm: str | None = None, now: float | None = None) -> list[str]:
        """Queue ``notice`` for the primary targets; with ``escalate_alarm``, also schedule the
        escalation that fires unless :meth:`cancel_escalation` comes first."""
        now = self._clock() if now is None else now
        esc = None
        if escalate_alarm is not None and self.settings.escalate_to:
            esc = (escalate_alarm, now + self.settings.escalate_after_s, notice_json(notice))
        queued = self.store.enqueue_notice(self.settings.primary, notice_json(notice), now,
                                           self.settings.dedup_window_s, esc)
        self._poke()
        return queued

    def notify_unit(self, notice: Notice, unit: str, now: float | None = None) -> list[str]:
        """Queue ``notice`` for ``unit``'s own channels (``unit_targets``), else the primary targets."""
        now = self._clock() if now is None else now
        targets = self.settings.unit_targets.get(unit) or self.settings.primary
        queued = self.store.enqueue_notice(targets, notice_json(notice), now, self.settings.dedup_window_s)
        self._poke()
        return queued

    def cancel_escalation(self, alarm_id: str) -> None:
        self.store.cancel_escalation(alarm_id)

    def tick(self, now: float) -> None:
        """Fire the escalations that are due (a critical alarm nobody acknowledged in time)."""
        for j in self.store.take_due_escalations(now):
            self.store.enqueue_notice(self.settings.escalate_to, notice_json(escalated(notice_from(j))), now,
                                      self.settings.dedup_window_s)
            self._poke()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        self._wake = asyncio.Event()
        lease = max(t.timeout_s for t in self.settings.targets) * 2 + 5 if self.settings.targets else 30.0
        async with httpx.AsyncClient() as client:
            while not stop.is_set():
                try:
                    batch = self.store.take_notices(self._clock(), lease)
                except CaseError as exc:
                    log.error("cannot read the notification outbox: %s", exc)
                    batch = []
                if batch:
                    await asyncio.gather(*(self._attempt(client, *row) for row in batch))
                    continue
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), 0.1)
                except TimeoutError:
                    pass

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until the outbox is empty: every notice sent or given up (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self.store.pending_notices():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.store.pending_notices()} notices still pending")
            await asyncio.sleep(0.02)

    async def _attempt(self, client: httpx.AsyncClient, outbox_id: int, name: str, body: dict[str, Any],
                       attempts: int) -> None:
        notice = notice_from(body)
        target = self._targets.get(name)
        if target is None:  # the target was removed from the config since it was queued
            self.failed.append((name, notice.key, "unknown target"))
            self.store.notice_done(outbox_id)
            return
        s = self.settings
        try:
            await send_once(target, notice, client)
        except NotifyError as exc:
            attempt = attempts + 1
            if target.name not in self._failing:
                log.warning("%s (will retry: %s)", exc, exc.retryable)
                self._failing.add(target.name)
            if not exc.retryable or attempt >= s.retry_attempts:
                self.failed.append((target.name, notice.key, str(exc)))
                log.error("gave up notifying %s of %s after %d attempt(s): %s", target.name, notice.key, attempt, exc)
                self.store.notice_done(outbox_id)
                return
            jitter = random.random() * 0.2 if self._jitter else 0.0
            self.store.notice_retry(outbox_id, attempt,
                                    self._clock() + backoff_s(attempt, s.retry_base_s, s.retry_max_s, jitter))
            return
        if target.name in self._failing:
            log.info("notifying %s works again", target.name)
            self._failing.discard(target.name)
        self.sent.append((target.name, notice.key))
        self.store.notice_done(outbox_id)
