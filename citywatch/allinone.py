"""``citywatch up``: the whole district in one process, one asyncio loop, one TaskGroup.

An embedded broker (amqtt, MQTT 3.1.1), SQLite stores under ``./data/``, the simulator with the
demo district, one edge agent per simulated gateway, ingest, rules, the case bridge and the
console. Every part is the same code the production processes run; the all-in-one only writes
their config files (``data/cloud.yaml``, ``data/gateways/*.yaml``) and runs them side by side,
so what a newcomer sees is what a city deploys. ``--broker`` / ``--db`` switch to real services.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

from citywatch.embedded_broker import EmbeddedBroker
from contracts.config import parse_cloud_section, parse_mqtt_url
from contracts.errors import ConfigError

log = logging.getLogger("citywatch.up")

REPO = Path(__file__).resolve().parent.parent
DEMO_LOGINS = (
    ("duty", "duty_officer", "值班员 duty officer"),
    ("handler-a", "case_handler", "灵隐街道处置员 case handler, lingyin-street"),
    ("sup", "supervisor", "监督员 supervisor"),
    ("admin", "admin", "administrator"),
)
DEMO_PASSWORD = "citywatch-demo"  # the example config's hashes; printed so a newcomer can log in


def args_up(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="data", help="directory for stores, outboxes and generated configs")
    parser.add_argument("--scenario", default=str(REPO / "configs/sim/demo.yaml"), help="simulator config")
    parser.add_argument("--speed", type=float, default=None, help="time compression of the scenario (e.g. 10)")
    parser.add_argument("--broker", default=None, help="use this broker (mqtt://host:port) instead of the embedded one")
    parser.add_argument("--db", default=None, help="postgresql://... for readings, alarms and cases instead of SQLite")
    parser.add_argument("--port", type=int, default=8080, help="console port (a free one is used if taken)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds (tests, demos)")


def _listen(host: str, preferred: int) -> socket.socket:
    """The console's listening socket, bound before anything else in the district takes ports
    (the simulator's TCP buses bind ephemeral ports and could otherwise take a just-probed one)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, preferred))
    except OSError:
        sock.bind((host, 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def cloud_document(
    data: Path, broker_url: str, protocol: str, db_url: str | None, console_port: int
) -> dict[str, Any]:
    """The example cloud config, pointed at this run's broker, stores and ports."""
    doc: dict[str, Any] = yaml.safe_load((REPO / "configs/cloud.example.yaml").read_text(encoding="utf-8"))
    sqlite = f"sqlite:///{data.resolve()}"
    ts_url = db_url or f"{sqlite}/citywatch.db"
    alarm_url = db_url or f"{sqlite}/rules.db"
    case_url = db_url or f"{sqlite}/cases.db"
    doc["mqtt"] = {"url": broker_url, "keepalive_s": 30, "protocol": protocol}
    doc["ingest"].update(store_url=ts_url, share_group=None, metrics_port=None, client_id="up-ingest")
    doc["rules"].update(
        store_url=alarm_url, share_group=None, client_id="up-rules", metrics_port=None,
        files=[str(REPO / f) if not Path(f).is_absolute() else f for f in doc["rules"]["files"]],
    )
    doc["cases"].update(
        store_url=case_url, client_id="up-cases",
        categories_file=str(REPO / doc["cases"]["categories_file"]),
        units_file=str(REPO / doc["cases"]["units_file"]),
        mqtt={"url": broker_url, "protocol": protocol},
    )
    doc["console"].update(
        listen_port=console_port, ingest_store_url=ts_url, alarm_store_url=alarm_url, case_store_url=case_url,
        audit_store_url=f"{sqlite}/console.db", production=False,
        rules_files=[str(REPO / f) for f in doc["console"]["rules_files"]],
    )
    doc["console"]["map"]["district_geojson"] = str(REPO / doc["console"]["map"]["district_geojson"])
    doc["notify"] = {"targets": []}  # no internet here; configure robots/e-mail in production
    return doc


class _Uvicorn:
    """uvicorn inside our loop: our signal handling, its graceful shutdown."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        import uvicorn

        from console.cli import server_config

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Any:  # the TaskGroup owns signals
                yield

            def install_signal_handlers(self) -> None:
                return None

        self.server = Server(server_config(app, host, port, log_level="warning", lifespan="on"))

    async def serve(self, stop: asyncio.Event, sock: socket.socket) -> None:
        async def stopper() -> None:
            await stop.wait()
            self.server.should_exit = True

        task = asyncio.create_task(stopper())
        try:
            await self.server.serve(sockets=[sock])
        finally:
            task.cancel()


async def _until(stop: asyncio.Event, run: Callable[[], Awaitable[None]]) -> None:
    """Run a part that has no stop event of its own; cancel it when the district stops."""
    task = asyncio.ensure_future(run())
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    waiter.cancel()
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


def _step(msg: str) -> None:
    print(f"  • {msg}", flush=True)


async def run_district(args: argparse.Namespace, stop: asyncio.Event) -> None:
    from case_bridge.bridge import CaseBridge
    from case_bridge.config import load_cases_settings, load_catalog
    from case_bridge.store import open_case_store
    from cloud_ingest.config import load_settings as load_ingest_settings
    from cloud_ingest.service import Ingester
    from cloud_ingest.store import open_store
    from console.cli import build as build_console
    from edge_agent.agent import Agent
    from edge_agent.config import load_agent_config
    from firmware_sim import SimServer, load_sim_config
    from lighting.schedule import LightingSettings
    from lighting.scheduler import LampScheduler
    from rules.config import load_settings as load_rules_settings
    from rules.runner import RuleRunner
    from rules.specs import load_rules
    from rules.store import open_alarm_store

    data = Path(args.data)
    (data / "gateways").mkdir(parents=True, exist_ok=True)
    (data / "outbox").mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    print("citywatch up: starting the district", flush=True)
    console_sock = _listen("127.0.0.1", args.port)
    console_port = int(console_sock.getsockname()[1])

    broker: EmbeddedBroker | None = None
    if args.broker:
        parse_mqtt_url(args.broker)
        broker_url = args.broker
        _step(f"broker: using {broker_url}")
    else:
        broker = EmbeddedBroker()
        await broker.start()
        broker_url = broker.url
        _step(f"broker: embedded amqtt on {broker_url}")

    try:
        sim_cfg = load_sim_config(args.scenario)
        async with SimServer(sim_cfg, speed=args.speed) as sim:
            _step(f"simulator: {len(sim_cfg.devices)} devices on {len(sim.gateways)} gateways "
                  f"(scenario {Path(args.scenario).name}, speed x{sim.clock.speed:g})")
            protocol = "5" if broker is None else "3.1.1"  # amqtt speaks MQTT 3.1.1 only
            extra = {"mqtt": {"url": broker_url, "protocol": protocol}}
            gw_paths = sim.write_gateway_configs(data / "gateways", extra=extra)
            agent_cfgs = []
            for gw, path in sorted(gw_paths.items()):
                doc = yaml.safe_load(path.read_text(encoding="utf-8"))
                doc["outbox"] = {"path": str((data / "outbox" / f"{gw}.db").resolve())}
                doc["publish"] = {"linger_s": 0.5, "ack_timeout_s": 10.0, "protocol": protocol}
                path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
                agent_cfgs.append(load_agent_config(path))

            cloud_path = data / "cloud.yaml"
            cloud_path.write_text(
                "# Generated by `citywatch up` from configs/cloud.example.yaml for this run.\n"
                + yaml.safe_dump(cloud_document(data, broker_url, protocol, args.db, console_port), sort_keys=False,
                                 allow_unicode=True),
                encoding="utf-8",
            )
            mqtt_settings, ingest_settings = load_ingest_settings(cloud_path)
            _, rules_settings = load_rules_settings(cloud_path)
            cases_settings = load_cases_settings(cloud_path)
            catalog = load_catalog(Path(cases_settings.categories_file), Path(cases_settings.units_file))

            ts_store = open_store(ingest_settings.store_url)
            alarm_store = open_alarm_store(rules_settings.store_url)
            case_store = open_case_store(cases_settings.store_url, catalog, verify_hold_s=cases_settings.verify_hold_s,
                                         verify_grace_s=cases_settings.verify_grace_s)
            app, _ = build_console(str(cloud_path))
            cases_mqtt = cases_settings.mqtt or mqtt_settings
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(Ingester(mqtt_settings, ingest_settings, ts_store).run(stop), name="ingest")
                    rules = load_rules(rules_settings.files)
                    tg.create_task(RuleRunner(mqtt_settings, rules_settings, rules, alarm_store).run(stop),
                                   name="rules")
                    tg.create_task(CaseBridge(case_store, cases_mqtt, cases_settings).run(stop), name="cases")
                    lighting = parse_cloud_section(cloud_path.read_text(encoding="utf-8"), "lighting",
                                                   LightingSettings, str(cloud_path))
                    if lighting.enabled:  # beside the case bridge, as `citywatch cases` runs it
                        tg.create_task(LampScheduler(lighting.mqtt or cases_mqtt, lighting).run(stop),
                                       name="lighting")
                    n_cat = len(catalog.table.categories)
                    _step(f"cloud: ingest, {len(rules)} rules, case bridge ({n_cat} categories)")
                    for cfg in agent_cfgs:
                        tg.create_task(_until(stop, Agent(cfg).run), name=f"agent-{cfg.gateway.id}")
                    _step(f"edge: {len(agent_cfgs)} agents with on-disk outboxes under {data / 'outbox'}")
                    tg.create_task(_Uvicorn(app, "127.0.0.1", console_port).serve(stop, console_sock),
                                   name="console")
                    url = f"http://127.0.0.1:{console_port}/"
                    print(f"\ncitywatch is up in {time.monotonic() - t0:.1f} s — console: {url}")
                    print(f"demo logins (password '{DEMO_PASSWORD}'):")
                    for user, role, desc in DEMO_LOGINS:
                        print(f"  {user:<10} {role:<13} {desc}")
                    print("Ctrl-C stops everything.\n", flush=True)
                    if args.duration is not None:
                        tg.create_task(_stop_after(stop, args.duration), name="duration")
            finally:
                ts_store.close()
                alarm_store.close()
                case_store.close()
    finally:
        if broker is not None:
            await broker.stop()
        console_sock.close()
    print("citywatch up: stopped cleanly", flush=True)


async def _stop_after(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    stop.set()


def cmd_up(args: argparse.Namespace) -> int:
    if args.db is not None and not args.db.startswith("postgresql://"):
        raise ConfigError("--db", "", args.db, "expected a postgresql:// URL")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_district(args, stop)

    logging.getLogger("amqtt").setLevel(logging.WARNING)
    logging.getLogger("transitions").setLevel(logging.WARNING)
    failed = False
    try:
        asyncio.run(main())
    except* ConfigError as group:
        for exc in group.exceptions:
            print(f"citywatch up: error: {exc}", file=sys.stderr)
        failed = True
    return 1 if failed else 0
