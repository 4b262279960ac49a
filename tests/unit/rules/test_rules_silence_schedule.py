"""The silence schedule (a deadline heap in ``tick``) raises exactly what a scan of every device at every tick does.

The reference below is the scan the engine ran before the schedule (every registered device, every tick):
silence counted from the newest sample, else the birth, and never from before the gateway's return; no device
alarm while its gateway's last will stands; a device that speaks again clears its alarm and gets a new deadline;
a re-birth may change a device's interval or move it to another gateway; a restart rebuilds the schedule.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.alarms import AlarmTransition
from contracts.reading import DeviceInfo, Reading
from rules.evaluate import EngineState, GatewayStatus, Input, RuleSet, evaluate
from rules.specs import load_rules
from tests.unit.rules.rules_helpers import DEFAULT_RULES, T0, rules_from

RULES = rules_from("""
rules:
  - name: stale
    kind: staleness
    applies_to: {kinds: [water_gauge]}
    factor: 3
    min_silence_s: 5
    default_interval_s: 2
    flapping: null
  - name: stale-tagged  # applies to no device here, but lowers the schedule's floor for every device
    kind: staleness
    applies_to: {tags: [never]}
    factor: 1
    min_silence_s: 2
    gateway_rule: null
    flapping: null
""")
INTERVALS = (None, 1.0, 4.0)
GWS = ("gw-a", "gw-b", "gw-c")


def dev_id(i: int) -> str:
    return f"wl-{i:03d}"


class Reference:
    """Today's full-scan semantics, written out independently of the engine."""

    def __init__(self) -> None:
        self.interval: dict[str, float | None] = {}  # registry, in registration order
        self.gw_of: dict[str, str] = {}
        self.gw_state: dict[str, tuple[str, float]] = {}
        self.born: dict[str, float] = {}
        self.last_seen: dict[str, float] = {}
        self.last_ts: dict[str, float] = {}
        self.active: set[str] = set()
        self.next_tick = 0.0

    def apply(self, inputs: list[Input], now: float) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        for x in inputs:
            if isinstance(x, GatewayStatus):
                prev = self.gw_state.get(x.gw)
                if x.state == "online":
                    for info in x.devices:
                        self.interval[info.id] = info.interval_s
                        self.gw_of[info.id] = x.gw
                        self.born.setdefault(info.id, x.t)
                    if prev is None or prev[0] != "online":
                        self.gw_state[x.gw] = ("online", x.t)
                elif prev is None or prev[0] != "offline":
                    self.gw_state[x.gw] = ("offline", x.t)
            else:
                assert isinstance(x, Reading)
                last = self.last_ts.get(x.device)
                if last is not None and x.ts <= last:
                    continue
                self.last_ts[x.device] = x.ts
                self.last_seen[x.device] = max(self.last_seen.get(x.device, x.ts), x.ts)
                if x.device in self.active:
                    self.active.discard(x.device)
                    out.append((x.device, "cleared", x.ts, None))
        if now >= self.next_tick:
            self.next_tick = now + 1.0
            for d, interval in self.interval.items():
                gw = self.gw_of.get(d)
                gws = self.gw_state.get(gw) if gw is not None else None
                if d in self.active or (gws is not None and gws[0] == "offline"):
                    continue
                last = self.last_seen.get(d, self.born.get(d, now))
                if gws is not None:
                    last = max(last, gws[1])
                if now - last > max(3.0 * (interval or 2.0), 5.0):
                    self.active.add(d)
                    out.append((d, "raised", now, last))
        return out


def observed(trs: list[AlarmTransition]) -> list[tuple[Any, ...]]:
    out = []
    for tr in trs:
        if tr.rule != "stale":
            continue
        last = tr.evidence.get("last_seen") if tr.kind.value == "raised" else None
        out.append((tr.device, tr.kind.value, tr.t, last))
    return out


birth_op = st.tuples(st.just("birth"), st.integers(0, len(GWS) - 1),
                     st.lists(st.tuples(st.integers(0, 7), st.sampled_from(INTERVALS)), max_size=5))
op = st.one_of(
    birth_op,
    st.tuples(st.just("offline"), st.integers(0, len(GWS) - 1)),
    st.tuples(st.just("read"), st.integers(0, 7)),
    st.tuples(st.just("advance"), st.sampled_from([0.0, 0.5, 1.0, 1.5, 3.0, 4.0, 7.0, 13.0])),
    st.tuples(st.just("restart")),
)


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(op, max_size=80))
def test_schedule_equals_full_scan(ops: list[tuple[Any, ...]]) -> None:
    rs = RuleSet(RULES)
    state = EngineState()
    ref = Reference()
    now = T0
    pending: list[Input] = []
    for o in [*ops, ("advance", 1.0), ("advance", 30.0)]:
        if o[0] == "birth":
            devs = {dev_id(i): DeviceInfo(dev_id(i), "radar", "water_gauge", interval_s=iv) for i, iv in o[2]}
            pending.append(GatewayStatus(GWS[o[1]], "online", now, tuple(devs.values())))
        elif o[0] == "offline":
            pending.append(GatewayStatus(GWS[o[1]], "offline", now))
        elif o[0] == "read":
            pending.append(Reading(dev_id(o[1]), "depth", now, 0.0, "m"))
        elif o[0] == "restart":
            state = EngineState.from_json(state.to_json())  # the schedule is derived: rebuilt from the state
        else:
            now += o[1]
            state, trs = evaluate(rs, state, pending, now)
            assert observed(trs) == ref.apply(pending, now)
            pending = []


def test_a_silent_gateway_raises_each_device_once_on_time_without_rescanning() -> None:
    rs = RuleSet(RULES)
    quiet = [DeviceInfo(dev_id(i), "radar", "water_gauge", interval_s=1.0) for i in range(3)]
    talk = DeviceInfo("wl-100", "radar", "water_gauge", interval_s=1.0)
    state, _ = evaluate(rs, EngineState(), [GatewayStatus("gw-a", "online", T0, (*quiet, talk))], T0)
    raised: list[tuple[str, float]] = []
    for k in range(1, 12):
        now = T0 + k
        state, trs = evaluate(rs, state, [Reading("wl-100", "depth", now, 0.0, "m")], now)
        raised += [(tr.device, tr.t) for tr in trs if tr.kind.value == "raised"]
    # silent for more than max(3 x 1 s, 5 s): raised at the first tick after T0 + 5, once each
    assert raised == [(dev_id(i), T0 + 6) for i in range(3)]
    # the talking device is scheduled (one live entry), the alarmed ones are not until they speak
    assert set(state.stale_due) == {"wl-100"}


def test_an_identical_rebirth_marks_no_device_dirty() -> None:
    rs = RuleSet(RULES)
    devs = tuple(DeviceInfo(dev_id(i), "radar", "water_gauge", interval_s=1.0) for i in range(4))
    state, _ = evaluate(rs, EngineState(), [GatewayStatus("gw-a", "online", T0, devs)], T0)
    assert {dev_id(i) for i in range(4)} <= state.dirty
    state.take_checkpoint(rs.condition_names, 1000)
    state, _ = evaluate(rs, state, [GatewayStatus("gw-a", "online", T0 + 2, devs)], T0 + 2)
    assert not state.dirty - {"gw-a"}
    changed = (DeviceInfo(dev_id(0), "radar", "water_gauge", interval_s=4.0), *devs[1:])
    state, _ = evaluate(rs, state, [GatewayStatus("gw-a", "online", T0 + 4, changed)], T0 + 4)
    assert state.dirty - {"gw-a"} == {dev_id(0)}


def test_shared_plans_equal_compiled_plans() -> None:
    """Plans copied from a (kind, tags) template equal plans compiled for the device, overrides included."""
    rs = RuleSet(load_rules([DEFAULT_RULES]))
    named = sorted(rs._named)
    infos = [DeviceInfo(f"d-{i}", "p", kind, tags=tags) for i, (kind, tags) in enumerate(
        [(k, t) for k in ("water_gauge", "manhole", "lamp", "wim", "other") for t in ((), ("a",), ("b", "c"))])]
    infos += [DeviceInfo(d, "p", k) for d in named for k in ("water_gauge", "manhole", "lamp")]
    for info in [*infos, *infos]:  # the second time from the templates
        assert rs.plan(info) == rs.compile_plan(info)


def test_silence_counts_again_from_the_gateways_return() -> None:
    """Checks dropped while the last will stood come back with the gateway (the same scenario as the reference)."""
    rs = RuleSet(RULES)
    devs = tuple(DeviceInfo(dev_id(i), "radar", "water_gauge", interval_s=1.0) for i in range(2))
    ref = Reference()
    state = EngineState()
    script: list[tuple[float, list[Input]]] = [
        (T0, [GatewayStatus("gw-a", "online", T0, devs)]),
        (T0 + 2, [GatewayStatus("gw-a", "offline", T0 + 2)]),
        *[(T0 + k, []) for k in range(3, 20)],  # the devices' checks come due while the gateway is down
        (T0 + 20, [GatewayStatus("gw-a", "online", T0 + 20, devs)]),  # an identical re-birth: the return
        *[(T0 + k, []) for k in range(21, 30)],
    ]
    seen: list[tuple[Any, ...]] = []
    for now, inputs in script:
        state, trs = evaluate(rs, state, inputs, now)
        got = observed(trs)
        assert got == ref.apply(inputs, now)
        seen += got
    assert [(d, k, t) for d, k, t, _ in seen] == [(dev_id(0), "raised", T0 + 26), (dev_id(1), "raised", T0 + 26)]
