"""Malformed payloads and replays through a real Mosquitto into a real PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Iterator

import pytest
from ingest_support import AckWatcher, Publisher, ledger, make_readings, running, wait_until
from malformed_corpus import BOOT, CORPUS, GW

from cloud_ingest.store import Store, open_store
from cloud_ingest.validate import Limits, salvage_envelope
from contracts import topics
from contracts.payloads import encode_telemetry
from tests.support.services import Mosquitto, pg_database

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_store() -> Iterator[Store]:
    with pg_database() as dsn:
        store = open_store(dsn)
        try:
            yield store
        finally:
            store.close()


def table_checksum(store: Store, t0: float, t1: float) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    for c in store.iter_readings(t0, t1):
        for row in zip(
            c.device.tolist(), c.metric.tolist(), c.ts.tolist(), c.value.tolist(), c.quality.tolist(), strict=True
        ):
            h.update(repr(row).encode())
            n += 1
    return n, h.hexdigest()


async def test_malformed_corpus_dead_lettered_good_ones_stored(
    broker: Mosquitto, pg_store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    assert len({name for name, *_ in CORPUS}) >= 40
    now = time.time()
    t0 = now - 120
    good = make_readings(9, len(CORPUS) + 1, 5, t0)
    pub = Publisher(broker.host, broker.port)
    watcher = AckWatcher(broker.host, broker.port)
    limits = Limits()
    seq = 0
    expected: dict[str, str] = {}
    try:
        async with running(broker.url, pg_store) as ing:
            for i, (name, kind, make, reason) in enumerate(CORPUS):
                seq += 1
                pub.telemetry(GW, BOOT, seq, good[i])  # a good message before each bad one
                payload = make(seq + 1, now)
                if kind != "status" and salvage_envelope(payload, GW, limits.max_bytes) is not None:
                    seq += 1  # its seq counts as committed once dead-lettered
                topic = {"telemetry": topics.telemetry, "events": topics.events, "status": topics.status}[kind](GW)
                pub.publish(topic, payload)
                expected[name] = reason
            seq += 1
            pub.telemetry(GW, BOOT, seq, good[-1])
            await asyncio.to_thread(pub.wait)
            assert await asyncio.to_thread(watcher.wait_for, GW, BOOT, seq, 30), watcher.acks
            await wait_until(lambda: pg_store.dead_letter_count() == len(CORPUS), 20)
            got_reasons = sorted(d.reason for d in pg_store.dead_letters(limit=1000))
            assert got_reasons == sorted(expected.values())
            stored = sum(len(c) for c in pg_store.iter_readings(t0 - 1, t0 + 3600))
            generated = sum(len(g) for g in good)
            assert ing.metrics.dead_letters.labels("not_json")._value.get() == sum(
                1 for r in expected.values() if r == "not_json"
            )
            ledger(
                capsys,
                "I5 malformed payloads (readings of good messages)",
                generated,
                stored,
                dead_lettered=len(CORPUS),
                bad_kinds=len(CORPUS),
                crashes=0,
            )
            assert stored == generated
            assert all(d.raw is not None for d in pg_store.dead_letters(limit=1000))
    finally:
        pub.close()
        watcher.close()


async def test_duplicates_and_shuffled_replay_give_identical_table(
    broker: Mosquitto, pg_store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = time.time() - 300
    batches = make_readings(3, 60, 20, t0)
    msgs = [encode_telemetry("gw-r", "b1", seq, rs) for seq, rs in enumerate(batches, start=1)]
    pub = Publisher(broker.host, broker.port)
    watcher = AckWatcher(broker.host, broker.port)
    try:
        async with running(broker.url, pg_store) as ing:
            for m in msgs:
                pub.publish(topics.telemetry("gw-r"), m)
            await asyncio.to_thread(pub.wait)
            assert await asyncio.to_thread(watcher.wait_for, "gw-r", "b1", len(msgs))
            first = await asyncio.to_thread(table_checksum, pg_store, t0 - 1, t0 + 3600)
            # replay: every message twice, shuffled, and a batch split differently (per-reading resend)
            replay = msgs * 2
            random.Random(3).shuffle(replay)
            for m in replay:
                pub.publish(topics.telemetry("gw-r"), m)
            for seq, rs in enumerate(batches[:5], start=1):
                for r in reversed(rs):
                    pub.publish(topics.telemetry("gw-r"), encode_telemetry("gw-r", "b1", seq, [r]))
            await asyncio.to_thread(pub.wait)
            dup_expected = len(replay) * 20 + 5 * 20
            await wait_until(lambda: ing.metrics.readings.labels("duplicate")._value.get() >= dup_expected, 30)
            second = await asyncio.to_thread(table_checksum, pg_store, t0 - 1, t0 + 3600)
            ledger(
                capsys,
                "I3 duplicates + shuffled replay",
                1200,
                second[0],
                dup_before=dup_expected,
                dup_after=second[0] - 1200,
                checksum_equal=first == second,
            )
            assert first == second
            assert first[0] == 1200
    finally:
        pub.close()
        watcher.close()
