"""The vectorised backtest gives exactly the live evaluator's transitions, for every rule kind."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from rules_helpers import T0, key, rules_from, run

from contracts.reading import DeviceInfo, Event, Quality, Reading
from rules.backtest import backtest, history_from_readings
from rules.evaluate import GatewayStatus

LAMPS = [DeviceInfo(id=f"lamp-000{i}", profile="lamp", kind="lamp", lat=30.27 + i, lon=120.15 - i) for i in range(3)]
MHS = [DeviceInfo(id=f"mh-000{i}", profile="mh", kind="manhole") for i in range(3)]

RULES = rules_from(
    """
rules:
  - {name: lampFailure, kind: lamp_failure, applies_to: {kinds: [lamp]}, raise_after_s: 300, clear_after_s: 120}
  - {name: dayburn, kind: lamp_unexpected_on, applies_to: {kinds: [lamp]}, margin_s: 1200, raise_after_s: 600}
  - {name: dark, kind: lamp_dark, applies_to: {kinds: [lamp]}, margin_s: 1200, raise_after_s: 600,
     flapping: {max_raises: 2, window_s: 20000, hold_s: 3000}}
  - {name: volts, kind: supply_voltage, applies_to: {kinds: [lamp]}, raise_after_s: 200, clear_after_s: 100}
  - {name: vfault, kind: sensor_fault, applies_to: {kinds: [lamp]}, metric: voltage, min: 0, max: 400,
     flatline_window_s: 3000, flatline_min_readings: 4, flatline_epsilon: 0.5}
  - {name: tilt, kind: tilt, applies_to: {kinds: [manhole]}, limit_deg: 10, raise_after_s: 30, clear_after_s: 120}
  - {name: cover, kind: cover_open, applies_to: {kinds: [manhole]}, clear_after_s: 300}
  - {name: batt, kind: battery_low, applies_to: {kinds: [manhole]},
     levels: [{severity: minor, raise_at: 3.4, hysteresis: 0.1, raise_after_s: 600},
              {severity: major, raise_at: 3.2, hysteresis: 0.1}]}
"""
)

lamp_sample = st.tuples(
    st.sampled_from(["relay", "current", "voltage"]),
    st.sampled_from([0.0, 1.0, 0.01, 0.4, 185.0, 200.0, 220.0, 220.0, 240.0, 250.0, 500.0]),
    st.sampled_from([0, 0, 0, 0, 2]),
    st.sampled_from([60.0, 300.0, 600.0, 1800.0]),
)
mh_sample = st.tuples(
    st.sampled_from(["tilt", "cover_open", "battery"]),
    st.sampled_from([0.0, 1.0, 5.0, 9.0, 11.0, 95.0, 3.1, 3.3, 3.45, 3.6]),
    st.sampled_from([0, 0, 0, 1]),
    st.sampled_from([5.0, 30.0, 60.0, 400.0]),
)


def _build(device: str, samples: list[tuple[str, float, int, float]], start: float) -> list[Reading]:
    t = start
    out = []
    for metric, v, q, gap in samples:
        out.append(Reading(device, metric, t, v, "", Quality(q)))
        t += gap
    return out


@settings(max_examples=150)
@given(samples=st.lists(lamp_sample, min_size=1, max_size=300), start_h=st.integers(0, 23))
def test_lamp_rules(samples: list[tuple[str, float, int, float]], start_h: int) -> None:
    # three lamps in one history (the backtest evaluates them as one array): rotated copies of the samples
    stream = [r for i, d in enumerate(LAMPS) for r in _build(d.id, samples[i:] + samples[:i], T0 + start_h * 3600)]
    stream.sort(key=lambda r: r.ts)
    _, live = run(RULES, [GatewayStatus("gw-1", "online", 0.0, tuple(LAMPS)), *stream])
    rep = backtest(RULES, history_from_readings(stream, {d.id: d for d in LAMPS}))
    assert sorted(key(rep.transitions)) == sorted(key(live))


@settings(max_examples=150)
@given(samples=st.lists(mh_sample, min_size=1, max_size=300), events=st.booleans())
def test_manhole_rules(samples: list[tuple[str, float, int, float]], events: bool) -> None:
    stream = [r for i, d in enumerate(MHS) for r in _build(d.id, samples[i:] + samples[:i], T0)]
    stream.sort(key=lambda r: r.ts)
    first = [r for r in stream if r.device == "mh-0000"]
    evs = [Event("mh-0000", "cover_open", str(i), r.ts + 0.5) for i, r in enumerate(first[::17])] if events else []
    merged = sorted([*stream, *evs], key=lambda x: x.ts)
    _, live = run(RULES, [GatewayStatus("gw-1", "online", 0.0, tuple(MHS)), *merged])
    rep = backtest(RULES, history_from_readings(stream, {d.id: d for d in MHS}, evs))
    assert sorted(key(rep.transitions)) == sorted(key(live))
