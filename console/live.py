"""Live feed: MQTT in, Server-Sent Events out.

paho runs its network loop in its own thread (``loop_start``); every message is handed to
the asyncio loop with ``call_soon_threadsafe`` and decoded there, so the hub is only ever
touched from the loop thread. Readings arrive far faster than a wall screen can show, so the
hub coalesces them: the latest value per (device, metric) is flushed at most once per
``flush_s``. Alarm and case events go out immediately. Each subscriber has a bounded queue;
a slow browser loses its oldest events (and is told so with a ``gap`` event), never the
process's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from console.errors import StoreUnavailable
from contracts import payloads, topics
from contracts.config import MqttSettings
from contracts.errors import ContractError, PayloadError

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


class MqttFeed:
    """One paho client: subscribes to alarms, telemetry and case-open; publishes acknowledgements."""

    def __init__(self, settings: MqttSettings, hub: Hub,
                 on_case_open: Callable[[payloads.OpenCases], None] | None = None) -> None:
        self._hub = hub
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_case_open = on_case_open
        self._settings = settings
        self._connected = False
        client_id = settings.client_id or f"citywatch-console-{int(time.time() * 1000) % 10**9}"
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if settings.username:
            self._client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            self._client.tls_set(ca_certs=settings.ca_file, certfile=settings.cert_file, keyfile=settings.key_file)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(1, 30)

    @property
    def connected(self) -> bool:
        return self._connected

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._client.connect_async(self._settings.host, self._settings.port, self._settings.keepalive_s)
        self._client.loop_start()

    def stop(self) -> None:
        self._connected = False  # a shutdown is not a lost connection: no warning
        self._client.disconnect()
        self._client.loop_stop()

    # paho thread ------------------------------------------------------------
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
            log.warning("console live feed: disconnected (%s); paho reconnects", reason)
        self._connected = False

    def _on_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.handle, msg.topic, bytes(msg.payload))

    async def run(self, _hub: Hub | None = None) -> None:
        """Run until cancelled (the app's lifespan task): start paho, stop it on the way out."""
        self.start(asyncio.get_running_loop())
        try:
            await asyncio.Event().wait()
        finally:
            self.stop()

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

    def send_ack(self, alarm_id: str, device: str, actor: str, t: float, note: str) -> None:
        if not self._connected:
            raise StoreUnavailable("not connected to the broker; acknowledgement not sent")
        info = self._client.publish(
            topics.alarm_ack(device), payloads.encode_alarm_ack(payloads.AlarmAck(alarm_id, device, actor, t, note)),
            qos=1,
        )
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise StoreUnavailable(f"acknowledgement not sent: {mqtt.error_string(info.rc)}")
