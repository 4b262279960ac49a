"""Live feed: MQTT in, Server-Sent Events out.

paho is driven from the asyncio loop by its socket callbacks (see :class:`MqttFeed` for
why not ``loop_start``), so messages are decoded and the hub is touched on the loop thread
only. Readings arrive far faster than a wall screen can show, so the
hub coalesces them: the latest value per (device, metric) is flushed at most once per
``flush_s``. Alarm and case events go out immediately. Each subscriber has a bounded queue;
a slow browser loses its oldest events (and is told so with a ``gap`` event), never the
process's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from console.errors import StoreUnavailable
from contracts import payloads, topics
from contracts.config import MqttSettings
from contracts.errors import ContractError, PayloadError
from contracts.paho import new_client

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
    """One paho client: subscribes to alarms, telemetry and case-open; publishes acknowledgements.

    paho is driven from the asyncio loop through its socket callbacks (``add_reader`` /
    ``add_writer`` + ``loop_misc`` once a second) rather than ``loop_start``: paho's own loop
    uses ``select()``, which fails once a descriptor number passes 1024 — and a console holding
    a thousand browser connections (SSE) gets there. Every paho callback therefore runs on the
    loop thread; calls from the handler thread pool (``send_ack``) only queue a packet, and the
    write registration is marshalled onto the loop with ``call_soon_threadsafe``.
    """

    def __init__(self, settings: MqttSettings, hub: Hub,
                 on_case_open: Callable[[payloads.OpenCases], None] | None = None) -> None:
        self._hub = hub
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_case_open = on_case_open
        self._settings = settings
        self._connected = False
        self._sock: Any = None
        self._stopping = False
        client_id = settings.client_id or f"citywatch-console-{int(time.time() * 1000) % 10**9}"
        # a live view needs no session: what happened while it was away is in the stores
        self._client, self._connect_args = new_client(settings, client_id, persistent=False)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_socket_open = self._on_socket_open
        self._client.on_socket_close = self._on_socket_close
        self._client.on_socket_register_write = self._on_socket_register_write
        self._client.on_socket_unregister_write = self._on_socket_unregister_write

    @property
    def connected(self) -> bool:
        return self._connected

    async def run(self, _hub: Hub | None = None) -> None:
        """Connect, keep the session alive and reconnect with backoff until cancelled."""
        loop = self._loop = asyncio.get_running_loop()
        delay_s = 1.0
        failing = False
        try:
            while not self._stopping:
                if self._sock is None:
                    try:
                        # the TCP (and TLS) handshake blocks: do it in a worker thread
                        await asyncio.to_thread(
                            functools.partial(self._client.connect, **self._connect_args))
                        delay_s = 1.0
                    except (OSError, ValueError) as exc:
                        if not failing:
                            log.warning("console live feed: cannot reach %s: %s; retrying", self._settings.url, exc)
                            failing = True
                        await asyncio.sleep(delay_s)
                        delay_s = min(delay_s * 2, 30.0)
                        continue
                    failing = False
                await asyncio.sleep(1.0)
                if self._sock is not None:
                    loop.call_soon(self._client.loop_misc)  # keepalive pings, dead-connection detection
        finally:
            self.stop()

    def stop(self) -> None:
        self._stopping = True
        self._connected = False  # a shutdown is not a lost connection: no warning
        if self._sock is not None:
            self._client.disconnect()
            with contextlib.suppress(Exception):
                self._client.loop_write()  # flush the DISCONNECT; paho closes the socket after it
        self._unwatch()

    # socket callbacks: may fire on a worker thread (connect) or the handler pool (publish) -------
    def _in_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn(*args)
        else:
            loop.call_soon_threadsafe(fn, *args)

    def _watch(self, sock: Any) -> None:
        assert self._loop is not None
        self._sock = sock
        self._loop.add_reader(sock, self._client.loop_read)

    def _unwatch(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None and self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(Exception):
                self._loop.remove_reader(sock)
                self._loop.remove_writer(sock)

    def _on_socket_open(self, _c: mqtt.Client, _ud: Any, sock: Any) -> None:
        self._in_loop(self._watch, sock)

    def _on_socket_close(self, _c: mqtt.Client, _ud: Any, _sock: Any) -> None:
        self._in_loop(self._unwatch)

    def _on_socket_register_write(self, _c: mqtt.Client, _ud: Any, sock: Any) -> None:
        def add() -> None:
            if self._loop is not None and self._sock is sock:
                self._loop.add_writer(sock, self._client.loop_write)

        self._in_loop(add)

    def _on_socket_unregister_write(self, _c: mqtt.Client, _ud: Any, sock: Any) -> None:
        def remove() -> None:
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_writer(sock)

        self._in_loop(remove)

    # paho callbacks (loop thread) ----------------------------------------------
    def _on_connect(self, client: mqtt.Client, _ud: Any, _flags: Any, reason: Any, _props: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("console live feed: broker refused connection: %s", reason)
            return
        if not self._connected:
            log.info("console live feed: connected to %s", self._settings.url)
        self._connected = True
        client.subscribe([(topics.ALARMS_FILTER, 1), (topics.gw_filter("telemetry"), 0),
                          (topics.CASE_OPEN_FILTER, 1)])

    def _on_disconnect(self, _c: mqtt.Client, _ud: Any, _flags: Any, reason: Any, _props: Any = None) -> None:
        if self._connected:
            log.warning("console live feed: disconnected (%s); reconnecting", reason)
        self._connected = False

    def _on_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        self.handle(msg.topic, bytes(msg.payload))

    # loop thread --------------------------------------------------------------
    def handle(self, topic: str, payload: bytes) -> None:
        try:
            if topic.startswith(topics.ROOT + "/alarms/"):
                self._hub.publish(alarm_event(payloads.decode_alarm(payload)))
            elif topic.startswith(topics.ROOT + "/case-open/"):
                if payload:
                    oc = payloads.decode_open_cases(payload)
                    if self._on_case_open is not None:
                        self._on_case_open(oc)
            else:
                topics.parse_gw_topic(topic)
                batch = payloads.decode_telemetry(payload, max_bytes=1 << 20)
                for r in batch.readings:
                    self._hub.reading(r.device, r.metric, ts=r.ts, value=r.value, unit=r.unit, quality=int(r.quality))
        except (PayloadError, ContractError) as exc:
            log.debug("console live feed: ignoring %s: %s", topic, exc)

    def send_ack(self, alarm_id: str, device: str, actor: str, t: float, note: str, *, action: str = "ack") -> None:
        if not self._connected:
            raise StoreUnavailable("not connected to the broker; acknowledgement not sent")
        ack = payloads.AlarmAck(alarm_id, device, actor, t, note, action)
        info = self._client.publish(topics.alarm_ack(device), payloads.encode_alarm_ack(ack), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise StoreUnavailable(f"acknowledgement not sent: {mqtt.error_string(info.rc)}")
