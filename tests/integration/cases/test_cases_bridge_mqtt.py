"""The bridge over a real Mosquitto: births, alarms, cases, retained open-case sets, reconciliation."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from cases_support import COVER_GAS, GAUGE, Collector, alarm, publish_all

from case_bridge.bridge import CaseBridge
from case_bridge.config import CasesSettings
from case_bridge.store import open_case_store
from contracts import topics
from contracts.payloads import Status, decode_open_cases, encode_alarm, encode_status
from tests.support.services import Mosquitto

pytestmark = pytest.mark.integration


async def wait_until(pred: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("condition not met")


async def test_alarms_become_cases_and_open_sets_are_published(broker: Mosquitto, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cases.db"
    store = open_case_store(url)
    console = open_case_store(url)  # a second process's view (the console)
    settings = CasesSettings(tick_s=0.1, client_id="cases-test", verify_hold_s=1.0, verify_grace_s=0.0)
    bridge = CaseBridge(store, broker_settings(broker), settings)
    watcher = Collector(broker.port, topics.CASE_OPEN_FILTER)
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop))
    try:
        await asyncio.wait_for(bridge.ready.wait(), 10)
        status = Status("online", "boot1", "0.1.0", [GAUGE, COVER_GAS])
        publish_all(broker.port, [(topics.status("gw-1"), encode_status(status), True)])
        await wait_until(lambda: GAUGE.id in bridge.registry and COVER_GAS.id in bridge.registry)
        water = alarm(GAUGE.id, "road-water-depth", severity="critical", value=0.45, t=time.time())
        cover = alarm(COVER_GAS.id, "manhole-tilt", severity="major", value=40.0, t=time.time())
        publish_all(broker.port, [(topics.alarms(GAUGE.id), encode_alarm(water), False),
                                  (topics.alarms(COVER_GAS.id), encode_alarm(cover), False),
                                  (topics.alarms(GAUGE.id), encode_alarm(water), False),  # redelivered
                                  (topics.alarms(GAUGE.id), b"{not json", False)])  # dead letter, acked
        await wait_until(lambda: bridge.processed >= 5)  # 1 birth + 4 alarm messages
        page = console.worklist()
        assert page.total == 2
        (dead,) = console.dead_letters()
        assert dead[1] == topics.alarms(GAUGE.id) and dead[2] == "not_json" and dead[4] == "{not json"
        by_unit = {c.unit: c for c in page.items}
        assert by_unit["lingyin-street"].service_code == "S0111"
        assert by_unit["gas"].service_code == "B0111"
        raw = await asyncio.to_thread(watcher.wait_for, topics.case_open(GAUGE.id), lambda p: True)
        oc = decode_open_cases(raw)
        assert oc.cases == {"road-water-depth": str(by_unit["lingyin-street"].id)}
        # the console closes the cover case; the bridge's reconciliation republishes the empty set
        cid = by_unit["gas"].id
        for action in ("accept", "report_fix"):
            console.transition(cid, action, "h")
        cleared = alarm(COVER_GAS.id, "manhole-tilt", "cleared", value=0.2, t=time.time())
        publish_all(broker.port, [(topics.alarms(COVER_GAS.id), encode_alarm(cleared), False)])
        await wait_until(lambda: console.get(cid).state == "closed", 10)
        raw = await asyncio.to_thread(watcher.wait_for, topics.case_open(COVER_GAS.id),
                                      lambda p: decode_open_cases(p).cases == {})
        assert decode_open_cases(raw).device == COVER_GAS.id
    finally:
        stop.set()
        await task
        watcher.close()
        store.close()
        console.close()


def broker_settings(broker: Mosquitto):  # type: ignore[no-untyped-def]
    from contracts.config import MqttSettings

    return MqttSettings(url=broker.url)


async def test_database_connection_lost_then_recovered(broker: Mosquitto, pg_dsn: str) -> None:
    """The bridge's PostgreSQL session is killed: the alarm waits unacknowledged, then becomes a case."""
    import psycopg
    from cases_support import pg_store

    with pg_store(pg_dsn, verify_hold_s=600.0) as store:
        bridge = CaseBridge(store, broker_settings(broker), CasesSettings(tick_s=0.2, client_id="cases-pg-test"))
        stop = asyncio.Event()
        task = asyncio.create_task(bridge.run(stop))
        try:
            await asyncio.wait_for(bridge.ready.wait(), 10)
            pid = store.db.conn.info.backend_pid  # type: ignore[union-attr]
            with psycopg.connect(pg_dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            tr = alarm(GAUGE.id, "road-water-depth", severity="critical", value=0.5, t=time.time())
            publish_all(broker.port, [(topics.alarms(GAUGE.id), encode_alarm(tr), False)])
            await wait_until(lambda: bridge.processed >= 1, 15)
            page = store.worklist()
            assert page.total == 1 and page.items[0].state == "dispatched"
        finally:
            stop.set()
            await task
