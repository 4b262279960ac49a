"""The ingester as a JetStream consumer: N processes share one durable pull consumer on a NATS cluster.

Design B of docs/scaleout.md, the one that lost nothing when the stream leader was killed: the
durable sits on the server's own ``$MQTT_msgs`` stream, where an MQTT QoS 1 PUBLISH is stored
(R3) before the gateway gets its PUBACK. An own stream capturing the mapped core subject lost
every PUBACKed message while it had no leader.

Everything after the fetch is the MQTT ingester's pipeline, inherited from
:class:`cloud_ingest.service.Ingester`: validate (``classify``), merge into micro-batches, commit
through the store (idempotent: ``ON CONFLICT DO NOTHING`` on the reading identity and on
(gw, boot, seq)), publish the ack watermark, then acknowledge. Only the edges differ:

* messages come from ``fetch`` on the shared durable instead of a paho subscription; a fetched
  message is acknowledged to JetStream only after its batch committed, so a kill -9 of an
  ingester leaves them unacknowledged and JetStream redelivers them to another one after
  ``ack_wait`` (duplicates are no-ops in the store);
* a message delivered more than ``max_deliveries`` times (it keeps killing ingesters, or the
  store keeps refusing it) is dead-lettered with its reason instead of being tried again;
* the ack watermark goes out as a RETAINED QoS 1 MQTT message through the cluster's MQTT
  listener (a core NATS publish would reach only connected subscribers, at QoS 0), on a plain
  publish-only MQTT 3.1.1 connection that fails over between the nodes.

Adding or removing an ingester changes nothing elsewhere: each binds to the same durable by
name; the durable is created by provisioning (``citywatch cluster``), or here if it is missing,
and no running service ever deletes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from cloud_ingest.config import IngestSettings
from cloud_ingest.errors import IngestError, StoreError
from cloud_ingest.metrics import IngestMetrics
from cloud_ingest.provision import INGEST_DURABLE, MQTT_STREAM, MQTT_SUBJECT_PREFIX, provision_ingest_consumer
from cloud_ingest.service import Ingester, Item, add_to_batch
from cloud_ingest.store.base import SeqMark, Store, WriteBatch
from cloud_ingest.validate import Accepted, Rejected, classify
from contracts.config import MqttSettings, StrictModel, parse_cloud_section, parse_yaml
from mqttlink.source import Delivery
from mqttlink.threaded import ThreadedSource

log = logging.getLogger(__name__)

#: a gateway quiet this long gets its published watermark re-checked against the store
WATERMARK_SETTLE_S = 1.0


class JetStreamSettings(StrictModel):
    """The ``jetstream`` section of the cloud config: where the shared durable lives."""

    #: nats:// URLs of the cluster's nodes; the client fails over between them
    servers: list[str] = Field(min_length=1)
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    stream: str = MQTT_STREAM
    durable: str = INGEST_DURABLE
    #: messages per fetch; with ``ingest.receive_maximum`` it bounds what one ingester holds unacked
    fetch_batch: int = Field(default=500, ge=1, le=10000)
    fetch_timeout_s: float = Field(default=0.5, gt=0)
    #: deliveries after which a message is dead-lettered (reason ``redelivery_limit``)
    max_deliveries: int = Field(default=5, ge=2)
    #: only used when the durable has to be created here (normally provisioning did it)
    ack_wait_s: float = Field(default=30.0, gt=0)

    @field_validator("servers")
    @classmethod
    def _urls_ok(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("nats://", "tls://")):
                raise ValueError(f"not a nats:// or tls:// URL: {url!r}")
        return value


def load_jetstream_settings(path: str | Path) -> JetStreamSettings | None:
    """The ``jetstream`` section of a cloud config, or None when the file has none (MQTT ingest)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise IngestError(f"cannot read config {path}: {exc}") from exc
    data = parse_yaml(text, str(path))
    if not isinstance(data, dict) or not data.get("jetstream"):
        return None
    return parse_cloud_section(text, "jetstream", JetStreamSettings, str(path))


def topic_of(subject: str) -> str | None:
    """``$MQTT.msgs.citywatch.v1.gw.g1.telemetry`` -> ``citywatch/v1/gw/g1/telemetry`` (None if not one)."""
    if not subject.startswith(MQTT_SUBJECT_PREFIX):
        return None
    return subject[len(MQTT_SUBJECT_PREFIX) :].replace(".", "/")


def redelivery_verdict(verdict: Accepted | Rejected, deliveries: int) -> Rejected:
    """A message delivered too often becomes a dead letter that still marks its (boot, seq) committed."""
    if isinstance(verdict, Rejected):
        return verdict
    seq: tuple[str, int] | None = None
    if verdict.rows is not None:
        seq = (verdict.rows.boot, verdict.rows.seq)
    elif verdict.batch is not None:
        seq = (verdict.batch.boot, verdict.batch.seq)
    return Rejected("redelivery_limit", f"delivered {deliveries} times without a commit", verdict.gw, seq,
                    verdict.kind)


class JetStreamIngester(Ingester):
    """One ingester bound to the shared durable. ``await JetStreamIngester(...).run(stop)``."""

    def __init__(
        self,
        mqtt_settings: MqttSettings,
        settings: IngestSettings,
        js_settings: JetStreamSettings,
        store: Store,
        *,
        metrics: IngestMetrics | None = None,
        clock: Callable[[], float] = time.time,
        extra_writers: Sequence[Store] = (),
    ) -> None:
        super().__init__(mqtt_settings, settings, store, metrics=metrics, clock=clock, extra_writers=extra_writers)
        self.js_cfg = js_settings
        self._holding = 0  # fetched, not yet acknowledged
        self._ack_tasks: set[asyncio.Task[None]] = set()
        self.fetched = 0
        self.redelivered = 0
        self._settle_at: dict[str, float] = {}  # gateway -> when to re-check the watermark it published

    # ------------------------------------------------------------ MQTT: publish-only, for ack watermarks

    def _mqtt_source(self, ready: asyncio.Event) -> ThreadedSource:
        """Messages come from JetStream; MQTT only carries the retained ack watermarks out."""
        return ThreadedSource(self.mqtt, self.cfg.client_id, [], ready=ready, name="ingest.acks")

    def _on_source_connected(self) -> None:
        """A new connection (maybe to another node): the watermarks may not have reached the broker."""
        self._acks_sent.clear()
        for gw in list(self.tracker.boots):
            self._publish_ack(gw)

    def _publish_ack(self, gw: str) -> None:
        super()._publish_ack(gw)
        self._settle_at[gw] = time.monotonic() + WATERMARK_SETTLE_S

    async def _settle_watermarks(self, stop: asyncio.Event) -> None:
        """Re-check a published watermark once the gateway has been quiet for WATERMARK_SETTLE_S.

        Several ingesters publish to the same retained topic, and each sees only the batches it
        fetched: one that committed seq 165 can publish "165" just after another published "200"
        for 166..200, and the retained message then stays behind for good (a gateway would
        resend what it believes unacknowledged; a quiet one never would). Every publisher asks
        the store again after it settles and publishes the newer value, so the last retained
        message is the committed watermark within about WATERMARK_SETTLE_S.
        """
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), WATERMARK_SETTLE_S / 4)
            now = time.monotonic()
            for gw in [g for g, at in self._settle_at.items() if at <= now]:
                del self._settle_at[gw]
                moved = False
                try:
                    for boot in list(self.tracker.boots.get(gw, [])):
                        key = (gw, boot)
                        extra = await asyncio.to_thread(self.store.committed_seqs, gw, boot, self.tracker.wm[key])
                        moved = self.tracker.add(key, extra) or moved
                except StoreError as exc:  # the next batch or gap tick catches up
                    log.debug("watermark re-check failed: %s", exc)
                if moved:
                    self._publish_ack(gw)

    async def _advance_watermarks(self, seqs: list[SeqMark], st: Store) -> None:
        """Publish every touched gateway's watermark, changed or not.

        Several ingesters publish to the same retained topic, so an older watermark can land
        after a newer one: :meth:`_settle_watermarks` repairs that; a gateway that resends
        meanwhile gets the current value from whoever commits the duplicates (the store's
        committed seqs are shared, so all agree on it).
        """
        gws = {s.gw for s in seqs}
        for gw in gws:
            self._acks_sent.pop(gw, None)
        await super()._advance_watermarks(seqs, st)
        for gw in gws:
            if gw not in self._acks_sent and self.tracker.boots.get(gw):
                self._publish_ack(gw)

    # ------------------------------------------------------------ JetStream side

    def _ack(self, items: list[Item]) -> None:
        msgs = [it.delivery.token for it in items]
        self._holding -= len(items)
        self.metrics.unacked.dec(len(items))
        if msgs:
            task = asyncio.ensure_future(self._ack_js(msgs))
            self._ack_tasks.add(task)
            task.add_done_callback(self._ack_tasks.discard)

    async def _ack_js(self, msgs: list[Any]) -> None:
        import nats.errors

        for m in msgs:
            try:
                await m.ack()
            except nats.errors.Error as exc:  # redelivered after ack_wait: a duplicate, not a loss
                log.debug("JetStream ack failed: %s", exc)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        import nats

        stop = stop or asyncio.Event()
        js_cfg = self.js_cfg
        kwargs: dict[str, Any] = {}
        if js_cfg.ca_file:
            import ssl

            kwargs["tls"] = ssl.create_default_context(cafile=js_cfg.ca_file)
        try:
            nc = await nats.connect(
                servers=js_cfg.servers, user=js_cfg.username, password=js_cfg.password, name=self.cfg.client_id,
                connect_timeout=5, max_reconnect_attempts=-1, reconnect_time_wait=0.5, allow_reconnect=True,
                **kwargs,
            )
        except (OSError, nats.errors.Error) as exc:
            raise IngestError(f"cannot connect to NATS {', '.join(js_cfg.servers)}: {exc}") from exc
        try:
            await self._ensure_durable(nc)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pull(nc, stop), name="ingest.pull")
                tg.create_task(self._settle_watermarks(stop), name="ingest.settle")
                tg.create_task(super().run(stop), name="ingest.pipeline")
            if self._ack_tasks:
                await asyncio.gather(*self._ack_tasks, return_exceptions=True)
        finally:
            with contextlib.suppress(Exception):
                await nc.close()

    async def _ensure_durable(self, nc: Any) -> None:
        import nats.errors
        from nats.js.errors import NotFoundError

        js = nc.jetstream(timeout=5)
        deadline = time.monotonic() + 60
        while True:
            try:
                await js.consumer_info(self.js_cfg.stream, self.js_cfg.durable)
                return
            except NotFoundError:
                log.warning("durable %s on %s is missing: creating it; messages published while no consumer "
                            "had interest were not kept", self.js_cfg.durable, self.js_cfg.stream)
                await provision_ingest_consumer(self.js_cfg.servers, durable=self.js_cfg.durable,
                                                ack_wait_s=self.js_cfg.ack_wait_s, user=self.js_cfg.username,
                                                password=self.js_cfg.password)
                return
            except (TimeoutError, nats.errors.Error) as exc:  # no leader yet: the cluster is electing
                if time.monotonic() > deadline:
                    raise IngestError(f"cannot look up durable {self.js_cfg.durable}: {exc}") from exc
                await asyncio.sleep(0.5)

    async def _pull(self, nc: Any, stop: asyncio.Event) -> None:
        """Fetch while fewer than ``receive_maximum`` messages are held; hand them to the pipeline."""
        import nats.errors

        js = nc.jetstream(timeout=5)
        cfg, js_cfg = self.cfg, self.js_cfg
        sub = await js.pull_subscribe_bind(durable=js_cfg.durable, stream=js_cfg.stream)
        failing_since: float | None = None
        while not stop.is_set():
            room = cfg.receive_maximum - self._holding
            if room <= 0:
                await asyncio.sleep(0.01)
                continue
            try:
                msgs = await sub.fetch(min(js_cfg.fetch_batch, room), timeout=js_cfg.fetch_timeout_s)
            except TimeoutError:
                continue
            except nats.errors.Error as exc:  # leader election, node loss: nats-py reconnects by itself
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("JetStream fetch failing (%s); retrying", exc)
                await asyncio.sleep(0.5)
                continue
            if failing_since is not None:
                log.info("JetStream fetch works again after %.1f s", time.monotonic() - failing_since)
                failing_since = None
            dead = WriteBatch()
            dead_msgs = []
            now = self.clock()
            for m in msgs:
                topic = topic_of(m.subject)
                payload = bytes(m.data)
                deliveries = int(m.metadata.num_delivered)
                self.fetched += 1
                if deliveries > 1:
                    self.redelivered += 1
                if topic is None:
                    dead_msgs.append(m)  # outside the filter: nothing to store
                    continue
                item = Item(topic, payload, Delivery(topic, payload, m), None, now)
                if deliveries > js_cfg.max_deliveries:
                    verdict = redelivery_verdict(classify(topic, payload, now, self.limits), deliveries)
                    add_to_batch(dead, item, verdict)
                    dead_msgs.append(m)
                    continue
                self._holding += 1
                self._rx.append(item)
                self.metrics.unacked.inc()
            if dead.dead_letters:
                await self._dead_letter(dead)
            if dead_msgs:
                await self._ack_js(dead_msgs)
            if self._rx and self._wake is not None:
                self._wake.set()

    async def _dead_letter(self, batch: WriteBatch) -> None:
        while True:
            try:
                await asyncio.to_thread(self.store.write, batch)
                break
            except StoreError as exc:
                log.warning("cannot dead-letter %d redelivered messages yet: %s", len(batch.dead_letters), exc)
                await asyncio.sleep(self.cfg.retry_max_s)
        for dl in batch.dead_letters:
            self.metrics.dead_letters.labels(dl.reason).inc()
        log.warning("dead-lettered %d messages delivered more than %d times", len(batch.dead_letters),
                    self.js_cfg.max_deliveries)
