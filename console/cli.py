"""``citywatch console -c configs/cloud.example.yaml``: serve the web console and APIs.

Also two small helpers for operators, so no plain secret ever has to be written into the
config: ``--hash-password`` prints an argon2 hash for a ``users`` entry, ``--new-api-key``
prints a fresh key (give it to the client) and its SHA-256 (put that in ``api_keys``).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import time
from pathlib import Path
from typing import Any

from console.config import ConsoleSettings, load_console_config
from console.errors import ConsoleError

log = logging.getLogger(__name__)


def args_console(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", default="configs/cloud.example.yaml", help="cloud config file")
    parser.add_argument("--host", help="override console.listen_host")
    parser.add_argument("--port", type=int, help="override console.listen_port")
    parser.add_argument("--hash-password", action="store_true", help="read a password, print its argon2 hash, exit")
    parser.add_argument("--new-api-key", metavar="NAME", help="print a new API key and its hash for NAME, exit")


def build(config_path: str) -> tuple[object, ConsoleSettings]:
    """Open the stores named in the config and build the app (with the MQTT live feed)."""
    from case_bridge import open_case_store
    from cloud_ingest.store import open_store
    from console import serialize
    from console.adapters import CaseAdapter, DeviceAdapter, RulesAlarmAdapter
    from console.app import create_app
    from console.audit import AuditLog
    from console.context import Stores
    from console.lamps import LampControl
    from console.live import Hub, MqttFeed, case_open_refresher
    from rules.store import open_alarm_store

    cfg = load_console_config(config_path)
    settings = cfg.console
    try:
        ts_store = open_store(settings.ingest_store_url)
        case_store = open_case_store(settings.case_store_url)
        alarm_store = open_alarm_store(settings.alarm_store_url)
    except Exception as exc:
        raise ConsoleError(f"cannot open stores: {exc}") from exc
    cases = CaseAdapter(case_store)
    hub = Hub(queue_max=settings.sse_queue_max)

    on_case_open = case_open_refresher(hub, cases.get, lambda view: serialize.case(view, time.time()))
    lamps = LampControl(timeout_s=settings.lamp_command_timeout_s)
    feed = MqttFeed(cfg.mqtt, hub, on_case_open=on_case_open, on_cmd_result=lamps.on_result) \
        if settings.live_feed else None
    lamps.port = feed
    stores = Stores(devices=DeviceAdapter(ts_store), alarms=RulesAlarmAdapter(alarm_store), cases=cases,
                    audit=AuditLog(settings.audit_store_url), acks=feed, lamps=lamps if feed else None)

    def reload() -> ConsoleSettings:
        return load_console_config(config_path).console

    app = create_app(settings, stores, hub=hub, reload=reload, background=feed.run if feed else None,
                     lighting=cfg.lighting)
    return app, settings


def server_config(app: Any, host: str, port: int, **kwargs: Any) -> Any:
    """The uvicorn config every console server uses (``citywatch console`` and ``citywatch up``).

    ``proxy_headers=False``: uvicorn's default believes ``X-Forwarded-For`` from 127.0.0.1,
    so any local client could pick its address and slip past the login rate limit. Which
    proxies to believe is the console's decision (``console.trusted_proxies``).
    """
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, proxy_headers=False, **kwargs)


def cmd_console(args: argparse.Namespace) -> int:
    if args.hash_password:
        from console.auth import hash_password

        pw = getpass.getpass("password: ")
        if not pw or pw != getpass.getpass("again: "):
            print("passwords differ or are empty")
            return 1
        print(hash_password(pw))
        return 0
    if args.new_api_key:
        from console.auth import hash_api_key, new_api_key

        key = new_api_key()
        print(f"key (give to {args.new_api_key}): {key}")
        print(f"config: - {{name: {args.new_api_key}, key_sha256: {hash_api_key(key)}}}")
        return 0
    import uvicorn

    app, settings = build(str(Path(args.config)))
    host = args.host or settings.listen_host
    port = args.port if args.port is not None else settings.listen_port
    log.info("console on http://%s:%d/ (users: %s)", host, port, ", ".join(u.username for u in settings.users))
    # open SSE streams never finish on their own: give them 5 s on shutdown, then close them
    server = uvicorn.Server(server_config(app, host, port, log_level="info", timeout_graceful_shutdown=5))
    asyncio.run(server.serve())
    return 0
