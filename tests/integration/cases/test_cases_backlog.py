"""A storm's backlog: the bridge applies waiting alarms in one store transaction and acks each after it.

The transport is a stand-in :class:`MessageSource` that hands the bridge everything at once (a
backlog after a reconnect); the store is the real one (SQLite and PostgreSQL). The result must be
what one-by-one delivery gives: same cases, same links, the bad message dead-lettered, every
message acked once, the redelivered alarm a no-op.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cases_support import T0, alarm, pg_store, sqlite_store

from case_bridge.bridge import BACKLOG_BATCH, CaseBridge
from case_bridge.config import CasesSettings
from case_bridge.store import CaseStore
from contracts import topics
from contracts.config import MqttSettings
from contracts.errors import PayloadError
from contracts.payloads import Status, decode_alarm, encode_alarm, encode_status
from contracts.reading import DeviceInfo
from mqttlink.source import Delivery

pytestmark = pytest.mark.integration

LAMPS = [DeviceInfo(f"lamp-{i:04d}", "lamp", "lamp", grid="330106001001", circuit=f"c-{i % 3}") for i in range(150)]


class Backlog:
    """A source whose messages are all waiting when the bridge starts."""

    def __init__(self, messages: list[tuple[str, bytes]]) -> None:
        self.messages = messages
        self.ready = asyncio.Event()
        self.acked: list[object] = []
        self.published: dict[str, bytes] = {}

    @property
    def connected(self) -> bool:
        return True

    def start(self, on_delivery: Callable[[Delivery], None], *, on_published: Any = None,
              on_connected: Any = None) -> None:
        for k, (topic, payload) in enumerate(self.messages):
            on_delivery(Delivery(topic, payload, k))
        self.ready.set()

    def ack(self, delivery: Delivery) -> None:
        self.acked.append(delivery.token)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int | None:
        self.published[topic] = payload
        return len(self.published)

    def stop(self) -> None:
        pass


def messages() -> list[tuple[str, bytes]]:
    birth = (topics.status("gw-1"), encode_status(Status("online", "b1", "0.1", LAMPS)))
    out = [birth]
    for k, lamp in enumerate(LAMPS):
        tr = alarm(lamp.id, "lampFailure", t=T0 + k, alarm_id=f"{lamp.id}:lampFailure")
        out.append((topics.alarms(lamp.id), encode_alarm(tr)))
        if k == 70:
            out.append((topics.alarms(lamp.id), b"{not json"))  # dead-lettered, the run goes on
        if k == 100:
            out.append(out[2])  # a redelivery of the first alarm
    for k, lamp in enumerate(LAMPS[:60]):  # escalations on the open circuit cases
        tr = alarm(lamp.id, "lampFailure", "escalated", "critical", T0 + 500 + k, alarm_id=f"{lamp.id}:lampFailure")
        out.append((topics.alarms(lamp.id), encode_alarm(tr)))
    return out


def run_bridge(store: CaseStore, source: Backlog, total: int) -> list[int]:
    sizes: list[int] = []
    apply_alarms = store.apply_alarms

    def spy(items: Any, now: float | None = None) -> Any:
        sizes.append(len(items))
        return apply_alarms(items, now)

    store.apply_alarms = spy  # type: ignore[method-assign]

    async def main() -> None:
        bridge = CaseBridge(store, MqttSettings(), CasesSettings(tick_s=60.0), clock=lambda: T0 + 1000,
                            source=source)
        stop = asyncio.Event()
        task = asyncio.create_task(bridge.run(stop))
        for _ in range(600):
            if bridge.processed >= total:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 10)
        assert bridge.processed == total

    asyncio.run(main())
    return sizes


def snapshot(store: CaseStore) -> list[tuple[Any, ...]]:
    with store.db.read() as tx:
        cases = tx.execute("SELECT id, corr_key, urgency, severity, state FROM cases ORDER BY id")
        out = []
        for cid, key, urg, sev, state in cases:
            links = tx.execute("SELECT alarm_id FROM case_links WHERE case_id = ? ORDER BY alarm_id", (cid,))
            out.append((key, urg, sev, state, tuple(r[0] for r in links)))
    return out


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[CaseStore, CaseStore]]:
    if request.param == "sqlite":
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        with sqlite_store(tmp_path / "a") as a, sqlite_store(tmp_path / "b") as b:
            yield a, b
    else:
        dsn = request.getfixturevalue("pg_dsn")
        with pg_store(dsn) as a, pg_store(dsn) as b:
            yield a, b


def test_a_backlog_is_applied_in_batches_with_the_one_by_one_result(stores: tuple[CaseStore, CaseStore]) -> None:
    batched, one_by_one = stores
    msgs = messages()
    source = Backlog(msgs)
    sizes = run_bridge(batched, source, len(msgs))
    assert sorted(source.acked) == list(range(len(msgs)))  # each message acked once
    assert sizes and max(sizes) <= BACKLOG_BATCH and sum(sizes) >= len(LAMPS)  # the storm went in batches

    # the same messages one at a time, as a bridge keeping up applies them
    bridge = CaseBridge(one_by_one, MqttSettings(), CasesSettings(), clock=lambda: T0 + 1000)
    bridge.registry.update({d.id: d for d in LAMPS})
    for _topic, payload in msgs[1:]:
        try:
            bridge.handle_alarm(decode_alarm(payload))
        except PayloadError:
            continue
    got = snapshot(batched)
    assert got == snapshot(one_by_one)
    assert [(key, urg, len(links)) for key, urg, _sev, _st, links in got] == [
        ("circuit:c-0", "very_urgent", 50), ("circuit:c-1", "very_urgent", 50), ("circuit:c-2", "very_urgent", 50)]
    (bad,) = batched.dead_letters()
    assert bad[4] == "{not json"
    assert set(source.published) == {topics.case_open(d.id) for d in LAMPS}
