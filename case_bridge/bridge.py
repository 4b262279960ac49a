"""The case bridge process: alarm transitions in, cases out; the thin async shell.

Transport: a :class:`mqttlink.source.MessageSource`, by default :class:`mqttlink.threaded.
ThreadedSource` (paho's network thread), which hands each message to the asyncio loop with
``call_soon_threadsafe``; everything else (store writes,
publishing ``case-open``, verification ticks, notifications) runs on the one asyncio loop.
Cases are a low-rate stream, so store calls run inline on the loop (a write is ~1 ms). In a
storm the inbox backs up; the waiting alarms are then applied in one store transaction
(:meth:`CaseStore.apply_alarms`, up to :data:`BACKLOG_BATCH`) and acked after its commit, so
the bridge absorbs more alarms per second exactly when it has to (``bench/cases.py``: storm).

Delivery: QoS 1, persistent session (``clean_start=False`` + session expiry) and
``manual_ack``: an alarm is PUBACKed only after the transaction that applied it committed.
A ``kill -9`` between the two makes the broker redeliver, and the store's idempotency
(alarm transition key, one link per alarm id) turns the redelivery into a no-op — exactly one
case per alarm.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from case_bridge.config import CasesSettings
from case_bridge.errors import CaseError, StoreConflict, StoreError
from case_bridge.model import AlarmOutcome, AuditEntry, Case
from case_bridge.notify import Notice, Notifier
from case_bridge.store import CaseStore
from contracts import topics
from contracts.alarms import AlarmTransition, Severity, TransitionKind
from contracts.config import MqttSettings
from contracts.errors import ContractError, PayloadError
from contracts.payloads import OpenCases, decode_alarm, decode_status, encode_open_cases
from contracts.reading import DeviceInfo
from mqttlink.source import Delivery, MessageSource
from mqttlink.threaded import ThreadedSource

log = logging.getLogger("citywatch.cases")

#: at most this many waiting alarms are applied in one store transaction (a storm's backlog): enough to
#: share one commit among many alarms, few enough that a long backlog still commits (and acks) as it goes
BACKLOG_BATCH = 32

_ALARM_PREFIX = topics.ALARMS_FILTER[:-1]


def alarm_notice(tr: AlarmTransition, outcome: AlarmOutcome, utc_offset_s: int = 8 * 3600) -> Notice:
    """What the duty officer reads about an alarm and the case it opened or joined. Pure."""
    case = outcome.case
    title = f"{tr.severity.value.upper()} {tr.rule} @ {tr.device}"
    lines = [f"告警 {tr.kind.value}: value={tr.value}", f"alarm {tr.alarm_id}"]
    if case is not None:
        title = f"{case.category_name} {title}"
        lines.append(f"案件 #{case.id} {case.service_code} {case.category_name} → {case.unit} ({case.state})")
        if case.deadline is not None:
            local = time.gmtime(case.deadline + utc_offset_s)
            lines.append(f"时限 {time.strftime('%Y-%m-%d %H:%M', local)} (UTC{utc_offset_s / 3600:+g})")
    return Notice(f"alarm:{tr.alarm_id}:{tr.kind.value}:{tr.severity.value}", title, tuple(lines), tr.severity.value,
                  {"alarm_id": tr.alarm_id, "device": tr.device, "rule": tr.rule,
                   "case_id": case.id if case else None})


def overdue_notice(case: Case, unit_name: str) -> Notice:
    """督办: a case's stage deadline just passed. Keyed by case and deadline: each stage once. Pure."""
    return Notice(
        f"overdue:{case.id}:{case.deadline}",
        f"超期 案件 #{case.id} {case.category_name}",
        (f"{case.state_label} @ {unit_name}", case.description),
        "major",
        {"case_id": case.id, "unit": case.unit, "state": case.state, "deadline": case.deadline},
    )


def urge_notice(case: Case, entry: AuditEntry, unit_name: str) -> Notice:
    """督办: what the unit reads when the command centre urges one of its cases. Pure."""
    late = entry.data.get("overdue_s")
    when = ("" if late is None else f"已超期 overdue {late / 3600:.1f} h" if late > 0
            else f"距时限 due in {-late / 3600:.1f} h")
    lines = [f"{case.state_label} @ {unit_name}", when, f"督办 {entry.actor}: {entry.note}".rstrip(": "),
             case.description]
    return Notice(f"urge:{case.id}:{entry.id}", f"督办 案件 #{case.id} {case.category_name}",
                  tuple(x for x in lines if x), "major",
                  {"case_id": case.id, "unit": case.unit, "state": case.state, "deadline": case.deadline,
                   "urged_by": entry.actor, "overdue_s": late})


class CaseBridge:
    """Consumes alarm transitions and device births; maintains cases; publishes open-case sets."""

    def __init__(
        self,
        store: CaseStore,
        mqtt_settings: MqttSettings,
        settings: CasesSettings,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
        *,
        source: MessageSource | None = None,
    ) -> None:
        self.store = store
        self.mqtt = mqtt_settings
        self.settings = settings
        self.notifier = notifier
        self.clock = clock
        self.registry: dict[str, DeviceInfo] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue[Delivery] = asyncio.Queue()
        self._source = source
        self._published: dict[str, bytes] = {}
        self._dead_letters: dict[str, int] = {}
        self._store_failing = False
        self.ready = source.ready if source is not None else asyncio.Event()
        self.processed = 0

    def _on_delivery(self, d: Delivery) -> None:  # transport thread
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._inbox.put_nowait, d)

    # ------------------------------------------------------------ asyncio side

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.registry.update(self.store.devices.known())
        if self._source is None:
            m = self.mqtt
            self._source = ThreadedSource(
                m, m.client_id or self.settings.client_id, [topics.gw_filter("status"), topics.ALARMS_FILTER],
                session_expiry_s=self.settings.session_expiry_s, ready=self.ready, name="cases")
        source = self._source
        source.start(self._on_delivery)
        try:
            self._publish_open(self.store.devices_with_open_cases())
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._consume(stop), name="cases.consume")
                tg.create_task(self._ticker(stop), name="cases.tick")
                if self.notifier is not None and self.notifier.enabled:
                    tg.create_task(self.notifier.run(stop), name="cases.notify")
        finally:
            source.stop()

    async def _consume(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                item = await asyncio.wait_for(self._inbox.get(), 0.5)
            except TimeoutError:
                continue
            items = [item]
            while len(items) < BACKLOG_BATCH and not self._inbox.empty():
                items.append(self._inbox.get_nowait())
            i = 0
            while i < len(items) and not stop.is_set():
                done = self._apply_backlog(items[i:])  # a run of alarms in one transaction
                if done == 0:
                    await self._process(items[i], stop)
                    done = 1
                i += done

    async def _process(self, item: Delivery, stop: asyncio.Event) -> None:
        """One message, retried while the store is down; acked once handled or dead-lettered."""
        while not stop.is_set():
            failure: tuple[str, str] | None = None
            try:
                self._handle(item)
            except StoreConflict as exc:  # lost every retry of a uniqueness race: a poison message
                failure = ("store_conflict", str(exc))
            except StoreError as exc:
                self._store_down(exc)
                await asyncio.sleep(1.0)
                continue
            except CaseError as exc:  # a bug or a config gap, not the store: keep the message, move on
                failure = (type(exc).__name__, str(exc))
            if failure is not None:
                try:
                    self._dead_letter(item, *failure)
                except StoreError as exc:
                    self._store_down(exc)
                    await asyncio.sleep(1.0)
                    continue
            self._store_works()
            self._ack(item)
            self.processed += 1
            return

    def _apply_backlog(self, items: list[Delivery]) -> int:
        """A storm's backlog: the leading run of alarms in ONE store transaction (``apply_alarms``).

        Returns how many of ``items`` are handled and acked. Anything unusual (a status message, an
        undecodable alarm, a store or case error) ends the run or gives it up: those messages go the
        one-by-one way of :meth:`_process`, which retries, dead-letters and recognises redeliveries.
        """
        trs: list[AlarmTransition] = []
        for it in items:
            if not it.topic.startswith(_ALARM_PREFIX):
                break
            try:
                trs.append(decode_alarm(it.payload))
            except PayloadError:
                break
        if len(trs) < 2:
            return 0
        now = self.clock()
        try:
            outcomes = self.store.apply_alarms([(tr, self.registry.get(tr.device)) for tr in trs], now)
        except CaseError:  # StoreError included: the one-by-one path retries and reports it
            return 0
        self._store_works()
        devices: set[str] = set()
        done = 0
        try:
            for it, tr, outcome in zip(items, trs, outcomes, strict=False):
                devices.update(self._after_alarm(tr, outcome, now, publish=False))
                self._ack(it)
                self.processed += 1
                done += 1
            self._publish_open(devices)
        except CaseError:  # committed; the rest are redeliveries to the one-by-one path (duplicates)
            return done
        return done

    def _store_works(self) -> None:
        if self._store_failing:
            log.info("case store works again")
            self._store_failing = False

    def _store_down(self, exc: StoreError) -> None:
        if not self._store_failing:
            log.error("case store failed, retrying (message not acked): %s", exc)
            self._store_failing = True

    def _ack(self, item: Delivery) -> None:
        if self._source is not None:
            self._source.ack(item)

    def _dead_letter(self, item: Delivery, reason: str, detail: str = "") -> None:
        """Record an unusable message with its reason (raises StoreError if the store is down: retried)."""
        self.store.dead_letter(item.topic, reason, detail, item.payload, self.clock())
        n = self._dead_letters.get(reason, 0)
        self._dead_letters[reason] = n + 1
        if n == 0:
            log.warning("dead-lettered a message on %s: %s %s (further ones counted)", item.topic, reason, detail)

    def _handle(self, item: Delivery) -> None:
        if item.topic.startswith(_ALARM_PREFIX):
            try:
                tr = decode_alarm(item.payload)
            except PayloadError as exc:
                self._dead_letter(item, exc.reason, exc.detail)
                return
            self.handle_alarm(tr)
            return
        try:
            _gw, kind = topics.parse_gw_topic(item.topic)
            if kind != "status":
                return
            status = decode_status(item.payload)
        except PayloadError as exc:
            self._dead_letter(item, exc.reason, exc.detail)
            return
        except ContractError:
            self._dead_letter(item, "bad_topic")
            return
        if status.devices:
            fresh = [d for d in status.devices if self.registry.get(d.id) != d]
            if fresh:
                self.store.devices.remember(fresh, self.clock())
                self.registry.update({d.id: d for d in fresh})

    def handle_alarm(self, tr: AlarmTransition) -> AlarmOutcome:
        now = self.clock()
        outcome = self.store.apply_alarm(tr, self.registry.get(tr.device), now)
        self._after_alarm(tr, outcome, now)
        return outcome

    def _after_alarm(self, tr: AlarmTransition, outcome: AlarmOutcome, now: float, *,
                     publish: bool = True) -> tuple[str, ...]:
        """Publish the open-case sets and notify; returns the devices whose set may have changed."""
        effective = outcome
        if outcome.effect == "duplicate":
            # a redelivery: the first delivery may have died after its commit, before publishing and
            # queueing its notice; both are idempotent (retained payload dedup, notice dedup key)
            case = self.store.case_for_alarm(tr.alarm_id, now)
            effective = AlarmOutcome("duplicate", case.id if case else None, case, (), (tr.device,))
        if publish:
            self._publish_open(effective.devices)
        if self.notifier is not None and self.notifier.enabled:
            self._notify_alarm(tr, effective, now)
        return effective.devices

    def _notify_alarm(self, tr: AlarmTransition, outcome: AlarmOutcome, now: float) -> None:
        assert self.notifier is not None
        if tr.kind in (TransitionKind.ACKNOWLEDGED, TransitionKind.CLEARED):
            self.notifier.cancel_escalation(tr.alarm_id)
            return
        if tr.kind not in (TransitionKind.RAISED, TransitionKind.ESCALATED):
            return
        if tr.severity.rank < self.notifier.settings.min_severity.rank:
            return
        notice = alarm_notice(tr, outcome, self.store.catalog.calendar.utc_offset_s)
        # the escalation is scheduled in the notice's transaction, only when the notice is new
        critical = tr.severity is Severity.CRITICAL
        self.notifier.notify(notice, escalate_alarm=tr.alarm_id if critical else None, now=now)

    def _publish_open(self, devices: Iterable[str]) -> None:
        devs = list(devices)
        if not devs or self._source is None:
            return
        for dev, cases in self.store.open_cases_for(devs).items():
            payload = encode_open_cases(OpenCases(dev, cases))
            if self._published.get(dev) == payload:
                continue
            try:
                topic = topics.case_open(dev)
            except ContractError:
                continue
            if self._source.publish(topic, payload, retain=True) is not None:
                self._published[dev] = payload

    async def _ticker(self, stop: asyncio.Event) -> None:
        last = self.clock()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.settings.tick_s)
            except TimeoutError:
                pass
            now = self.clock()
            try:
                self.tick(now, last)
            except StoreError as exc:
                log.error("verification tick failed: %s", exc)
                continue
            last = now

    def tick(self, now: float, since: float) -> list[AlarmOutcome]:
        """Sensor verification, open-case reconciliation (console-made transitions), escalations."""
        outcomes = self.store.due_verifications(now, self.settings.verify_hold_s, self.settings.verify_grace_s)
        urges = self.store.urges_since(since - 1.0, now) if self.notifier is not None and self.notifier.enabled \
            else []
        changed: set[str] = set(self.store.devices_changed_since(since - 1.0))
        for o in outcomes:
            changed.update(o.devices)
            if self.notifier is not None and self.notifier.enabled and o.case is not None \
                    and "fail_verification" in o.actions:
                c = o.case
                why = self.store.timeline(c.id)[-1].note  # the return's note names the failing readings
                self.notifier.notify(Notice(
                    f"case:{c.id}:returned:{c.version}", f"核查未通过 案件 #{c.id} {c.category_name}",
                    (f"传感器仍报警, 案件已回退 → {c.unit}", why, c.description), c.severity or "major",
                    {"case_id": c.id}))
        self._publish_open(changed)
        if self.notifier is not None and self.notifier.enabled:
            for c in self.store.deadlines_passed(since, now):
                self.notifier.notify(overdue_notice(c, self._unit_name(c.unit)), now=now)
            for entry, c in urges:  # 督办 from the console: the unit hears it on its own channels
                self.notifier.notify_unit(urge_notice(c, entry, self._unit_name(c.unit)), c.unit, now=now)
            self.notifier.tick(now)
        return outcomes

    def _unit_name(self, unit_id: str) -> str:
        u = self.store.catalog.unit(unit_id)
        return u.name if u is not None else unit_id
