"""The rule runner: MQTT in, pure evaluation, state + alarms committed, then acks, then alarms out.

Transport (as in ``cloud_ingest``): a :class:`mqttlink.source.MessageSource`, by default
:class:`mqttlink.threaded.ThreadedSource` (paho's network thread); its delivery callback
appends to a deque and wakes the asyncio loop once with ``call_soon_threadsafe``; PUBACKed
publish ids arrive on the loop. Evaluation, commits (in a worker thread) and acknowledgements
run on the one asyncio loop.

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
import gc
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from cloud_ingest.metrics import serve_metrics
from contracts import topics
from contracts.alarms import AlarmTransition
from contracts.config import MqttSettings
from contracts.errors import ContractError, PayloadError
from contracts.payloads import (
    decode_alarm_ack,
    decode_events,
    decode_open_cases,
    decode_status,
    decode_telemetry,
    encode_alarm,
)
from contracts.reading import Reading
from mqttlink.source import Delivery, MessageSource
from mqttlink.threaded import ThreadedSource
from rules.config import RulesSettings
from rules.errors import AlarmStoreError, RulesError
from rules.evaluate import LOG_ENTRIES_PER_DEVICE, EngineState, GatewayStatus, Input, RuleSet, evaluate
from rules.metrics import RulesMetrics
from rules.sharding import owns
from rules.specs import Rule
from rules.store import AlarmStore, StateDelta

log = logging.getLogger(__name__)

_ACK_PREFIX = topics.ALARM_ACK_FILTER[:-1]
_CASE_PREFIX = topics.CASE_OPEN_FILTER[:-1]


def settle_heap(full: bool = False) -> None:
    """Collect the young generations, then freeze every survivor out of the cyclic collector's reach.

    Why: the engine state is millions of small long-lived containers (100 000 devices: ~1 GB), and
    CPython's automatic full collection re-traverses all of them each time the old generation has
    grown by a quarter, which it keeps doing while new devices report. Each such pass found nothing
    to free and stopped the step for 1-2 s on a quiet box (more on a loaded one), and every reading
    queued behind it waited. Frozen objects are still freed by reference counting; only a reference
    cycle that becomes garbage after being frozen is never reclaimed (the state holds no cycles).
    ``full`` (at start, after loading the state) runs one complete collection first.
    """
    gc.collect(2 if full else 1)
    gc.freeze()


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic cyclic garbage collection inside (see :func:`settle_heap` for why)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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


class RuleRunner:
    """One rule runner process. ``source`` replaces the MQTT subscription (another transport);
    ``fault_ack_delay_s`` widens the commit-to-acknowledge window for kill tests (0 in production)."""

    def __init__(
        self,
        mqtt_settings: MqttSettings,
        cfg: RulesSettings,
        rules: Sequence[Rule],
        store: AlarmStore,
        clock: Callable[[], float] = time.time,
        *,
        source: MessageSource | None = None,
        fault_ack_delay_s: float = 0.0,
    ) -> None:
        self.mqtt = mqtt_settings
        self.cfg = cfg
        self.ruleset = RuleSet(rules)
        self.store = store
        self.clock = clock
        self.state = EngineState()
        self._rx: deque[Delivery] = deque()
        self._puback: deque[int] = deque()
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._pub_wake: asyncio.Event | None = None
        self._source = source
        self._inflight: dict[int, int] = {}  # paho mid -> outbox seq
        self._bad_logged: set[str] = set()
        self.ready_event: asyncio.Event | None = None
        self.steps = 0
        self._fault_delay_s = fault_ack_delay_s
        self.metrics = RulesMetrics()
        self.metrics_port: int | None = None  # bound port of /metrics once running (config may ask for 0)
        self._newest_t: float | None = None  # newest sample time evaluated in the current step
        self._store_up = True

    # ------------------------------------------------------------ transport callbacks

    def _filters(self) -> list[str]:
        share = self.cfg.share_group
        subs: list[str] = []
        if self.cfg.gateways:
            for gw in self.cfg.gateways:
                for t in (topics.telemetry(gw), topics.events(gw)):
                    subs.append(f"$share/{share}/{t}" if share else t)
        else:
            subs += [topics.gw_filter("telemetry", share), topics.gw_filter("events", share)]
        return [*subs, topics.gw_filter("status"), topics.ALARM_ACK_FILTER, topics.CASE_OPEN_FILTER]

    def _on_delivery(self, d: Delivery) -> None:  # transport thread
        self._rx.append(d)
        if not self._wake_pending:
            self._wake_pending = True
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._wake_up)

    def _on_published(self, pub_id: int) -> None:
        self._puback.append(pub_id)
        self._pub_wake_up()

    def _wake_up(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _pub_wake_up(self) -> None:
        if self._pub_wake is not None:
            self._pub_wake.set()

    def _reconnected(self) -> None:
        self._inflight.clear()  # republish what was not PUBACKed on the old connection
        self._pub_wake_up()

    # ------------------------------------------------------------ asyncio side

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._pub_wake = asyncio.Event()
        self.ready_event = self.ready_event or asyncio.Event()
        server = None
        if self.cfg.metrics_port is not None:
            try:
                server = await serve_metrics(self.metrics, self.cfg.metrics_host, self.cfg.metrics_port)
            except OSError as exc:
                where = f"{self.cfg.metrics_host}:{self.cfg.metrics_port}"
                raise RulesError(f"cannot serve metrics on {where}: {exc}") from exc
            self.metrics_port = server.sockets[0].getsockname()[1]
        with collector_paused():  # millions of long-lived objects: collections would find nothing (2.4x slower)
            saved = await asyncio.to_thread(self.store.load_state)
            if saved is not None:
                self.state = EngineState.from_parts(*saved)
                log.info("resumed rule state: %d active alarms", len(self.state.alarms))
            del saved
        settle_heap(full=True)
        if self._source is None:
            self._source = ThreadedSource(
                self.mqtt, self.cfg.client_id, self._filters(), session_expiry_s=self.cfg.session_expiry_s,
                receive_maximum=self.cfg.receive_maximum, max_inflight=100, ready=self.ready_event, name="rules")
        else:
            self.ready_event = self._source.ready
        source = self._source
        source.start(self._on_delivery, on_published=self._on_published, on_connected=self._reconnected)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._process(stop), name="rules.process")
                tg.create_task(self._publish(stop), name="rules.publish")
        finally:
            source.stop()
            if server is not None:
                server.close()

    async def _process(self, stop: asyncio.Event) -> None:
        assert self._wake is not None
        while not stop.is_set():
            if not self._rx:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.cfg.tick_s)
            self._wake.clear()
            self._wake_pending = False
            items: list[Delivery] = []
            while self._rx and len(items) < self.cfg.receive_maximum:  # all that is unacknowledged, at most
                items.append(self._rx.popleft())
            await self.step(items)

    async def step(self, items: list[Delivery]) -> list[AlarmTransition]:
        """Evaluate messages (or a tick) in chunks of ``max_batch_messages``, commit once, then acknowledge.

        One checkpoint for the whole backlog: a device that reported in several chunks is written once,
        so the state write follows the devices that changed, not the readings. No automatic garbage
        collection runs inside a step (a full pass over a large state stalls it for seconds); the step
        ends with :func:`settle_heap` instead.
        """
        with collector_paused():
            return await self._step(items)

    async def _step(self, items: list[Delivery]) -> list[AlarmTransition]:
        t0 = time.perf_counter()
        chunk = self.cfg.max_batch_messages
        transitions: list[AlarmTransition] = []
        self._newest_t = None
        for i in range(0, max(len(items), 1), chunk):
            if i:
                await asyncio.sleep(0)  # let acknowledgements and publishing run between chunks
            transitions += self._evaluate(items[i : i + chunk])
        st = self.state
        if items or transitions or st.dirty or st.series_dirty:
            max_log = LOG_ENTRIES_PER_DEVICE * max(len(st.registry), 1000)
            parts, series, drop = st.take_checkpoint_sliced(self.ruleset.condition_names, max_log)
            snapshot = StateDelta(st.global_json(), parts, series, compact=False, drop_log_through=drop)
            m = self.metrics
            while True:
                try:
                    await asyncio.to_thread(self.store.commit, snapshot, transitions)
                    break
                except AlarmStoreError as exc:  # store down: hold the acks, retry; the broker keeps the rest
                    if self._store_up:  # log the outage once, not every retry
                        log.error("%s; retrying every 1 s", exc)
                    self._store_up = False
                    m.store_up.set(0)
                    await asyncio.sleep(1.0)
            if not self._store_up:
                log.info("rule store back: committed")
                self._store_up = True
                m.store_up.set(1)
            # committed: garbage now, so settle_heap neither walks nor freezes them (a compaction's parts are
            # hundreds of thousands of containers)
            del parts, series, snapshot
        if self._fault_delay_s and items:
            await asyncio.sleep(self._fault_delay_s)
        source = self._source
        if source is not None:
            for it in items:
                source.ack(it)
        self.steps += 1
        self._observe(t0, transitions)
        settle_heap()  # what this step kept is long-lived: no full collection pass re-traverses it
        if transitions:
            for tr in transitions:
                log.info("alarm %s %s %s %s", tr.kind.value, tr.severity.value, tr.device, tr.rule)
            self._pub_wake_up()
        return transitions

    def _evaluate(self, items: list[Delivery]) -> list[AlarmTransition]:
        """Decode and evaluate one chunk of messages (an empty one is a tick); the state changes in place."""
        now = self.clock()
        inputs: list[Input] = []
        bad = 0
        for it in items:
            try:
                inputs.extend(decode_inputs(it.topic, it.payload, now, self.cfg.max_payload_bytes, self.cfg.gateways,
                                            shard=self.cfg.shard_spec))
            except (PayloadError, ContractError) as exc:
                bad += 1
                reason = getattr(exc, "reason", type(exc).__name__)
                if reason not in self._bad_logged:  # log the first of each kind, not every repeat
                    self._bad_logged.add(reason)
                    log.warning("ignoring undecodable message on %s: %s", it.topic, exc)
        self.state, transitions = evaluate(self.ruleset, self.state, inputs, now)
        m = self.metrics
        if bad:
            m.messages.labels("undecodable").inc(bad)
        if len(items) > bad:
            m.messages.labels("evaluated").inc(len(items) - bad)
        readings = [i.ts for i in inputs if type(i) is Reading]
        if readings:
            m.readings.inc(len(readings))
            newest = max(readings)
            self._newest_t = newest if self._newest_t is None else max(newest, self._newest_t)
        return transitions

    def _observe(self, t0: float, transitions: list[AlarmTransition]) -> None:
        """Per-step figures for /metrics (once per step, not per reading)."""
        m = self.metrics
        m.step_seconds.observe(time.perf_counter() - t0)
        for tr in transitions:
            m.transitions.labels(tr.kind.value).inc()
        if self._newest_t is not None:
            m.lag.set(self.clock() - self._newest_t)
        m.devices.set(len(self.state.registry))
        m.active_alarms.set(len(self.state.alarms))

    async def _publish(self, stop: asyncio.Event) -> None:
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
            source = self._source
            if source is None or not source.connected:
                continue
            pending = await asyncio.to_thread(self.store.unpublished, 500)
            busy = set(self._inflight.values())
            for seq, tr in pending:
                if seq in busy:
                    continue
                pub_id = source.publish(topics.alarms(tr.device), encode_alarm(tr))
                if pub_id is not None:
                    self._inflight[pub_id] = seq
