from __future__ import annotations

from case_bridge.backtest import CaseBook, cases_would_open, predict_cases
from case_bridge.config import load_catalog
from case_bridge.policy import PolicyConfig
from contracts.alarms import AlarmTransition, Severity, TransitionKind
from contracts.reading import DeviceInfo


def _tr(alarm: str, device: str, rule: str, kind: TransitionKind, t: float) -> AlarmTransition:
    return AlarmTransition(alarm, device, rule, kind, Severity.MAJOR, t)


def test_one_case_per_open_condition_and_a_new_one_after_clear() -> None:
    trs = [
        _tr("a1", "wl-0001", "road-water-depth", TransitionKind.RAISED, 1),
        _tr("a1", "wl-0001", "road-water-depth", TransitionKind.ESCALATED, 2),
        _tr("a1", "wl-0001", "road-water-depth", TransitionKind.CLEARED, 3),
        _tr("a2", "wl-0001", "road-water-depth", TransitionKind.RAISED, 4),
        _tr("a3", "wl-0002", "road-water-depth", TransitionKind.RAISED, 5),
        _tr("x1", "wl-0002", "no_such_rule_maps_to_a_case", TransitionKind.RAISED, 6),
    ]
    assert cases_would_open(trs) == {"road-water-depth": 3}


# ---------------------------------------------------------------- through the live policy, with the registry

LAMP_A = DeviceInfo("lamp-0001", "lamp", "lamp", grid="330106001001", circuit="c-7")
LAMP_B = DeviceInfo("lamp-0002", "lamp", "lamp", grid="330106001001", circuit="c-7")
LAMP_C = DeviceInfo("lamp-0003", "lamp", "lamp", grid="330106001001", circuit="c-9")
WIM = DeviceInfo("wim-0001", "wim", "wim", grid="330106001001")
COVER = DeviceInfo("mh-0001", "tilt", "manhole", grid="330106002001", component_id="3301060101000001")
REG = {d.id: d for d in (LAMP_A, LAMP_B, LAMP_C, WIM, COVER)}


def _sev(alarm: str, device: str, rule: str, kind: TransitionKind, t: float, sev: Severity) -> AlarmTransition:
    return AlarmTransition(alarm, device, rule, kind, sev, t)


def test_lamps_need_the_registry_and_correlate_per_circuit() -> None:
    trs = [
        _tr("l1", "lamp-0001", "lampFailure", TransitionKind.RAISED, 1),
        _tr("l2", "lamp-0002", "supplyVoltage", TransitionKind.RAISED, 2),
        _tr("l3", "lamp-0003", "lampFailure", TransitionKind.RAISED, 3),
    ]
    # the lamp case rule is narrowed by device kind: without a birth message it opens nothing (as live)
    assert cases_would_open(trs) == {}
    cases = predict_cases(trs, REG)
    assert [(c.service_code, c.corr_key, c.alarms) for c in cases] == [
        ("B0118", "circuit:c-7", ("l1", "l2")), ("B0118", "circuit:c-9", ("l3",))]
    assert cases_would_open(trs, REG) == {"lampFailure": 2}


def test_wim_vehicles_attach_to_the_open_case_of_their_scale() -> None:
    trs = [
        _sev("w1", "wim-0001", "wim-overload", TransitionKind.RAISED, 10, Severity.MAJOR),
        _sev("w2", "wim-0001", "wim-overload", TransitionKind.RAISED, 20, Severity.CRITICAL),
        _sev("w1", "wim-0001", "wim-overload", TransitionKind.CLEARED, 3610, Severity.MAJOR),
        _sev("w2", "wim-0001", "wim-overload", TransitionKind.CLEARED, 3620, Severity.CRITICAL),
        _sev("w3", "wim-0001", "wim-overload", TransitionKind.RAISED, 4000, Severity.MAJOR),
    ]
    fixed = predict_cases(trs, REG)
    # critical maps to the same urgency as major: no escalation, so the case keeps its opening severity (as live)
    assert [(c.service_code, c.alarms, c.severity, c.urgency) for c in fixed] == [
        ("S9901", ("w1", "w2"), "major", "urgent"), ("S9901", ("w3",), "major", "urgent")]
    assert fixed[0].state == "closed" and fixed[1].state == "reported"
    # nobody handles the first case: the third vehicle attaches to it, as in the live store
    (still,) = predict_cases(trs, REG, fixed_on_clear=False)
    assert still.alarms == ("w1", "w2", "w3") and still.state == "reported"


def test_a_cover_incident_is_one_case_and_auto_dispatched() -> None:
    trs = [
        _sev("c1", "mh-0001", "manhole-cover-open", TransitionKind.RAISED, 1, Severity.MAJOR),
        _sev("c2", "mh-0001", "manhole-tilt", TransitionKind.RAISED, 2, Severity.MAJOR),
    ]
    (case,) = predict_cases(trs, REG)
    assert (case.service_code, case.corr_key, case.alarms) == ("B0101", "incident:mh-0001", ("c1", "c2"))
    assert case.state == "dispatched"  # auto_dispatch_from: minor, through the workflow as live


def test_a_redelivered_transition_changes_nothing() -> None:
    book = CaseBook(PolicyConfig(load_catalog()), REG)
    tr = _sev("g1", "wl-0009", "road-water-depth", TransitionKind.RAISED, 5, Severity.MAJOR)
    assert book.apply(tr) == "created"
    assert book.apply(tr) == "duplicate"
    esc = _sev("g1", "wl-0009", "road-water-depth", TransitionKind.ESCALATED, 6, Severity.CRITICAL)
    assert book.apply(esc) == "updated"
    (case,) = book.predicted()
    assert (case.severity, case.urgency, case.state) == ("critical", "very_urgent", "dispatched")
