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
    parser.add_argument("--retire", metavar="OLD_CLIENT_ID", default=None,
                        help="discard a renamed/removed ingester's persistent session on the broker, then exit")


def cmd_ingest(args: argparse.Namespace) -> int:
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
            ingester = Ingester(mqtt_settings, settings, store, extra_writers=extra)
            source = mqtt_settings.url
        log.info("ingesting from %s into %s", source, settings.store_url.split("@")[-1])
        await ingester.run(stop)

    try:
        asyncio.run(main())
    finally:
        for st in (store, *extra):
            st.close()
    return 0
