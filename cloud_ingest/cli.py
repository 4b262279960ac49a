"""``citywatch ingest -c configs/cloud.example.yaml``: run the cloud ingester until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

log = logging.getLogger(__name__)


def args_ingest(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", default="configs/cloud.example.yaml", help="cloud config (mqtt + ingest)")
    parser.add_argument("--store", default=None, help="store URL, overrides ingest.store_url")
    parser.add_argument("--client-id", default=None, help="MQTT client id, overrides ingest.client_id")


def cmd_ingest(args: argparse.Namespace, *, fault_ack_delay_s: float = 0.0) -> int:
    """Run until a signal; ``fault_ack_delay_s`` is for the fault-test harness (tests/support/faults.py)."""
    from cloud_ingest.config import load_settings
    from cloud_ingest.service import Ingester
    from cloud_ingest.store import open_store

    mqtt_settings, settings = load_settings(args.config)
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
        ingester = Ingester(mqtt_settings, settings, store, extra_writers=extra, fault_ack_delay_s=fault_ack_delay_s)
        log.info("ingesting from %s into %s", mqtt_settings.url, settings.store_url.split("@")[-1])
        await ingester.run(stop)

    try:
        asyncio.run(main())
    finally:
        for st in (store, *extra):
            st.close()
    return 0
