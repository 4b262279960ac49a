"""Demo and test data: a small district of devices, readings, alarms and cases in real stores.

Used by the console tests (API, Open311, browser) and bench/console.py (not by `citywatch up`,
which runs the real simulator, ingest, rules and bridge instead); it writes through the stores'
public APIs only, exactly as ingest and the bridge would.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from case_bridge import CaseStore
from cloud_ingest.store import StatusUpdate, Store, WriteBatch
from contracts.alarms import AlarmTransition, Severity, TransitionKind
from contracts.metrics import METRIC_UNITS
from contracts.payloads import Status
from contracts.reading import DeviceInfo, Reading
from rules.store import AlarmStore

GRIDS = ("330106001001", "330106001002", "330106002001", "330102001001")
KINDS = (("water_gauge", "wl", "radar-wl"), ("manhole", "mh", "tilt-mh"), ("lamp", "lamp", "lamp-ctl"),
         ("wim", "wim", "wim-scale"))
LAT0, LON0 = 30.2480, 120.1300


@dataclass
class Demo:
    devices: list[DeviceInfo] = field(default_factory=list)
    alarm_ids: list[str] = field(default_factory=list)
    case_ids: dict[str, list[int]] = field(default_factory=dict)  # unit -> case ids


def make_devices(n: int, seed: int = 7) -> list[DeviceInfo]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind, prefix, profile = KINDS[i % len(KINDS)]
        grid = GRIDS[(i // len(KINDS)) % len(GRIDS)]
        gi = GRIDS.index(grid)
        lat = LAT0 + 0.004 * (gi // 2) + rng.uniform(0, 0.003)
        lon = LON0 + 0.005 * (gi % 2) + rng.uniform(0, 0.004)
        component = f"330106{'0101' if kind == 'manhole' else '0118'}{i:06d}" if kind in ("manhole", "lamp") else None
        circuit = f"c-xihu-{gi % 2 + 1:02d}" if kind == "lamp" else None
        out.append(DeviceInfo(id=f"{prefix}-{i:04d}", profile=profile, kind=kind, lat=round(lat, 6),
                              lon=round(lon, 6), grid=grid, component_id=component, circuit=circuit, interval_s=60.0))
    return out


def seed_timeseries(store: Store, devices: list[DeviceInfo], now: float, *, hours: float = 24.0,
                    step_s: float = 600.0, gw: str = "gw-demo-01") -> None:
    """Register the devices (a birth message) and write a diurnal-ish history per device."""
    birth = Status("online", "boot1", "0.1.0", devices)
    store.write(WriteBatch(statuses=[StatusUpdate(gw, birth, now - hours * 3600)]))
    readings: list[Reading] = []
    steps = int(hours * 3600 / step_s)
    for k, d in enumerate(devices):
        for s in range(steps + 1):
            t = now - hours * 3600 + s * step_s
            phase = s / max(steps, 1)
            if d.kind == "water_gauge":
                readings.append(Reading(d.id, "depth", t, round(0.02 + 0.25 * max(0.0, math.sin(math.pi * phase)) *
                                                                  (1 + k % 3), 3), METRIC_UNITS["depth"]))
            elif d.kind == "manhole":
                readings.append(Reading(d.id, "tilt", t, round(0.5 + 0.1 * math.sin(6 * phase), 3), "deg"))
            elif d.kind == "lamp":
                lit = (s % 144) > 72
                readings += [Reading(d.id, "power", t, 120.0 if lit else 0.0, "W"),
                             Reading(d.id, "relay", t, 1.0 if lit else 0.0, ""),
                             Reading(d.id, "dim_level", t, 100.0, "%")]
            else:
                readings.append(Reading(d.id, "record_count", t, float(s), ""))
        if len(readings) > 20_000:
            store.write(WriteBatch(readings=readings))
            readings = []
    if readings:
        store.write(WriteBatch(readings=readings))


def raise_alarm(cases: CaseStore, device: DeviceInfo, rule: str, severity: Severity, *, t: float, value: float,
                alarm_id: str | None = None, alarms: AlarmStore | None = None) -> AlarmTransition:
    """What the rule engine does (commit the transition) and the bridge then does (apply it)."""
    aid = alarm_id or f"al-{device.id}-{rule}-{int(t)}"
    tr = AlarmTransition(aid, device.id, rule, TransitionKind.RAISED, severity, t, value,
                         {"lat": device.lat, "lon": device.lon})
    if alarms is not None:
        alarms.commit(None, [tr])
    cases.apply_alarm(tr, device, now=t)
    return tr


def seed_cases(cases: CaseStore, devices: list[DeviceInfo], now: float, alarms: AlarmStore | None = None) -> Demo:
    """Alarms on two gauges (one critical: auto-dispatched), citizen reports for two units."""
    demo = Demo(devices=list(devices))
    gauges = [d for d in devices if d.kind == "water_gauge"]
    for i, g in enumerate(gauges[:2]):
        sev = Severity.CRITICAL if i == 0 else Severity.MAJOR
        tr = raise_alarm(cases, g, "road-water-depth", sev, t=now - 3600 * (i + 1), value=0.31 + 0.1 * i,
                         alarms=alarms)
        demo.alarm_ids.append(tr.alarm_id)
    for unit, n in (("lingyin-street", 3), ("hubin-street", 3)):
        for j in range(n):
            c = cases.create_reported(category="S0111", description=f"路面积水 {unit} #{j}", lat=LAT0, lon=LON0,
                                      address=f"灵隐路 {j} 号", source="hotline", source_key=f"demo-{unit}-{j}",
                                      reporter="12319", unit=unit, now=now - 7200 + 60 * j)
            demo.case_ids.setdefault(unit, []).append(c.id)
    # one case of each unit filed and dispatched, so handlers have work to do
    for unit, ids in demo.case_ids.items():
        cases.transition(ids[0], "file", "sup", role="supervisor", now=now - 3000)
        cases.transition(ids[0], "dispatch", "sup", role="dispatcher", unit=unit, now=now - 2900)
    return demo


REPO = Path(__file__).resolve().parents[2]
DISTRICT = REPO / "configs/map/demo-district.geojson"
RULES = REPO / "configs/rules/default.yaml"
PASSWORD = "citywatch-demo"  # demo/test logins only; production users come from the config file

DEMO_USERS = (
    ("duty", "duty_officer", None),
    ("handler-a", "case_handler", "lingyin-street"),
    ("handler-b", "case_handler", "hubin-street"),
    ("sup", "supervisor", None),
    ("admin", "admin", None),
)
DEMO_API_KEY = "cwk_demo-hotline-12319-key-0123456789abcdef"


@dataclass
class RecordingAcks:
    """An acknowledgement sink for runs without a broker: keeps what would have been published."""

    sent: list[tuple[str, str, str, float, str]] = field(default_factory=list)
    cleared: list[tuple[str, str, str, float, str]] = field(default_factory=list)

    def send_ack(self, alarm_id: str, device: str, actor: str, t: float, note: str, *, action: str = "ack") -> None:
        (self.cleared if action == "clear" else self.sent).append((alarm_id, device, actor, t, note))


@functools.cache
def _demo_hash() -> str:
    from console.auth import hash_password

    return hash_password(PASSWORD)


def demo_settings(**overrides: object) -> Any:
    from console.auth import hash_api_key
    from console.config import ConsoleSettings

    pw_hash = _demo_hash()
    base: dict[str, object] = {
        "secret_key": "demo-secret-demo-secret-demo-secret-0001",
        "production": False,
        "users": [{"username": u, "password_hash": pw_hash, "role": r, "unit": unit} for u, r, unit in DEMO_USERS],
        "api_keys": [{"name": "hotline-12319", "key_sha256": hash_api_key(DEMO_API_KEY)}],
        "overview_cache_s": 0.0,  # tests look at the stores' state right after they change it
    }
    if DISTRICT.exists():  # a source checkout: the demo district's map and the rule engine's own rules
        base["map"] = {"district_geojson": str(DISTRICT)}
        base["rules_files"] = [str(RULES)]
    base.update(overrides)
    return ConsoleSettings.model_validate(base)


@dataclass
class DemoEnv:
    app: Any
    ts_store: Store
    case_store: CaseStore
    alarm_store: AlarmStore
    demo: Demo
    acks: Any
    hub: Any
    settings: Any

    def close(self) -> None:
        """Close every store (each holds SQLite file descriptors; paho's select() breaks past 1024)."""
        self.ts_store.close()
        self.case_store.close()
        self.alarm_store.close()
        self.app.state.ctx.stores.audit.close()


def build_demo(directory: str, *, n_devices: int = 16, now: float, settings: Any = None, acks: Any = None,
               clock: Any = None, background: Any = None, hub: Any = None, lighting: Any = None,
               case_store: CaseStore | None = None) -> DemoEnv:
    """Real SQLite stores in ``directory``, seeded, and a console app over them (``case_store``: use
    this one instead, e.g. on PostgreSQL)."""
    from case_bridge import open_case_store
    from cloud_ingest.store import open_store
    from console.adapters import CaseAdapter, DeviceAdapter, RulesAlarmAdapter
    from console.app import create_app
    from console.audit import AuditLog
    from console.context import Stores
    from console.live import Hub
    from rules.store import open_alarm_store

    ts = open_store(f"sqlite:///{directory}/timeseries.db")
    cs = case_store if case_store is not None else open_case_store(f"sqlite:///{directory}/cases.db")
    al = open_alarm_store(f"sqlite:///{directory}/rules.db")
    devices = make_devices(n_devices)
    seed_timeseries(ts, devices, now)
    demo = seed_cases(cs, devices, now, alarms=al)
    settings = settings if settings is not None else demo_settings()
    acks = acks if acks is not None else RecordingAcks()
    hub = hub if hub is not None else Hub()
    stores = Stores(devices=DeviceAdapter(ts, cache_s=0.0), alarms=RulesAlarmAdapter(al), cases=CaseAdapter(cs),
                    audit=AuditLog(f"sqlite:///{directory}/console.db"), acks=acks)
    app = create_app(settings, stores, hub=hub, clock=clock or __import__("time").time, background=background,
                     lighting=lighting)
    return DemoEnv(app, ts, cs, al, demo, acks, hub, settings)
