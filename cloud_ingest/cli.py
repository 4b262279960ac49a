"""``citywatch ingest -c configs/cloud.example.yaml``: run the cloud ingester until SIGTERM/SIGINT;
``citywatch retention``: compact and expire stored readings once."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from case_bridge.store import CaseStore
    from cloud_ingest.retention import Hold

log = logging.getLogger(__name__)


def args_ingest(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", default="configs/cloud.example.yaml", help="cloud config (mqtt + ingest)")
    parser.add_argument("--store", default=None, help="store URL, overrides ingest.store_url")
    parser.add_argument("--client-id", default=None, help="MQTT client id, overrides ingest.client_id")
    parser.add_argument("--retire", metavar="OLD_CLIENT_ID", default=None,
                        help="discard a renamed/removed ingester's persistent session on the broker, then exit")


def cmd_ingest(args: argparse.Namespace, *, fault_ack_delay_s: float = 0.0) -> int:
    """Run until a signal; ``fault_ack_delay_s`` is for the fault-test harness (tests/support/faults.py)."""
    from cloud_ingest.config import load_settings
    from cloud_ingest.jetstream import JetStreamIngester, load_jetstream_settings
    from cloud_ingest.service import Ingester
    from cloud_ingest.store import open_store

    mqtt_settings, settings = load_settings(args.config)
    if args.retire:
        from cloud_ingest.retire import retire_session

        retire_session(mqtt_settings, args.retire)
        log.info("session %s retired on %s", args.retire, mqtt_settings.url)
        return 0
    js_settings = load_jetstream_settings(args.config)
    updates = {}
    if args.store:
        updates["store_url"] = args.store
    if args.client_id:
        updates["client_id"] = args.client_id
    if updates:
        settings = settings.model_copy(update=updates)
    store = open_store(settings.store_url)
    extra = [open_store(settings.store_url) for _ in range(settings.writers - 1)]

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        ingester: Ingester
        if js_settings is not None:  # a NATS cluster: bind to the shared JetStream durable
            ingester = JetStreamIngester(mqtt_settings, settings, js_settings, store, extra_writers=extra)
            source = f"JetStream {js_settings.stream}/{js_settings.durable} on {', '.join(js_settings.servers)}"
        else:
            ingester = Ingester(mqtt_settings, settings, store, extra_writers=extra,
                                    fault_ack_delay_s=fault_ack_delay_s)
            source = mqtt_settings.url
        log.info("ingesting from %s into %s", source, settings.store_url.split("@")[-1])
        await ingester.run(stop)

    try:
        asyncio.run(main())
    finally:
        for st in (store, *extra):
            st.close()
    return 0


def args_retention(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", default="configs/cloud.example.yaml", help="cloud config (ingest.retention)")
    parser.add_argument("--store", default=None, help="store URL, overrides ingest.store_url (run as the schema owner)")
    parser.add_argument("--cases", default=None, help="case store URL: readings its cases' alarms refer to are held")
    parser.add_argument("--evidence-margin-s", type=float, default=86_400.0,
                        help="readings held before an alarm was raised and after it cleared")


def case_holds(case_store: CaseStore, margin_s: float) -> list[Hold]:
    """Every alarm any case (closed ones too) links to holds its device's readings around it."""
    from cloud_ingest.retention import Hold

    holds: list[Hold] = []
    offset = 0
    while True:
        page = case_store.worklist(include_closed=True, limit=1000, offset=offset, sort="id")
        for case in page.items:
            for a in case_store.linked_alarms(case.id):
                first = a.raised_at if a.raised_at is not None else a.last_t
                last = a.cleared_at if a.cleared_at is not None else a.last_t
                holds.append(Hold(a.device, first - margin_s, last + margin_s))
        offset += len(page.items)
        if not page.items or offset >= page.total:
            return holds


def cmd_retention(args: argparse.Namespace) -> int:
    """Compact hot days and drop compacted days past retention, once (run it daily, e.g. from cron)."""
    import time

    from cloud_ingest.config import load_settings
    from cloud_ingest.errors import StoreError
    from cloud_ingest.retention import run
    from cloud_ingest.store import open_store
    from cloud_ingest.store.lifecycle import Lifecycle

    _mqtt, settings = load_settings(args.config)
    url = args.store or settings.store_url
    holds: list[Hold] = []
    if args.cases:
        from case_bridge.store import open_case_store

        cases = open_case_store(args.cases, migrate_schema=False)
        try:
            holds = case_holds(cases, args.evidence_margin_s)
        finally:
            cases.close()
    store = open_store(url)
    try:
        if not isinstance(store, Lifecycle):
            raise StoreError(f"{url.split('@')[-1]}: retention of this store is its own (InfluxDB retention policies)")
        for action in run(store, settings.retention, time.time(), holds):
            log.info("%s day %d%s: %s", action.kind, action.day, f" class {action.cls}" if action.cls else "",
                     action.reason)
    finally:
        store.close()
    return 0
