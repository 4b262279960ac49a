"""The runner's garbage-collection discipline: no automatic pass inside a step, survivors frozen after it.

Why it matters (docs/performance.md 7a): at 100 000 devices each automatic full collection re-traversed
the whole engine state, freed nothing, and stalled the step (and every reading queued behind it) for seconds.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from contracts import topics
from contracts.alarms import AlarmTransition, TransitionKind
from contracts.config import MqttSettings
from contracts.payloads import Status, encode_status, encode_telemetry
from contracts.reading import DeviceInfo, Reading
from mqttlink.source import Delivery
from rules.config import RulesSettings
from rules.runner import RuleRunner, settle_heap
from rules.specs import parse_rules
from rules.store import StateDelta

T0 = 1_764_057_600.0
RULES = """
rules:
  - name: depth
    kind: threshold
    applies_to: {kinds: [water_gauge]}
    metric: depth
    levels:
      - {severity: minor, raise_at: 0.15, hysteresis: 0.02}
    flapping: null
"""


class _Store:
    """Records commits; the store's SQL is covered by tests/integration/rules/test_rules_store.py."""

    url = "memory://"

    def __init__(self) -> None:
        self.commits: list[tuple[StateDelta | None, list[AlarmTransition]]] = []

    def commit(self, state: StateDelta | None, transitions: Sequence[AlarmTransition]) -> None:
        self.commits.append((state, list(transitions)))


@pytest.fixture
def thawed() -> Iterator[None]:
    """Each test starts with nothing frozen and leaves nothing frozen (gc state is process-wide)."""
    enabled = gc.isenabled()
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()
        if enabled:
            gc.enable()
        else:
            gc.disable()


def _runner(seen: list[bool]) -> tuple[RuleRunner, _Store]:
    def clock() -> float:
        seen.append(gc.isenabled())  # read while the step evaluates
        return T0 + 1

    store = _Store()
    cfg = RulesSettings(files=["t.yaml"], share_group=None)
    runner = RuleRunner(MqttSettings(url="mqtt://127.0.0.1:1"), cfg, parse_rules(RULES, "t.yaml"),
                        store, clock)  # type: ignore[arg-type]
    return runner, store


def _messages() -> list[Delivery]:
    info = DeviceInfo("wl-0001", "water_gauge", "water_gauge")
    birth = encode_status(Status("online", "b1", "test", [info], {}))
    tele = encode_telemetry("gw-1", "b1", 1, [Reading("wl-0001", "depth", T0, 0.30, "m")])
    return [Delivery(topics.status("gw-1"), birth, None), Delivery(topics.telemetry("gw-1"), tele, None)]


async def test_step_runs_without_automatic_collection_and_freezes_what_survives(thawed: Any) -> None:
    seen: list[bool] = []
    runner, store = _runner(seen)
    gc.enable()
    assert gc.get_freeze_count() == 0
    transitions = await runner.step(_messages())
    assert [t.kind for t in transitions] == [TransitionKind.RAISED]  # the step did its work
    assert len(store.commits) == 1
    assert seen and not any(seen)  # evaluation ran with automatic collection off
    assert gc.isenabled()  # and it is back on after the step
    assert gc.get_freeze_count() > 0  # the step's survivors (the engine state among them) are frozen
    assert not gc.get_referrers(runner.state.latest)  # frozen objects are invisible to the collector


async def test_step_leaves_a_disabled_collector_disabled(thawed: Any) -> None:
    runner, _ = _runner([])
    gc.disable()
    await runner.step(_messages())
    assert not gc.isenabled()


def test_settle_heap_collects_young_cycles_before_freezing(thawed: Any) -> None:
    class Node:
        ref: Any = None

    a, b = Node(), Node()
    a.ref, b.ref = b, a  # a reference cycle: only the cyclic collector can free it
    del a, b
    gc.disable()  # no automatic pass may free it first
    collected_before = gc.get_stats()[1]["collected"]
    settle_heap()
    assert gc.get_stats()[1]["collected"] >= collected_before + 2  # freed by the young collection
    assert not [o for o in gc.get_objects() if type(o).__name__ == "Node"]
