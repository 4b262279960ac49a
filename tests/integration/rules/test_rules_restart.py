"""kill -9 the rule runner mid-storm, restart it: no alarm lost, none raised twice.

The runner runs as its own process (``citywatch rules``); a storm over six gauges is published
as telemetry while the runner is killed with SIGKILL three times and restarted at once (the
broker holds the readings in its persistent session meanwhile). A commit-to-ack delay is
injected so kills land between the state commit and the MQTT acks, where a naive engine would
raise again. The oracle is the pure evaluator over the same readings.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rules_wire import Collector, publisher, wait_for

from contracts import topics
from contracts.alarms import TransitionKind
from contracts.payloads import Status, encode_status, encode_telemetry
from contracts.reading import DeviceInfo, Reading
from rules.evaluate import EngineState, GatewayStatus, RuleSet, evaluate
from rules.specs import parse_rules
from rules.store import open_alarm_store

pytestmark = pytest.mark.integration

RULES = """
rules:
  - name: depth
    kind: threshold
    applies_to: {kinds: [water_gauge]}
    metric: depth
    levels:
      - {severity: minor, raise_at: 0.15, hysteresis: 0.02, raise_after_s: 10, clear_after_s: 20}
      - {severity: major, raise_at: 0.25, hysteresis: 0.03, raise_after_s: 10, clear_after_s: 20}
      - {severity: critical, raise_at: 0.40, hysteresis: 0.03, clear_after_s: 20}
    flapping: null
"""
GAUGES = [f"wl-{i:04d}" for i in range(1, 7)]
BATCHES = 240
KILL_AT = (50, 110, 170)


def storm(base: float) -> list[list[Reading]]:
    out = []
    for k in range(BATCHES):
        ts = base + 5.0 * k
        batch = []
        for i, dev in enumerate(GAUGES):
            peak = 0.2 + 0.08 * i
            depth = max(0.0, peak * math.sin(math.pi * k / 80.0 + i))  # three waves per gauge
            batch.append(Reading(dev, "depth", ts, round(depth, 3), "m"))
        out.append(batch)
    return out


def start_runner(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    # the fault harness widens commit->ack so kills land between them
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.faults", "rules", "--ack-delay-s", "0.05", "-c", str(cfg)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[3],
    )


def test_kill9_mid_storm_loses_and_duplicates_nothing(broker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES)
    db = tmp_path / "rules.db"
    cfg = tmp_path / "cloud.yaml"
    cfg.write_text(
        f"mqtt: {{url: '{broker.url}'}}\n"
        f"rules: {{files: ['{rules_file}'], store_url: 'sqlite:///{db}', client_id: rules-restart,"
        f" share_group: rules, tick_s: 0.2}}\n"
    )
    log = tmp_path / "runner.log"
    col = Collector(broker.host, broker.port)
    pub = publisher(broker.host, broker.port)
    infos = [DeviceInfo(d, "radar", "water_gauge", interval_s=5.0) for d in GAUGES]
    birth = encode_status(Status("online", "b1", "0.1", infos))
    pub.publish(topics.status("gw-1"), birth, qos=1, retain=True).wait_for_publish(5)
    batches = storm(float(int(time.time())))  # whole seconds: exact through the ms-resolution codec
    proc = start_runner(cfg, log)
    kills = 0
    try:
        wait_for(db.exists, 20, "runner start")
        time.sleep(1.0)  # subscribed (persistent session exists from now on)
        for k, batch in enumerate(batches):
            payload = encode_telemetry("gw-1", "b1", k + 1, batch)
            pub.publish(topics.telemetry("gw-1"), payload, qos=1).wait_for_publish(5)
            time.sleep(0.01)
            if k in KILL_AT:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                kills += 1
                proc = start_runner(cfg, log)
        last_ts = batches[-1][0].ts
        reader = open_alarm_store(f"sqlite:///{db}")

        def caught_up() -> bool:
            saved = reader.load_state()
            seen: dict[str, float] = {}
            for part in saved[1] if saved else []:
                seen.update(part.get("last_ts", {}))
            return all(seen.get(f"{d}|depth") == last_ts for d in GAUGES) and reader.unpublished() == []

        wait_for(caught_up, 60, "the runner to process every reading:\n" + log.read_text()[-3000:])
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        col.close()
        pub.loop_stop()

    # the oracle: the pure evaluator over the same readings
    rs = RuleSet(parse_rules(RULES, "rules.yaml"))
    st, want = evaluate(rs, EngineState(), [GatewayStatus("gw-1", "online", 0.0, tuple(infos))], 0.0)
    for batch in batches:
        st, trs = evaluate(rs, st, batch, 0.0)
        want.extend(trs)
    want_keys = {(t.alarm_id, t.kind.value, t.severity.value, t.t) for t in want}
    assert kills == 3 and len(want) > 30

    stored = {(t.alarm_id, t.kind.value, t.severity.value, t.t) for a in reader.list(limit=10_000)
              for t in reader.transitions(a.alarm_id)}
    assert stored == want_keys  # nothing lost, nothing extra in the store

    published = col.snapshot()
    keys = [(t.alarm_id, t.kind.value, t.severity.value, t.t) for t in published]
    assert set(keys) == want_keys  # every transition reached the broker, no foreign one
    raised_ids = [t.alarm_id for t in published if t.kind is TransitionKind.RAISED]
    want_raised = sorted(t.alarm_id for t in want if t.kind is TransitionKind.RAISED)
    assert sorted(set(raised_ids)) == want_raised  # no alarm raised twice under a new id
    # identical re-sends (kill between PUBLISH and PUBACK bookkeeping) are allowed; consumers dedup on the key
    dup = len(keys) - len(set(keys))
    print(f"restart: kills={kills} transitions={len(want)} published={len(keys)} identical_resends={dup}")
    reader.close()
