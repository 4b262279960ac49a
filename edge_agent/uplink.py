"""The publisher: drains the outbox to MQTT and deletes rows only on the cloud's ack watermark.

Per connection: subscribe to ``.../ack`` and ``.../cmd``, publish the retained birth on
``.../status`` (the retained last will says ``offline``), resend every formed-but-unacked batch
in order with its original (boot, seq) and contents, then form and send new batches inside the
window. Deletion happens only when the retained ack says a batch is committed; a PUBACK only
means the broker has it. A PUBACK reason code >= 0x80 keeps the rows and raises a fault in the
status message. Batches not acked within the ack timeout are resent in order; the timeout is
``ack_timeout_s`` or the measured ack delay if longer, doubling while nothing progresses
(:class:`~edge_agent.batching.AckTimer`). Reconnects use jittered exponential backoff and rotate through
``mqtt.url`` + ``mqtt.failover_urls`` (the nodes of a broker cluster); a refused SUBACK drops
the connection so the subscription is retried, and the birth is re-published on every connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from contracts import payloads, topics
from contracts.config import MqttSettings
from contracts.errors import PayloadError
from edge_agent.batching import (
    ACK_TIMEOUT_CAP_S,
    AckTimer,
    BatchLimits,
    Outgoing,
    ack_timed_out,
    encode_batch,
    linger_deadline,
    should_form,
)
from edge_agent.config import PublishConfig
from edge_agent.errors import OutboxError
from edge_agent.outbox import BatchHeader, OutboxPort, RecordClass
from mqttlink.aio import MqttLink, open_link
from mqttlink.backoff import backoff_delay
from mqttlink.errors import LinkError

log = logging.getLogger(__name__)

#: how long a new connection waits for the retained ack before resending unacked batches
RETAINED_ACK_WAIT_S = 1.0


@dataclass
class Fault:
    code: str
    detail: str
    since: float
    count: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "detail": self.detail, "since": self.since, "count": self.count}


CommandHandler = Callable[[bytes], Awaitable[bytes]]
StatusProvider = Callable[[], payloads.Status]


class Uplink:
    """Owns the MQTT side. Everything runs on the agent's event loop."""

    def __init__(
        self,
        gw: str,
        boot: str,
        mqtt: MqttSettings,
        publish: PublishConfig,
        outbox: OutboxPort,
        *,
        status: StatusProvider,
        commands: CommandHandler | None = None,
        status_interval_s: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        self.gw = gw
        self.boot = boot
        self.mqtt = mqtt
        self.cfg = publish
        self.outbox = outbox
        self._status = status
        self._commands = commands
        self._status_interval_s = status_interval_s
        self._rng = rng or random.Random()
        self.limits = BatchLimits(publish.batch_max_readings, publish.batch_max_bytes, publish.linger_s,
                                  publish.max_inflight_batches)
        self._wake = asyncio.Event()
        self._link: MqttLink | None = None
        self._inflight: dict[int, BatchHeader] = {}  # mid -> batch, until its PUBACK
        self._sent_at: dict[int, float] = {}  # batch id -> monotonic time of last (re)send
        self._first_sent_at: dict[int, float] = {}  # batch id -> first send, until acked
        self._resent: set[int] = set()  # batch ids sent more than once: their acks time nothing (Karn)
        self._unbatched_since: dict[RecordClass, float | None] = {
            c: (0.0 if outbox.unbatched(c) else None) for c in RecordClass
        }
        self._last_progress = time.monotonic()
        self._ack_timer = AckTimer(publish.ack_timeout_s, cap_s=max(ACK_TIMEOUT_CAP_S, publish.ack_timeout_s))
        self._status_due = 0.0
        self._cmd_tasks: set[asyncio.Task[None]] = set()
        self._ack_seen = asyncio.Event()
        self._ack_listed: set[str] = set()  # boots named in the last ack message
        # observable counters
        self.connected = False
        self.connects = 0
        self.resent_batches = 0
        self.sent_batches = 0
        self.last_ack: dict[str, int] = {}
        self.last_ack_at: float | None = None
        self.faults: dict[str, Fault] = {}
        self.protocol: str | None = None
        self._protocol_choice = publish.protocol

    # ------------------------------------------------------------ called by the agent

    def notify_appended(self) -> None:
        """New rows are in the outbox: start their linger clock and wake the sender."""
        now = time.monotonic()
        wake = False
        for cls in RecordClass:
            n = self.outbox.unbatched(cls)
            if self._unbatched_since[cls] is None and n:
                self._unbatched_since[cls] = now  # a new linger deadline: the sender must re-plan
                wake = True
            elif n >= self.limits.max_records:
                wake = True
        if wake:  # otherwise the sender's linger timer is already set: save a wake-up per poll
            self._wake.set()

    def request_status(self) -> None:
        self._status_due = 0.0
        self._wake.set()

    def raise_fault(self, code: str, detail: str) -> None:
        f = self.faults.get(code)
        if f is None:
            log.error("fault %s: %s", code, detail)
            self.faults[code] = Fault(code, detail, time.time())
            self.request_status()
        else:
            f.count += 1
            f.detail = detail

    def clear_fault(self, code: str) -> None:
        if self.faults.pop(code, None) is not None:
            log.info("fault %s cleared", code)
            self.request_status()

    def health(self) -> dict[str, Any]:
        led = self.outbox.ledger()
        return {
            "outbox": {
                "depth": led.depth,
                "bytes": led.bytes,
                "budget_bytes": self.outbox.budget_bytes,
                "disk_full_cap_bytes": self.outbox.disk_full_cap,
                "telemetry": led.telemetry.present,
                "events": led.events.present,
                "unacked_batches": self.outbox.unacked_count,
            },
            "drops": {
                "policy": self.outbox.policy,
                "telemetry": led.telemetry.dropped,
                "events": led.events.dropped,
            },
            "ledger": {
                "appended": led.telemetry.appended + led.events.appended,
                "acked": led.telemetry.acked + led.events.acked,
                "dropped": led.telemetry.dropped + led.events.dropped,
                "present": led.depth,
            },
            "last_ack": {"acked": dict(self.last_ack), "at": self.last_ack_at},
            "uplink": {
                "connected": self.connected,
                "protocol": self.protocol,
                "connects": self.connects,
                "sent_batches": self.sent_batches,
                "resent_batches": self.resent_batches,
            },
            "faults": [f.to_json() for f in self.faults.values()],
        }

    # ------------------------------------------------------------ connection loop

    async def run(self) -> None:
        """Connect, serve, reconnect with jittered backoff: forever (cancel to stop)."""
        attempt = 0
        urls = self.mqtt.urls
        index = 0
        while True:
            node = self.mqtt.for_url(urls[index % len(urls)])
            try:
                link = await open_link(
                    node,
                    self.mqtt.client_id or f"citywatch-{self.gw}",
                    will=(topics.status(self.gw), payloads.encode_status(payloads.Status("offline", self.boot))),
                    on_message=self._on_message,
                    on_puback=self._on_puback,
                    protocol=self._protocol_choice,
                    connect_timeout_s=self.cfg.connect_timeout_s,
                )
            except LinkError as exc:
                delay = backoff_delay(attempt, self.cfg.reconnect_min_s, self.cfg.reconnect_max_s, self._rng)
                if attempt == 0:
                    log.warning("uplink down: %s (retrying with backoff)", exc)
                else:
                    log.debug("reconnect attempt %d failed: %s; next in %.1f s", attempt, exc, delay)
                attempt += 1
                index += 1  # a failed attempt or a lost link moves on to the next node
                await asyncio.sleep(delay)
                continue
            attempt = 0
            self._link = link
            self.connected = True
            self.connects += 1
            self.protocol = link.protocol
            if self._protocol_choice == "auto" and link.protocol == "3.1.1":
                self._protocol_choice = "3.1.1"  # this broker does not speak 5: do not ask again
            log.info("uplink connected to %s (MQTT %s)", node.url, link.protocol)
            try:
                await self._session(link)
            except asyncio.CancelledError:
                await self._goodbye(link)
                raise
            except LinkError as exc:
                log.warning("uplink lost: %s", exc)
            except OutboxError as exc:  # cannot read what to send: say so, back off, try again
                self.raise_fault("outbox_read", str(exc))
                await asyncio.sleep(self.cfg.reconnect_max_s)
            finally:
                self.connected = False
                self._link = None
                self._inflight.clear()
                await link.close()
            if link.close_reason:
                log.warning("uplink lost: %s", link.close_reason)
            index += 1
            await asyncio.sleep(backoff_delay(0, self.cfg.reconnect_min_s, self.cfg.reconnect_max_s, self._rng))

    async def _goodbye(self, link: MqttLink) -> None:
        """Graceful stop: a clean disconnect suppresses the will, so say ``offline`` ourselves."""
        with contextlib.suppress(Exception):
            link.publish(topics.status(self.gw), payloads.encode_status(payloads.Status("offline", self.boot)),
                         retain=True)
            await asyncio.sleep(0.05)

    async def _session(self, link: MqttLink) -> None:
        self._ack_seen.clear()
        link.subscribe([(topics.ack(self.gw), 1), (topics.cmd(self.gw), 1)])
        self._publish_status(link)
        self._sent_at.clear()
        # the retained watermark arrives right after SUBACK: apply it before resending, so
        # batches the cloud committed while we were away are not sent again
        if self.outbox.unacked_count:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ack_seen.wait(), RETAINED_ACK_WAIT_S)
        for h in self.outbox.unacked():  # resend in order, same (boot, seq) and contents
            self._send(link, h)
            self.resent_batches += 1
        self._last_progress = time.monotonic()
        closed = asyncio.ensure_future(link.closed.wait())
        try:
            while not link.closed.is_set():
                now = time.monotonic()
                self._fill_window(link, now)
                oldest = min(self._sent_at.values(), default=None)
                if ack_timed_out(oldest, self._last_progress, self._ack_timer.timeout_s, now):
                    self._relabel_forgotten_boots()
                    n = len(self._sent_at)
                    log.warning("no ack progress for %.0f s; resending %d batches in order",
                                self._ack_timer.timeout_s, n)
                    for h in self.outbox.unacked():
                        self._send(link, h)
                    self.resent_batches += n
                    self._last_progress = now
                    self._ack_timer.expired()
                if now >= self._status_due:
                    self._publish_status(link)
                await self._sleep(link, closed, self._next_deadline(now))
        finally:
            closed.cancel()

    def _relabel_forgotten_boots(self) -> None:
        """Old-boot batches whose boot the cloud's ack no longer lists move to the current boot.

        The cloud acks only its most recent boots per gateway; after several restarts in a row
        an older boot drops out and its batches could never be acked. Only done after an ack
        timeout, and only once an ack message has been seen in this session (so we know what
        the cloud lists).
        """
        if not self._ack_seen.is_set():
            return
        stale = [h.id for h in self.outbox.unacked() if h.boot != self.boot and h.boot not in self._ack_listed]
        if stale:
            moved = self.outbox.relabel(stale)
            log.warning("cloud no longer acks %d batches of earlier boots; resending them as boot %s seq %d..%d",
                        len(moved), self.boot, moved[0].seq, moved[-1].seq)

    def _next_deadline(self, now: float) -> float:
        deadlines = [self._status_due]
        if self.outbox.unacked_count < self.limits.window:
            for cls in RecordClass:
                d = linger_deadline(self._unbatched_since[cls], self.limits)
                if d is not None:
                    deadlines.append(d)
        oldest = min(self._sent_at.values(), default=None)
        if oldest is not None:
            deadlines.append(max(oldest, self._last_progress) + self._ack_timer.timeout_s)
        return min(deadlines)

    async def _sleep(self, link: MqttLink, closed: asyncio.Future[Any], deadline: float) -> None:
        timeout = max(0.0, deadline - time.monotonic())
        if self._wake.is_set():
            self._wake.clear()
            return
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({waker, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waker.cancel()
        self._wake.clear()

    def _fill_window(self, link: MqttLink, now: float) -> None:
        while True:
            formed = False
            for cls in (RecordClass.EVENTS, RecordClass.TELEMETRY):  # events go first in a backlog
                if not should_form(self.outbox.unbatched(cls), self._unbatched_since[cls],
                                   self.outbox.unacked_count, self.limits, now):
                    continue
                h = self.outbox.form_batch(cls, self.limits.max_records, self.limits.max_bytes)
                # a remainder smaller than a batch lingers again (to fill up); a full batch goes at once
                self._unbatched_since[cls] = now if self.outbox.unbatched(cls) else None
                if h is not None:
                    self._send(link, h)
                    formed = True
            if not formed or link.closed.is_set():
                return

    def _encode(self, h: BatchHeader) -> Outgoing:
        """The batch as it goes on the wire, from its rows (the same bytes on every resend)."""
        if h.cls is RecordClass.TELEMETRY:
            return encode_batch(self.gw, h, self.outbox.load_readings(h), ())
        return encode_batch(self.gw, h, (), self.outbox.load_events(h))

    def _send(self, link: MqttLink, h: BatchHeader) -> None:
        out = self._encode(h)
        mid = link.publish(out.topic, out.payload, qos=1)
        self._inflight[mid] = h
        now = time.monotonic()
        if h.id in self._first_sent_at:
            self._resent.add(h.id)
        else:
            self._first_sent_at[h.id] = now
        self._sent_at[h.id] = now
        self.sent_batches += 1

    def _publish_status(self, link: MqttLink) -> None:
        with contextlib.suppress(LinkError):
            link.publish(topics.status(self.gw), payloads.encode_status(self._status()), qos=1, retain=True)
        self._status_due = time.monotonic() + self._status_interval_s

    # ------------------------------------------------------------ callbacks from the link

    def _on_puback(self, mid: int, code: int, reason: str) -> None:
        h = self._inflight.pop(mid, None)
        if code >= 0x80:
            what = f"batch {h.boot}/{h.seq}" if h is not None else f"message {mid}"
            self.raise_fault("publish_refused", f"broker refused {what}: {code:#04x} {reason}; rows kept")
        elif h is not None and "publish_refused" in self.faults:
            self.clear_fault("publish_refused")

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == topics.ack(self.gw):
            self._handle_ack(payload)
        elif topic == topics.cmd(self.gw):
            task = asyncio.ensure_future(self._handle_command(payload))
            self._cmd_tasks.add(task)
            task.add_done_callback(self._cmd_tasks.discard)

    def _handle_ack(self, payload: bytes) -> None:
        self._ack_seen.set()
        try:
            acked = payloads.decode_ack(payload)
        except PayloadError as exc:
            self.raise_fault("bad_ack", f"undecodable ack watermark: {exc}")
            return
        self.clear_fault("bad_ack")
        self._ack_listed = set(acked)
        try:
            before = {h.id for h in self.outbox.unacked()}
            deleted = self.outbox.ack(acked)
        except OutboxError as exc:
            self.raise_fault("outbox", str(exc))
            return
        if deleted:
            still = {h.id for h in self.outbox.unacked()}
            now = time.monotonic()
            delays = [now - t for bid, t in self._first_sent_at.items()
                      if bid in before and bid not in still and bid not in self._resent]
            for bid in before - still:
                self._sent_at.pop(bid, None)
            # forget every batch no longer unacked (acked now, or dropped by the budget earlier)
            self._first_sent_at = {bid: t for bid, t in self._first_sent_at.items() if bid in still}
            self._resent &= still
            self._last_progress = now
            self._ack_timer.acked(delays)
            self.last_ack = dict(acked)
            self.last_ack_at = time.time()
            self._wake.set()

    async def _handle_command(self, payload: bytes) -> None:
        if self._commands is None:
            return
        result = await self._commands(payload)
        link = self._link
        if link is None:
            log.warning("command result not sent: uplink down")
            return
        with contextlib.suppress(LinkError):
            link.publish(topics.cmd_result(self.gw), result, qos=1)
