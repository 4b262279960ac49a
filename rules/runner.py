"""The rule runner: MQTT in, pure evaluation, state + alarms committed, then acks, then alarms out.

Threading choice (as in ``cloud_ingest``): paho's network loop runs in its own thread
(``loop_start``); ``on_message`` appends to a deque and wakes the asyncio loop once with
``call_soon_threadsafe``; ``on_publish`` hands PUBACKed mids over the same way. Evaluation,
commits (in a worker thread) and acknowledgements run on the one asyncio loop. performance.md
measured asyncio-driven MQTT clients at 2-5x paho's cost per message.

Crash safety: readings arrive QoS 1 with ``manual_ack`` on a persistent session. Each step
(a batch of messages, or a tick) is evaluated, and the new engine state, the alarms and the
transitions are committed in one transaction *before* the messages are PUBACKed. A kill -9
before the commit loses nothing (the broker redelivers; the same sample times give the same
alarm ids); after it, redelivered readings are older than the state's per-series watermark
and are ignored, so no alarm is raised twice. Transitions are an outbox: published QoS 1 on
``citywatch/v1/alarms/{device}`` after the commit and marked once the broker PUBACKs; a
restart republishes unmarked ones (consumers deduplicate on (alarm_id, kind, t)).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from contracts import topics
from contracts.alarms import AlarmTransition
from contracts.config import MqttSettings
from contracts.errors import ContractError, PayloadError
from contracts.paho import SubscriberCallbacks, new_client, sub_options
from contracts.payloads import decode_alarm_ack, decode_events, decode_open_cases, decode_status, decode_telemetry
from rules.config import RulesSettings
from rules.errors import AlarmStoreError
from rules.evaluate import EngineState, GatewayStatus, Input, RuleSet, evaluate
from rules.sharding import owns
from rules.specs import Rule
from rules.store import AlarmStore, StateDelta

log = logging.getLogger(__name__)

_ACK_PREFIX = topics.ALARM_ACK_FILTER[:-1]
_CASE_PREFIX = topics.CASE_OPEN_FILTER[:-1]


@dataclass(slots=True)
class Item:
    topic: str
    payload: bytes
    mid: int
    qos: int
    gen: int  # connection generation: a mid is only meaningful on the connection that delivered it


def decode_inputs(
    topic: str, payload: bytes, received_t: float, max_bytes: int, gateways: Sequence[str] = (),
    *, shard: tuple[int, int] | None = None,
) -> list[Input]:
    """One MQTT message as evaluator inputs; raises PayloadError/ContractError on a bad message."""
    if topic.startswith(_ACK_PREFIX):
        return [decode_alarm_ack(payload)]
    if topic.startswith(_CASE_PREFIX):
        return [decode_open_cases(payload)]
    gw, kind = topics.parse_gw_topic(topic)
    if (gateways and gw not in gateways) or not owns(shard, gw):
        return []
    if kind == "telemetry":
        return list(decode_telemetry(payload, max_bytes).readings)
    if kind == "events":
        return list(decode_events(payload, max_bytes).events)
    if kind == "status":
        st = decode_status(payload, max_bytes)
        return [GatewayStatus(gw, st.state, received_t, tuple(st.devices))]
    return []


class RuleRunner(SubscriberCallbacks):
    def __init__(
        self,
        mqtt_settings: MqttSettings,
        cfg: RulesSettings,
        rules: Sequence[Rule],
        store: AlarmStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.mqtt = mqtt_settings
        self.cfg = cfg
        self.ruleset = RuleSet(rules)
        self.store = store
        self.clock = clock
        self.state = EngineState()
        self._rx: deque[Item] = deque()
        self._puback: deque[int] = deque()
        self._gen = 0
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._pub_wake: asyncio.Event | None = None
        self._client: mqtt.Client | None = None
        self._connected = False
        self._inflight: dict[int, int] = {}  # paho mid -> outbox seq
        self._bad_logged: set[str] = set()
        self.ready_event: asyncio.Event | None = None
        self.steps = 0
        self._fault_delay_s = float(os.environ.get("CITYWATCH_RULES_FAULT_ACK_DELAY_S", "0") or 0)

    # ------------------------------------------------------------ paho thread side

    def _on_connect(
        self, client: mqtt.Client, _ud: Any, flags: mqtt.ConnectFlags, rc: ReasonCode, _p: Properties | None
    ) -> None:
        if rc.is_failure:
            log.error("broker refused the connection: %s", rc)
            return
        self._gen += 1
        opts = sub_options(self.mqtt)
        share = self.cfg.share_group
        subs: list[tuple[str, SubscribeOptions | int]] = []
        if self.cfg.gateways:
            for gw in self.cfg.gateways:
                for t in (topics.telemetry(gw), topics.events(gw)):
                    subs.append((f"$share/{share}/{t}" if share else t, opts))
        else:
            subs += [(topics.gw_filter("telemetry", share), opts), (topics.gw_filter("events", share), opts)]
        subs += [
            (topics.gw_filter("status"), opts),
            (topics.ALARM_ACK_FILTER, opts),
            (topics.CASE_OPEN_FILTER, opts),
        ]
        client.subscribe(subs)  # type: ignore[arg-type]  # homogeneous per protocol
        log.info("connected to %s (session present: %s)", self.mqtt.url, flags.session_present)
        self._connected = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._reconnected)

    def _on_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        payload = msg.payload if isinstance(msg.payload, bytes) else bytes(msg.payload)
        self._rx.append(Item(msg.topic, payload, msg.mid, msg.qos, self._gen))
        if not self._wake_pending:
            self._wake_pending = True
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._wake_up)

    def _on_publish(self, _c: mqtt.Client, _ud: Any, mid: int, rc: ReasonCode, _p: Properties | None) -> None:
        if rc.is_failure:
            log.error("alarm publish refused by the broker: %s", rc)
            return
        self._puback.append(mid)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._pub_wake_up)

    def _wake_up(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _pub_wake_up(self) -> None:
        if self._pub_wake is not None:
            self._pub_wake.set()

    def _reconnected(self) -> None:
        self._inflight.clear()  # republish what was not PUBACKed on the old connection
        self._pub_wake_up()

    def _make_client(self) -> mqtt.Client:
        m = self.mqtt
        client, connect = new_client(m, self.cfg.client_id, manual_ack=True, session_expiry_s=self.cfg.session_expiry_s,
                            receive_maximum=self.cfg.receive_maximum)
        client.reconnect_delay_set(1, 10)
        client.max_inflight_messages_set(100)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.connect_async(**connect)
        return client

    # ------------------------------------------------------------ asyncio side

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._pub_wake = asyncio.Event()
        self.ready_event = self.ready_event or asyncio.Event()
        saved = await asyncio.to_thread(self.store.load_state)
        if saved is not None:
            self.state = EngineState.from_parts(*saved)
            log.info("resumed rule state: %d active alarms", len(self.state.alarms))
        client = self._client = self._make_client()
        client.loop_start()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._process(stop), name="rules.process")
                tg.create_task(self._publish(stop), name="rules.publish")
        finally:
            client.disconnect()
            client.loop_stop()

    async def _process(self, stop: asyncio.Event) -> None:
        assert self._wake is not None
        while not stop.is_set():
            if not self._rx:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.cfg.tick_s)
            self._wake.clear()
            self._wake_pending = False
            items: list[Item] = []
            while self._rx and len(items) < self.cfg.max_batch_messages:
                items.append(self._rx.popleft())
            await self.step(items)

    async def step(self, items: list[Item]) -> list[AlarmTransition]:
        """Evaluate one batch of messages (or a tick), commit, then acknowledge."""
        now = self.clock()
        inputs: list[Input] = []
        for it in items:
            try:
                inputs.extend(decode_inputs(it.topic, it.payload, now, self.cfg.max_payload_bytes, self.cfg.gateways,
                                            shard=self.cfg.shard_spec))
            except (PayloadError, ContractError) as exc:
                reason = getattr(exc, "reason", type(exc).__name__)
                if reason not in self._bad_logged:  # log the first of each kind, not every repeat
                    self._bad_logged.add(reason)
                    log.warning("ignoring undecodable message on %s: %s", it.topic, exc)
        self.state, transitions = evaluate(self.ruleset, self.state, inputs, now)
        if items or transitions or self.state.dirty:
            parts = self.state.take_dirty_parts(self.ruleset.condition_names)
            snapshot = StateDelta(self.state.global_json(), parts)
            while True:
                try:
                    await asyncio.to_thread(self.store.commit, snapshot, transitions)
                    break
                except AlarmStoreError as exc:  # store down: hold the acks, retry; the broker keeps the rest
                    log.error("%s; retrying in 1 s", exc)
                    await asyncio.sleep(1.0)
        if self._fault_delay_s and items:
            await asyncio.sleep(self._fault_delay_s)
        client = self._client
        if client is not None:
            for it in items:
                if it.qos > 0 and it.gen == self._gen:
                    client.ack(it.mid, it.qos)
        self.steps += 1
        if transitions:
            for tr in transitions:
                log.info("alarm %s %s %s %s", tr.kind.value, tr.severity.value, tr.device, tr.rule)
            self._pub_wake_up()
        return transitions

    async def _publish(self, stop: asyncio.Event) -> None:
        from contracts.payloads import encode_alarm

        assert self._pub_wake is not None
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._pub_wake.wait(), 1.0)
            self._pub_wake.clear()
            done: list[int] = []
            while self._puback:
                seq = self._inflight.pop(self._puback.popleft(), None)
                if seq is not None:
                    done.append(seq)
            if done:
                await asyncio.to_thread(self.store.mark_published, done)
            client = self._client
            if client is None or not self._connected:
                continue
            pending = await asyncio.to_thread(self.store.unpublished, 500)
            busy = set(self._inflight.values())
            for seq, tr in pending:
                if seq in busy:
                    continue
                info = client.publish(topics.alarms(tr.device), encode_alarm(tr), qos=1)
                if info.rc == mqtt.MQTT_ERR_SUCCESS:
                    self._inflight[info.mid] = seq
