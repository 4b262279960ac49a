"""A person clears an event alarm (WIM overload) through the engine's lifecycle; sensor conditions refuse it."""

from __future__ import annotations

import pytest

from contracts.alarms import TransitionKind
from contracts.errors import PayloadError
from contracts.payloads import AlarmAck, decode_alarm_ack, encode_alarm_ack
from contracts.reading import DeviceInfo, Event
from rules.evaluate import EngineState, GatewayStatus, RuleSet, evaluate
from tests.unit.rules.rules_helpers import T0, birth, gauge, rules_from, series

RULES = """
rules:
  - {name: wim-overload, kind: wim_overload, applies_to: {kinds: [wim]}, tolerance_pct: 5, auto_clear_s: 3600}
  - name: road-water-depth
    kind: threshold
    applies_to: {kinds: [water_gauge]}
    metric: depth
    direction: above
    levels: [{severity: major, raise_at: 0.25, hysteresis: 0.03}]
"""


def test_manual_clear_of_an_event_alarm() -> None:
    rs = RuleSet(rules_from(RULES))
    wim = DeviceInfo("wim-0001", "wim", "wim")
    truck = Event("wim-0001", "vehicle", "7", T0, {"axles": 2, "gross_kg": 30_000, "axle_kg": [10_000, 20_000]})
    st, trs = evaluate(rs, EngineState(), [GatewayStatus("gw", "online", 0.0, (wim,)), truck], T0)
    aid = trs[-1].alarm_id
    clear = AlarmAck(aid, "wim-0001", "duty-li", T0 + 120, "truck stopped and unloaded", "clear")
    st, trs = evaluate(rs, st, [clear, clear], T0 + 120)
    assert [(tr.kind, tr.actor, tr.evidence) for tr in trs] == [
        (TransitionKind.CLEARED, "duty-li", {"reason": "manual", "note": "truck stopped and unloaded"})]
    assert aid not in st.alarms
    _st, trs = evaluate(rs, st, [], T0 + 7200)  # its timer no longer fires
    assert trs == []


def test_manual_clear_of_a_sensor_condition_is_refused() -> None:
    rs = RuleSet(rules_from(RULES))
    st, trs = evaluate(rs, EngineState(), [birth(gauge()), *series("wl-0001", "depth", [0.5, 0.5])], 0.0)
    aid = trs[0].alarm_id
    st, trs = evaluate(rs, st, [AlarmAck(aid, "wl-0001", "duty-li", T0 + 200, "looks dry", "clear")], 0.0)
    assert trs == [] and aid in st.alarms  # the gauge still reads 0.5 m: only it can clear


def test_ack_payload_carries_the_action() -> None:
    ack = AlarmAck("a1", "wim-0001", "duty", T0, "n", "clear")
    assert decode_alarm_ack(encode_alarm_ack(ack)) == ack
    plain = AlarmAck("a1", "wim-0001", "duty", T0, "n")
    assert b"action" not in encode_alarm_ack(plain)  # an acknowledgement reads as before
    assert decode_alarm_ack(encode_alarm_ack(plain)).action == "ack"
    with pytest.raises(PayloadError):
        decode_alarm_ack(b'{"v":1,"alarm_id":"a","device":"wim-0001","actor":"x","t":1,"action":"delete"}')
