"""The ingester: MQTT in, micro-batches committed, then acknowledged, then the ack watermark out.

Transport: a :class:`mqttlink.source.MessageSource` (by default :class:`mqttlink.threaded.
ThreadedSource`, paho's network thread, chosen for throughput); its delivery callback only
appends to a deque and, when the deque was empty, wakes the asyncio loop once with
``call_soon_threadsafe``. Everything else (validation, batching, acks, watermarks, metrics)
runs on the one asyncio loop; store calls run in worker threads via ``asyncio.to_thread`` so
decoding the next batch overlaps the database commit of the current one.

Delivery: QoS 1 with ``manual_ack``; a message is PUBACKed only after the transaction holding
its readings (or its dead letter) has committed, in arrival order. The MQTT 5 Receive Maximum
caps the messages the broker sends us without an ack, so while the store is down the ingester
holds at most ``receive_maximum`` messages and the broker queues the rest. The session is
persistent (``clean_start=False``), so a crash redelivers everything not yet acknowledged;
``ON CONFLICT DO NOTHING`` turns the redelivery into a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cloud_ingest.config import IngestSettings
from cloud_ingest.errors import IngestError, StoreError, StoreUnavailable
from cloud_ingest.metrics import IngestMetrics, serve_metrics
from cloud_ingest.store.base import DeadLetterIn, SeqMark, StatusUpdate, Store, WriteBatch, WriteResult
from cloud_ingest.validate import Accepted, Limits, Rejected, classify
from cloud_ingest.watermark import AckTracker, Key
from contracts import topics
from contracts.config import MqttSettings
from contracts.payloads import encode_ack
from mqttlink.source import Delivery, MessageSource
from mqttlink.threaded import ThreadedSource

log = logging.getLogger(__name__)


class _GiveUp(IngestError):
    """Stop requested while commits cannot succeed: exit without acknowledging (nothing is lost)."""


@dataclass(slots=True)
class Item:
    """One received message, as handed from the transport's thread to the loop."""

    topic: str
    payload: bytes
    delivery: Delivery  # acknowledged through the source once committed
    identity: str | None
    received: float


@dataclass(slots=True)
class Pending:
    """A micro-batch being built: its messages and the merged write."""

    items: list[Item] = field(default_factory=list)
    batch: WriteBatch = field(default_factory=WriteBatch)
    n_readings: int = 0
    started: float = 0.0  # monotonic time of the first message
    dead: list[tuple[str | None, str]] = field(default_factory=list)  # (gw, reason) per dead letter
    t_max: float | None = None  # newest sample time, for the lag metric


def add_to_batch(out: WriteBatch, item: Item, verdict: Accepted | Rejected) -> int:
    """Merge one classified message into ``out``; returns the readings added."""
    if isinstance(verdict, Rejected):
        out.dead_letters.append(
            DeadLetterIn(item.received, item.topic, verdict.gw, verdict.reason, verdict.detail, item.payload)
        )
        if verdict.seq is not None and verdict.gw is not None:
            out.seqs.append(SeqMark(verdict.gw, verdict.seq[0], verdict.seq[1], verdict.kind, 0))
        return 0
    if verdict.status is not None:
        out.statuses.append(StatusUpdate(verdict.gw, verdict.status, item.received))
        return 0
    if verdict.rows is not None:
        rb = verdict.rows
        out.rows.extend(rb.rows)
        out.seqs.append(SeqMark(rb.gw, rb.boot, rb.seq, "telemetry", len(rb.rows)))
        return len(rb.rows)
    b = verdict.batch
    assert b is not None
    out.events.extend((b.gw, e) for e in b.events)
    out.seqs.append(SeqMark(b.gw, b.boot, b.seq, "events", len(b.events)))
    return 0


class Ingester:
    """One ingester process. ``await Ingester(...).run(stop)`` until ``stop`` is set.

    ``source`` replaces the MQTT subscription (another transport); ``fault_ack_delay_s`` widens
    the commit-to-acknowledge window so fault tests can kill the process between the two
    (docs/reliability.md I1 "after_commit_before_ack"); it is 0 in production.
    """

    def __init__(
        self,
        mqtt_settings: MqttSettings,
        settings: IngestSettings,
        store: Store,
        *,
        metrics: IngestMetrics | None = None,
        clock: Callable[[], float] = time.time,
        extra_writers: Sequence[Store] = (),
        source: MessageSource | None = None,
        fault_ack_delay_s: float = 0.0,
    ) -> None:
        self.mqtt = mqtt_settings
        self.cfg = settings
        self.store = store
        #: one store (connection) per concurrent commit; the first also serves watermark queries
        self.stores: list[Store] = [store, *extra_writers]
        self.metrics = metrics or IngestMetrics()
        self.clock = clock
        self.limits: Limits = settings.limits()
        self.tracker = AckTracker(settings.first_seq, settings.gap_grace_s, settings.ack_boots)
        self._rx: deque[Item] = deque()
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._source = source
        self._received = 0  # written on the transport's thread only
        self._acked = 0  # written on the loop only
        self._store_down_since: float | None = None
        self._acks_sent: dict[str, bytes] = {}
        self._dl_logged: set[tuple[str | None, str]] = set()
        self._requeried: dict[Key, float] = {}
        self.committed_batches = 0
        self.ready_event: asyncio.Event | None = None  # set once subscribed (tests wait on it)
        self.metrics_port: int | None = None
        self._stop: asyncio.Event | None = None
        self._fault_ack_delay_s = fault_ack_delay_s

    # ------------------------------------------------------------ transport thread side

    def _on_delivery(self, d: Delivery) -> None:
        identity = None
        if self.cfg.identity_property is not None:
            for k, v in d.user_properties:
                if k == self.cfg.identity_property:
                    identity = v
        self._rx.append(Item(d.topic, d.payload, d, identity, self.clock()))
        self._received += 1
        self.metrics.unacked.inc()
        if not self._wake_pending:
            self._wake_pending = True
            loop = self._loop
            if loop is not None:
                loop.call_soon_threadsafe(self._wake_up)

    def _wake_up(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _on_source_connected(self) -> None:
        """A (re)connection of the source; a subclass that must re-send state on it overrides this."""

    def _mqtt_source(self, ready: asyncio.Event) -> ThreadedSource:
        share = self.cfg.share_group
        filters = [topics.gw_filter("telemetry", share), topics.gw_filter("events", share), topics.gw_filter("status")]
        return ThreadedSource(self.mqtt, self.cfg.client_id, filters, session_expiry_s=self.cfg.session_expiry_s,
                              receive_maximum=self.cfg.receive_maximum, ready=ready, name="ingest")

    # ------------------------------------------------------------ asyncio side

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self.ready_event = self.ready_event or asyncio.Event()
        server = None
        if self.cfg.metrics_port is not None:
            try:
                server = await serve_metrics(self.metrics, self.cfg.metrics_host, self.cfg.metrics_port)
            except OSError as exc:
                raise IngestError(
                    f"cannot serve metrics on {self.cfg.metrics_host}:{self.cfg.metrics_port}: {exc}"
                ) from exc
            self.metrics_port = server.sockets[0].getsockname()[1]
        if self._source is None:
            self._source = self._mqtt_source(self.ready_event)
        else:
            self.ready_event = self._source.ready
        source = self._source
        source.start(self._on_delivery, on_connected=self._on_source_connected)
        ready: asyncio.Queue[Pending | None] = asyncio.Queue(maxsize=1)
        self._stop = stop
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._collect(ready, stop), name="ingest.collect")
                tg.create_task(self._commit_loop(ready), name="ingest.commit")
                tg.create_task(self._gap_timer(stop), name="ingest.gaps")
        except* _GiveUp as eg:
            log.warning("%s", eg.exceptions[0])
        finally:
            source.stop()
            if server is not None:
                server.close()

    async def _collect(self, ready: asyncio.Queue[Pending | None], stop: asyncio.Event) -> None:
        assert self._wake is not None
        cfg = self.cfg
        linger = cfg.linger_ms / 1000.0
        pending = Pending()
        while True:
            if not self._rx:
                timeout = 0.2
                if pending.items:
                    timeout = max(0.0, min(timeout, pending.started + linger - time.monotonic()))
                if timeout > 0 and not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            self._wake_pending = False
            while self._rx:
                item = self._rx.popleft()
                verdict = classify(item.topic, item.payload, item.received, self.limits, item.identity)
                if not pending.items:
                    pending.started = time.monotonic()
                pending.items.append(item)
                pending.n_readings += add_to_batch(pending.batch, item, verdict)
                if isinstance(verdict, Rejected):
                    pending.dead.append((verdict.gw, verdict.reason))
                elif verdict.rows is not None and verdict.rows.rows:
                    t = verdict.rows.t_max
                    pending.t_max = t if pending.t_max is None else max(pending.t_max, t)
                self.metrics.messages.labels(verdict.kind or "unknown").inc()
                if pending.n_readings >= cfg.batch_max_readings or len(pending.items) >= cfg.batch_max_messages:
                    await ready.put(pending)
                    pending = Pending()
            if pending.items and time.monotonic() - pending.started >= linger:
                await ready.put(pending)
                pending = Pending()
            if stop.is_set() and not self._rx:
                if pending.items:
                    await ready.put(pending)
                await ready.put(None)
                return

    async def _commit_loop(self, ready: asyncio.Queue[Pending | None]) -> None:
        """Dispatch batches to the free writers; a separate task acknowledges them in arrival order.

        With several writers (``ingest.writers``, one store connection each) consecutive batches
        commit concurrently, so the database can use more than one core; acknowledgements and
        watermarks still follow arrival order, because MQTT wants PUBACKs in order and a batch
        must never be acknowledged before an earlier one is committed.
        """
        free: asyncio.Queue[Store] = asyncio.Queue()
        for st in self.stores:
            free.put_nowait(st)
        inflight: asyncio.Queue[tuple[Pending, asyncio.Task[Store]] | None] = asyncio.Queue(maxsize=len(self.stores))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._ack_in_order(inflight), name="ingest.ack")
            while True:
                p = await ready.get()
                if p is None:
                    await inflight.put(None)
                    return
                st = await free.get()
                task = tg.create_task(self._commit_on(st, p, free), name="ingest.write")
                await inflight.put((p, task))

    async def _commit_on(self, st: Store, p: Pending, free: asyncio.Queue[Store]) -> Store:
        try:
            await self._commit(p, st)
        finally:
            free.put_nowait(st)
        return st

    async def _ack_in_order(self, inflight: asyncio.Queue[tuple[Pending, asyncio.Task[Store]] | None]) -> None:
        while True:
            entry = await inflight.get()
            if entry is None:
                return
            p, task = entry
            st = await task
            if self._fault_ack_delay_s:
                await asyncio.sleep(self._fault_ack_delay_s)
            # the watermark goes out before the PUBACKs, on the same connection: a kill between the two
            # leaves the messages unacknowledged, so the broker redelivers them and the next run re-publishes
            # the watermark (the other order could lose the watermark with nothing left to redeliver)
            await self._advance_watermarks(p.batch.seqs, st)
            self._ack(p.items)

    async def _commit(self, p: Pending, st: Store) -> WriteResult:
        delay = self.cfg.retry_initial_s
        while True:
            t0 = time.monotonic()
            try:
                try:
                    result = await self._write_watched(p.batch, len(p.items), st)
                except StoreError as exc:
                    if isinstance(exc, StoreUnavailable):
                        raise
                    self.metrics.store_errors.labels("rejected").inc()
                    log.error("store rejected a batch of %d messages (%s); writing them one by one", len(p.items), exc)
                    result = await self._write_split(p, st)
            except StoreUnavailable as exc:
                if self._stop is not None and self._stop.is_set():
                    raise _GiveUp(
                        f"stopping while the store is unavailable: {self._received - self._acked} messages "
                        "stay unacknowledged and the broker redelivers them to the next run"
                    ) from exc
                self.metrics.store_errors.labels("unavailable").inc()
                if self._store_down_since is None:
                    self._store_down_since = time.monotonic()
                    self.metrics.store_up.set(0)
                    log.warning("store unavailable, holding %d messages unacknowledged: %s", len(p.items), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.cfg.retry_max_s)
                continue
            if self._store_down_since is not None:
                log.info("store is back after %.1f s", time.monotonic() - self._store_down_since)
                self._store_down_since = None
                self.metrics.store_up.set(1)
            self._account(p, result, time.monotonic() - t0)
            return result

    async def _write_watched(self, batch: WriteBatch, n_msgs: int, st: Store) -> WriteResult:
        """Write in a worker thread; log once if it stalls (a paused database) and keep waiting."""
        fut = asyncio.ensure_future(asyncio.to_thread(st.write, batch))
        done, _ = await asyncio.wait({fut}, timeout=self.cfg.stall_warn_s)
        if not done:
            t0 = time.monotonic()
            self.metrics.store_up.set(0)
            log.warning("store write stalled for %.0f s with %d messages unacknowledged", self.cfg.stall_warn_s, n_msgs)
            result = await fut
            log.info("stalled store write completed after %.1f s more", time.monotonic() - t0)
            self.metrics.store_up.set(1)
            return result
        return fut.result()

    async def _write_split(self, p: Pending, st: Store) -> WriteResult:
        """A batch the store refused for good: write message by message; refused ones become dead letters."""
        totals = [0, 0, 0, 0, 0]
        p.dead = []
        for item in p.items:
            verdict = classify(item.topic, item.payload, item.received, self.limits, item.identity)
            one = WriteBatch()
            add_to_batch(one, item, verdict)
            if isinstance(verdict, Rejected):
                p.dead.append((verdict.gw, verdict.reason))
            try:
                res = await asyncio.to_thread(st.write, one)
            except StoreUnavailable:
                raise
            except StoreError as exc:
                gw = verdict.gw if isinstance(verdict, Accepted | Rejected) else None
                dl = WriteBatch(
                    dead_letters=[
                        DeadLetterIn(item.received, item.topic, gw, "store_rejected", str(exc)[:500], item.payload)
                    ],
                    seqs=[SeqMark(s.gw, s.boot, s.seq, s.kind, 0) for s in one.seqs],
                )
                res = await asyncio.to_thread(st.write, dl)
                p.dead.append((gw, "store_rejected"))
            for i, v in enumerate(
                (
                    res.readings_inserted,
                    res.readings_duplicate,
                    res.events_inserted,
                    res.events_duplicate,
                    res.dead_lettered,
                )
            ):
                totals[i] += v
        return WriteResult(*totals)

    def _account(self, p: Pending, result: WriteResult, elapsed: float) -> None:
        m = self.metrics
        m.batch_latency.observe(elapsed)
        m.readings.labels("inserted").inc(result.readings_inserted)
        m.readings.labels("duplicate").inc(result.readings_duplicate)
        m.events.labels("inserted").inc(result.events_inserted)
        m.events.labels("duplicate").inc(result.events_duplicate)
        for gw, reason in p.dead:
            m.dead_letters.labels(reason).inc()
            if (gw, reason) not in self._dl_logged:
                self._dl_logged.add((gw, reason))
                log.warning("dead letter from gateway %s: %s (further ones are counted, not logged)", gw, reason)
        now = self.clock()
        if p.t_max is not None:
            m.lag.set(now - p.t_max)
        m.hold.set(now - p.items[0].received)
        self.committed_batches += 1

    def _ack(self, items: list[Item]) -> None:
        source = self._source
        assert source is not None
        for item in items:
            source.ack(item.delivery)
        self._acked += len(items)
        self.metrics.unacked.dec(len(items))

    async def _advance_watermarks(self, seqs: list[SeqMark], st: Store) -> None:
        by_key: dict[Key, list[int]] = {}
        for s in seqs:
            by_key.setdefault((s.gw, s.boot), []).append(s.seq)
        changed: set[str] = set()
        for key, mine in by_key.items():
            gw, boot = key
            try:
                if not self.tracker.known(key):
                    committed = await asyncio.to_thread(st.committed_seqs, gw, boot, self.cfg.first_seq - 1)
                    self.tracker.load(key, [*committed, *mine])
                    changed.add(gw)
                    continue
                if self.tracker.add(key, mine):
                    changed.add(gw)
                if self.tracker.has_holes(key) and await self._requery(key, st):
                    changed.add(gw)
            except StoreError as exc:  # the watermark catches up on the next batch or timer tick
                log.debug("watermark query failed: %s", exc)
        for gw in changed:
            self._publish_ack(gw)

    async def _requery(self, key: Key, st: Store, min_interval_s: float = 1.0) -> bool:
        """Holes may have been filled by another ingester (shared subscription): ask the store, at most 1/s."""
        now = time.monotonic()
        if now - self._requeried.get(key, 0.0) < min_interval_s:
            return False
        self._requeried[key] = now
        extra = await asyncio.to_thread(st.committed_seqs, key[0], key[1], self.tracker.wm[key])
        return self.tracker.add(key, extra)

    def _publish_ack(self, gw: str) -> None:
        acked = self.tracker.ack_payload(gw)
        if not acked:
            return
        payload = encode_ack(acked)
        if self._acks_sent.get(gw) == payload:
            return
        self._acks_sent[gw] = payload
        assert self._source is not None
        self._source.publish(topics.ack(gw), payload, retain=True)

    async def _gap_timer(self, stop: asyncio.Event) -> None:
        tick = max(0.05, min(1.0, self.cfg.gap_grace_s / 2))
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick)
            try:
                for key in [k for k in self.tracker.wm if self.tracker.has_holes(k)]:
                    if await self._requery(key, self.store):
                        self._publish_ack(key[0])
                new, filled = self.tracker.check_gaps(self.clock())
                for gap in new:
                    await asyncio.to_thread(self.store.record_gap, gap)
                    self.metrics.gaps.inc()
                    log.warning(
                        "seq gap %s boot %s: %d..%d missing for %.0f s (lost in transit?)",
                        gap.gw,
                        gap.boot,
                        gap.first_seq,
                        gap.last_seq,
                        self.clock() - gap.detected_at,
                    )
                for gw, boot, wm in filled:
                    await asyncio.to_thread(self.store.close_gaps, gw, boot, wm, self.clock())
                    log.info("seq gap of %s boot %s filled (watermark %d)", gw, boot, wm)
            except StoreError as exc:
                log.debug("gap bookkeeping deferred: %s", exc)
