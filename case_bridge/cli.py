"""``citywatch cases -c configs/cloud.example.yaml``: run the case bridge until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from case_bridge.config import Catalog, NotifySettings

log = logging.getLogger("citywatch.cases")


def args_cases(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", default="configs/cloud.example.yaml", help="the cloud config")
    parser.add_argument("--store", default=None, help="case store URL, overrides cases.store_url")
    parser.add_argument("--mqtt-url", default=None, help="broker URL, overrides the mqtt section")
    parser.add_argument("--client-id", default=None, help="MQTT client id, overrides cases.client_id")
    parser.add_argument("--check", action="store_true", help="validate the config and tables, then exit")
    parser.add_argument("--standby", action="store_true",
                        help="run as active/standby pair (PostgreSQL lock): consume only while holding it")


def resolve(path: str, config_path: Path) -> Path:
    """A table path as given (relative to the working directory), else relative to the config's repo."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    for base in (config_path.parent, config_path.parent.parent):
        if (base / p).exists():
            return base / p
    return p


async def _either(a: asyncio.Event, b: asyncio.Event, out: asyncio.Event) -> None:
    """Set ``out`` once ``a`` or ``b`` is set."""
    waits = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
    out.set()


def check_unit_targets(notify: NotifySettings, catalog: Catalog, source: str) -> None:
    """``notify.unit_targets`` names units of the units table (the two live in different files)."""
    from contracts.errors import ConfigError

    for unit in notify.unit_targets:
        if catalog.unit(unit) is None:
            raise ConfigError(source, f"notify.unit_targets.{unit}", unit, "not a unit of the units table")


def cmd_cases(args: argparse.Namespace) -> int:
    from case_bridge.bridge import CaseBridge
    from case_bridge.config import load_cases_settings, load_catalog, load_notify_settings
    from case_bridge.notify import Notifier
    from case_bridge.store import open_case_store
    from contracts.config import MqttSettings, parse_cloud_section
    from lighting.schedule import LightingSettings
    from lighting.scheduler import LampScheduler

    cfg_path = Path(args.config)
    text = cfg_path.read_text(encoding="utf-8")
    settings = load_cases_settings(cfg_path)
    notify = load_notify_settings(cfg_path)
    mqtt_settings = settings.mqtt or parse_cloud_section(text, "mqtt", MqttSettings, source=str(cfg_path))
    lighting = parse_cloud_section(text, "lighting", LightingSettings, source=str(cfg_path))
    updates: dict[str, object] = {}
    if args.store:
        updates["store_url"] = args.store
    if args.client_id:
        updates["client_id"] = args.client_id
    if updates:
        settings = settings.model_copy(update=updates)
    if args.mqtt_url:
        mqtt_settings = mqtt_settings.model_copy(update={"url": args.mqtt_url})
    catalog = load_catalog(resolve(settings.categories_file, cfg_path), resolve(settings.units_file, cfg_path))
    check_unit_targets(notify, catalog, str(cfg_path))
    if args.check:
        print(f"ok: {len(catalog.table.categories)} categories, {len(catalog.table.rules)} rules, "
              f"{len(catalog.units.units)} units, {len(notify.targets)} notify targets, "
              f"{len(lighting.circuits) if lighting.enabled else 0} lamp circuits on astronomical switching")
        return 0
    store = open_case_store(settings.store_url, catalog, verify_hold_s=settings.verify_hold_s,
                            verify_grace_s=settings.verify_grace_s)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        notifier = Notifier(notify, store.notices) if notify.targets else None
        bridge = CaseBridge(store, mqtt_settings, settings, notifier)
        lamps = LampScheduler(lighting.mqtt or mqtt_settings, lighting) if lighting.enabled else None

        async def serve(run_stop: asyncio.Event) -> None:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(bridge.run(run_stop), name="cases")
                if lamps is not None:  # this process runs once per district: the one place to switch lamps from
                    tg.create_task(lamps.run(run_stop), name="lighting")

        if not args.standby:
            log.info("case bridge: alarms from %s into %s", mqtt_settings.url, settings.store_url.split("@")[-1])
            await serve(stop)
            return
        from case_bridge.standby import LeadershipLost, active_lock

        async with active_lock(settings.store_url, stop) as lost:
            if stop.is_set():
                return
            run_stop = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(_either(stop, lost, run_stop))
                await serve(run_stop)
            if lost.is_set() and not stop.is_set():
                raise LeadershipLost("the active lock's database connection failed")

    try:
        asyncio.run(main())
    finally:
        store.close()
    return 0
