"""Live feed: MQTT in, Server-Sent Events out.

The broker connection is the project's asyncio MQTT adapter (see :class:`MqttFeed` for why
not paho's thread), so messages are decoded and the hub is touched on the loop thread
only. Readings arrive far faster than a wall screen can show, so the
hub coalesces them: the latest value per (device, metric) is flushed at most once per
``flush_s``. Alarm and case events go out immediately. Each subscriber has a bounded queue;
a slow browser loses its oldest events (and is told so with a ``gap`` event), never the
process's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from console.errors import StoreUnavailable
from contracts import payloads, topics
from contracts.config import MqttSettings
from contracts.errors import ContractError, PayloadError
from mqttlink.aio import MqttLink, open_link
from mqttlink.backoff import backoff_delay
from mqttlink.errors import LinkError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LiveEvent:
    kind: str  # reading | alarm | case | gap
    data: dict[str, Any]
    unit: str | None = None  # for case events: only principals who may see this unit get it

    def sse(self) -> bytes:
        return b"event: " + self.kind.encode() + b"\ndata: " + orjson.dumps(self.data) + b"\n\n"


@dataclass(eq=False)
class Subscriber:
    queue: asyncio.Queue[LiveEvent]
    dropped: int = 0


@dataclass
class Hub:
    queue_max: int = 1000
    flush_s: float = 1.0
    _subs: set[Subscriber] = field(default_factory=set)
    _pending: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    published: int = 0

    def subscribe(self) -> Subscriber:
        sub = Subscriber(asyncio.Queue(self.queue_max))
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(self, event: LiveEvent) -> None:
        self.published += 1
        for sub in self._subs:
            if sub.queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    sub.queue.get_nowait()
                sub.dropped += 1
            sub.queue.put_nowait(event)

    def reading(self, device: str, metric: str, *, ts: float, value: float, unit: str, quality: int) -> None:
        self._pending[(device, metric)] = {"device": device, "metric": metric, "ts": ts, "value": value,
                                           "unit": unit, "q": quality}

    def flush(self) -> int:
        pending, self._pending = self._pending, {}
        if pending:
            self.publish(LiveEvent("reading", {"readings": list(pending.values())}))
        return len(pending)

    async def run_flusher(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            self.flush()


async def stream(hub: Hub, sub: Subscriber, allow: Callable[[LiveEvent], bool], heartbeat_s: float = 15.0,
                 is_disconnected: Callable[[], Any] | None = None) -> AsyncIterator[bytes]:
    """SSE bytes for one subscriber: events it may see, comments as heartbeats, ``gap`` on loss."""
    try:
        yield b"retry: 3000\n: connected\n\n"
        seen_drops = 0
        while True:
            try:
                event = await asyncio.wait_for(sub.queue.get(), heartbeat_s)
            except TimeoutError:
                if is_disconnected is not None and await is_disconnected():
                    return
                yield b": keepalive\n\n"
                continue
            if sub.dropped != seen_drops:
                seen_drops = sub.dropped
                yield LiveEvent("gap", {"dropped": seen_drops}).sse()
            if allow(event):
                yield event.sse()
    finally:
        hub.unsubscribe(sub)


def alarm_event(tr: Any) -> LiveEvent:
    return LiveEvent("alarm", {
        "alarm_id": tr.alarm_id, "device": tr.device, "rule": tr.rule, "kind": str(tr.kind),
        "severity": str(tr.severity), "t": tr.t, "value": tr.value, "actor": tr.actor,
    })


def case_open_refresher(hub: Hub, get_case: Callable[[str], Any],
                        to_json: Callable[[Any], dict[str, Any]]) -> Callable[[payloads.OpenCases], None]:
    """On a bridge ``case-open`` message, re-read those cases and publish them as ``case`` events.

    The bridge runs in another process; its retained per-device open-case set is the cheapest
    signal that a case was opened, attached to or closed there. The store reads run in a
    worker thread so the loop never waits on the database.
    """

    def on_case_open(oc: payloads.OpenCases) -> None:
        async def refresh() -> None:
            for case_id in sorted(set(oc.cases.values())):
                view = await asyncio.to_thread(get_case, case_id)
                if view is not None:
                    hub.publish(LiveEvent("case", to_json(view), unit=getattr(view, "unit", None)))

        task = asyncio.get_running_loop().create_task(refresh())
        _refreshes.add(task)
        task.add_done_callback(_refreshes.discard)

    return on_case_open


_refreshes: set[asyncio.Task[None]] = set()  # keep references: the loop holds tasks only weakly


class MqttFeed:
    """The live feed's broker connection: subscribes to alarms, telemetry, case-open and command
    results; publishes acks and lamp commands.

    It uses the asyncio adapter (:mod:`mqttlink.aio`), not paho's own thread: paho's loop uses
    ``select()``, which fails once a descriptor number passes 1024 — and a console holding a
    thousand browser connections (SSE) gets there. Every message is handled on the loop thread;
    ``send_ack`` from the handler thread pool only queues a packet. No session: a live view finds
    what happened while it was away in the stores. Reconnects use the project's jittered backoff.
    """

    def __init__(self, settings: MqttSettings, hub: Hub, *,
                 on_case_open: Callable[[payloads.OpenCases], None] | None = None,
                 on_cmd_result: Callable[[payloads.CommandResult], None] | None = None,
                 reconnect_min_s: float = 1.0, reconnect_max_s: float = 30.0) -> None:
        self._hub = hub
        self._on_cmd_result = on_cmd_result
        self._on_case_open = on_case_open
        self._settings = settings
        self._client_id = settings.client_id or f"citywatch-console-{int(time.time() * 1000) % 10**9}"
        self._backoff = (reconnect_min_s, reconnect_max_s)
        self._rng = random.Random()
        self._link: MqttLink | None = None
        self._stopping = False

    @property
    def connected(self) -> bool:
        link = self._link
        return link is not None and not link.closed.is_set()

    @property
    def fileno(self) -> int | None:
        """The connection's socket descriptor (None while disconnected)."""
        return self._link.fileno if self._link is not None else None

    async def run(self, _hub: Hub | None = None) -> None:
        """Connect, subscribe and reconnect with backoff until cancelled or stopped."""
        attempt = 0
        try:
            while not self._stopping:
                try:
                    link = await open_link(self._settings, self._client_id, will=None, on_message=self.handle)
                except LinkError as exc:
                    if attempt == 0:
                        log.warning("console live feed: cannot reach %s: %s; retrying", self._settings.url, exc)
                    await asyncio.sleep(backoff_delay(attempt, *self._backoff, self._rng))
                    attempt += 1
                    continue
                attempt = 0
                if self._stopping:  # stopped while connecting
                    await link.close()
                    break
                self._link = link
                log.info("console live feed: connected to %s (MQTT %s)", self._settings.url, link.protocol)
                try:
                    subs = [(topics.ALARMS_FILTER, 1), (topics.gw_filter("telemetry"), 0), (topics.CASE_OPEN_FILTER, 1)]
                    if self._on_cmd_result is not None:
                        subs.append((topics.gw_filter("cmd/result"), 1))
                    link.subscribe(subs)
                    await link.closed.wait()
                except LinkError:
                    pass
                finally:
                    self._link = None
                    await link.close()
                if self._stopping:
                    break
                log.warning("console live feed: disconnected (%s); reconnecting", link.close_reason)
                await asyncio.sleep(backoff_delay(0, *self._backoff, self._rng))
        finally:
            self.stop()

    def stop(self) -> None:
        """A shutdown is not a lost connection: disconnect without a warning."""
        self._stopping = True
        link = self._link
        if link is not None:
            link.disconnect()

    def handle(self, topic: str, payload: bytes) -> None:
        try:
            if topic.startswith(topics.ROOT + "/alarms/"):
                self._hub.publish(alarm_event(payloads.decode_alarm(payload)))
            elif topic.startswith(topics.ROOT + "/case-open/"):
                if payload:
                    oc = payloads.decode_open_cases(payload)
                    if self._on_case_open is not None:
                        self._on_case_open(oc)
            elif topic.endswith("/cmd/result"):
                topics.parse_gw_topic(topic)
                if self._on_cmd_result is not None:
                    self._on_cmd_result(payloads.decode_command_result(payload))
            else:
                topics.parse_gw_topic(topic)
                batch = payloads.decode_telemetry(payload, max_bytes=1 << 20)
                for r in batch.readings:
                    self._hub.reading(r.device, r.metric, ts=r.ts, value=r.value, unit=r.unit, quality=int(r.quality))
        except (PayloadError, ContractError) as exc:
            log.debug("console live feed: ignoring %s: %s", topic, exc)

    def send_ack(self, alarm_id: str, device: str, actor: str, t: float, note: str, *, action: str = "ack") -> None:
        link = self._link
        if link is None or link.closed.is_set():
            raise StoreUnavailable("not connected to the broker; acknowledgement not sent")
        try:
            link.publish(topics.alarm_ack(device),
                         payloads.encode_alarm_ack(payloads.AlarmAck(alarm_id, device, actor, t, note, action)), qos=1)
        except LinkError as exc:
            raise StoreUnavailable(f"acknowledgement not sent: {exc}") from exc

    def send_command(self, gateway: str, cmd: payloads.Command) -> None:
        """Publish a command to a gateway's agent (QoS 1); its result comes back on ``.../cmd/result``."""
        link = self._link
        if link is None or link.closed.is_set():
            raise StoreUnavailable("not connected to the broker; command not sent")
        try:
            link.publish(topics.cmd(gateway), payloads.encode_command(cmd), qos=1)
        except LinkError as exc:
            raise StoreUnavailable(f"command not sent: {exc}") from exc
