"""Backtest parity: the cases the backtest predicts are the cases the live bridge opens for the same data.

One recorded scenario (3 h at night: two water gauges in a storm, a lifted and a tilted manhole
cover, a dead lamp circuit and a lamp on a sagging feeder, two weigh-in-motion scales with
overloaded vehicles) goes

* live: gateway birth -> the bridge's device registry (case store); readings and events in time
  order through the rule engine (``rules.evaluate``, one call per minute as the runner ticks),
  each alarm over its wire encoding into ``CaseBridge.handle_alarm`` and the real case store;
* backtest: the same readings, events and birth into the ingest store, read back by
  ``load_history`` and replayed by ``rules.backtest`` into ``case_bridge.backtest``.

Nobody works the live cases, so the backtest runs with cases left open (``--cases-stay-open``).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from case_bridge.backtest import predict_cases
from case_bridge.bridge import CaseBridge
from case_bridge.config import CasesSettings
from case_bridge.store import CaseStore
from contracts.config import MqttSettings
from contracts.payloads import Status, decode_alarm, encode_alarm
from contracts.reading import DeviceInfo, Event, Quality, Reading
from rules.backtest import backtest
from rules.evaluate import EngineState, GatewayStatus, RuleSet, evaluate
from rules.history import load_history
from rules.specs import load_rules
from tests.support.cases import pg_store, sqlite_store

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
RULES = REPO / "configs" / "rules" / "default.yaml"
T0 = 1_764_597_600.0  # 2025-12-01 14:00 UTC = 22:00 in Hangzhou: lamps are on
SPAN_S = 3 * 3600
GW = "gw-parity"

DEVICES = (
    DeviceInfo("wl-0001", "radar", "water_gauge", 30.25, 120.13, grid="330106001001", interval_s=60.0),
    DeviceInfo("wl-0003", "radar", "water_gauge", 30.25, 120.14, grid="330106001002", interval_s=60.0),
    DeviceInfo("mh-0001", "tilt", "manhole", 30.26, 120.14, grid="330106002001", component_id="3301060101000001",
               interval_s=60.0),
    DeviceInfo("mh-0002", "tilt", "manhole", 30.26, 120.15, grid="330106002001", component_id="3301060111000002",
               owner="gas", interval_s=60.0),
    DeviceInfo("lamp-0001", "lamp", "lamp", 30.27, 120.13, grid="330106001001", circuit="c-7", interval_s=60.0),
    DeviceInfo("lamp-0002", "lamp", "lamp", 30.27, 120.13, grid="330106001001", circuit="c-7", interval_s=60.0),
    DeviceInfo("lamp-0003", "lamp", "lamp", 30.27, 120.14, grid="330106001001", circuit="c-9", interval_s=60.0),
    DeviceInfo("wim-0001", "wim", "wim", 30.28, 120.16, grid="330106001001", interval_s=60.0),
    DeviceInfo("wim-0002", "wim", "wim", 30.28, 120.17, grid="330106001002", interval_s=60.0),
)


def scenario() -> tuple[list[Reading], list[Event]]:
    readings: list[Reading] = []
    events: list[Event] = []
    for k in range(SPAN_S // 60):
        t = T0 + 60 * k
        hump = max(0.0, math.sin(math.pi * (k - 20) / 100.0)) if 20 <= k <= 120 else 0.0
        # wl-0001 floods twice: its alarm clears in between, nobody handled the case, the second raise attaches
        twice = max(0.0, math.sin(math.pi * ((k - 20) % 80) / 40.0)) if 20 <= k < 140 and (k - 20) % 80 < 40 else 0.0
        readings.append(Reading("wl-0001", "depth", t, round(0.02 + 0.30 * twice, 3), "m", Quality.GOOD))  # major
        readings.append(Reading("wl-0003", "depth", t, round(0.02 + 0.45 * hump, 3), "m", Quality.GOOD))  # critical
        readings.append(Reading("mh-0001", "tilt", t, 1.0, "deg", Quality.GOOD))
        readings.append(Reading("mh-0002", "tilt", t, 15.0 if 60 <= k < 90 else 1.0, "deg", Quality.GOOD))
        for lamp in ("lamp-0001", "lamp-0002", "lamp-0003"):
            dead = lamp != "lamp-0003" and k >= 45  # the c-7 feeder dies: relay on, no current
            readings.append(Reading(lamp, "relay", t, 1.0, "", Quality.GOOD))
            readings.append(Reading(lamp, "current", t, 0.0 if dead else 0.4, "A", Quality.GOOD))
            volts = 180.0 if lamp == "lamp-0003" and 100 <= k < 150 else 225.0
            readings.append(Reading(lamp, "voltage", t, volts, "V", Quality.GOOD))
        readings.append(Reading("wim-0001", "battery", t, 3.9, "V", Quality.GOOD))
        readings.append(Reading("wim-0002", "battery", t, 3.9, "V", Quality.GOOD))
    # the cover is lifted twice (one incident), then the tilted cover mh-0002 above
    events.append(Event("mh-0001", "cover_open", "c1", T0 + 1830.0, {}))
    events.append(Event("mh-0001", "cover_open", "c2", T0 + 1900.0, {}))
    # a vehicle every 6 min on each scale; some overloaded (6 axles: 49 t + 5 %), one also over the axle limit
    for i in range(30):
        for scale, heavy in (("wim-0001", i % 3 == 0), ("wim-0002", i in (5, 17))):
            gross = 62_000 if heavy else 38_000
            axles = [14_000, *[9_600] * 5] if heavy and i == 6 else [gross // 6] * 6
            events.append(Event(scale, "vehicle", f"{scale}-v{i}", T0 + 360 * i + 17.0,
                                {"gross_kg": gross, "axles": 6, "axle_kg": axles}))
    return readings, events


def live_cases(store: CaseStore, readings: list[Reading], events: list[Event]) -> list[tuple[Any, ...]]:
    """The live path: birth -> registry; rule engine per minute -> alarm wire -> bridge -> case store."""
    clock = [T0]
    bridge = CaseBridge(store, MqttSettings(), CasesSettings(), clock=lambda: clock[0])
    store.devices.remember(DEVICES, T0)
    bridge.registry.update(store.devices.known())  # as CaseBridge.run does at start
    rs = RuleSet(load_rules([str(RULES)]))
    state = EngineState()
    items = sorted([*readings, *events], key=lambda x: x.ts)
    state, _ = evaluate(rs, state, [GatewayStatus(GW, "online", T0 - 1.0, DEVICES)], T0 - 1.0)
    i = 0
    for minute in range(SPAN_S // 60 + 1):
        now = T0 + 60.0 * minute + 59.0
        chunk = []
        while i < len(items) and items[i].ts <= now:
            chunk.append(items[i])
            i += 1
        state, transitions = evaluate(rs, state, chunk, now)
        for tr in transitions:
            clock[0] = now
            bridge.handle_alarm(decode_alarm(encode_alarm(tr)))
    rows = []
    with store.db.read() as tx:
        for cid, code, key, sev, urg in tx.execute(
                "SELECT id, service_code, corr_key, severity, urgency FROM cases ORDER BY id"):
            alarms = [r[0] for r in tx.execute("SELECT alarm_id FROM case_links WHERE case_id = ?", (cid,))]
            rows.append((code, key, sev, urg, tuple(sorted(alarms))))
    return rows


@pytest.fixture(params=["sqlite", "postgresql"])
def case_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CaseStore]:
    if request.param == "sqlite":
        with sqlite_store(tmp_path) as s:
            yield s
    else:
        with pg_store(request.getfixturevalue("pg_dsn")) as s:
            yield s


def test_backtest_predicts_the_cases_the_live_bridge_opens(
        case_store: CaseStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from citywatch.cli import main
    from cloud_ingest.store import open_store
    from cloud_ingest.store.base import StatusUpdate, WriteBatch

    readings, events = scenario()
    live = live_cases(case_store, readings, events)

    url = f"sqlite:///{tmp_path}/ingest.db"
    ingest = open_store(url)
    birth = StatusUpdate(GW, Status("online", "b1", "0.1", list(DEVICES)), T0 - 1.0)
    ingest.write(WriteBatch(readings=readings, events=[(GW, e) for e in events], statuses=[birth]))
    ingest.close()
    history = load_history(url, T0, T0 + SPAN_S + 60.0)
    assert len(history.events) == len(events)
    report = backtest(load_rules([str(RULES)]), history)
    predicted = [(c.service_code, c.corr_key, c.severity, c.urgency, tuple(sorted(c.alarms)))
                 for c in predict_cases(report.transitions, history.registry, fixed_on_clear=False)]

    # the scenario reaches every kind the issue names: water, cover incidents, lamp circuits, WIM (how many WIM
    # cases depends on the category table's WIM correlation; parity must hold whatever it says)
    kinds = Counter(code for code, *_ in live)
    assert set(kinds) == {"S0111", "B0101", "B0111", "B0118", "S9901"}, live
    assert kinds["S0111"] == 2 and kinds["B0118"] == 2, live  # one case per gauge, one per lamp circuit
    assert sorted(predicted) == sorted(live)

    # the CLI's per-rule counts agree with the store, cases opened by each rule's alarm
    args = ["backtest", "--rules", str(RULES), "--from", str(T0), "--to", str(T0 + SPAN_S + 60.0), "--store", url,
            "--no-progress", "--cases-stay-open", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    (rep,) = out["reports"].values()
    by_rule = {name: r["cases_opened"] for name, r in rep["rules"].items() if r["cases_opened"]}
    with case_store.db.read() as tx:
        stored = {rule: int(n) for rule, n in tx.execute("SELECT rule, COUNT(*) FROM cases GROUP BY rule")}
    assert by_rule == stored


def test_backtest_takes_the_registry_from_the_case_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An ingest store that missed the births (``--case-store``: the bridge's registry) predicts the same."""
    from citywatch.cli import main
    from cloud_ingest.store import open_store
    from cloud_ingest.store.base import WriteBatch

    readings, events = scenario()
    with sqlite_store(tmp_path) as store:
        live_cases(store, readings, events)  # the bridge remembers the devices from their birth
        with store.db.read() as tx:
            stored = {rule: int(n) for rule, n in tx.execute("SELECT rule, COUNT(*) FROM cases GROUP BY rule")}
    url = f"sqlite:///{tmp_path}/ingest.db"
    ingest = open_store(url)
    ingest.write(WriteBatch(readings=readings, events=[(GW, e) for e in events]))  # no birth message
    ingest.close()
    args = ["backtest", "--rules", str(RULES), "--from", str(T0), "--to", str(T0 + SPAN_S + 60.0), "--store", url,
            "--no-progress", "--cases-stay-open", "--json"]

    def cases_by_rule(extra: list[str]) -> dict[str, int]:
        assert main([*args, *extra]) == 0
        (rep,) = json.loads(capsys.readouterr().out)["reports"].values()
        return {name: r["cases_opened"] for name, r in rep["rules"].items() if r["cases_opened"]}

    assert cases_by_rule([]) != stored  # without a registry lamps, covers and scales are unknown kinds
    assert cases_by_rule(["--case-store", f"sqlite:///{tmp_path}/cases.db"]) == stored
