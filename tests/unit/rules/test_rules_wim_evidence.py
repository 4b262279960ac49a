"""The per-vehicle evidence table: axle groups and limits from configuration, excess %, camera fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.errors import ConfigError
from contracts.reading import DeviceInfo, Event
from rules.evaluate import EngineState, GatewayStatus, RuleSet, evaluate
from rules.specs import WimOverloadRule, load_rules
from rules.wim import group_axles, over_pct, vehicle_evidence
from tests.unit.rules.rules_helpers import T0, rules_from

DEFAULT_RULES = Path(__file__).resolve().parents[3] / "configs" / "rules" / "default.yaml"

LIMITS = """
rules:
  - name: wim-overload
    kind: wim_overload
    applies_to: {kinds: [wim]}
    tolerance_pct: 5
    axle_limit_kg: 13000
    axle_limits:
      group_spacing_m: 1.8
      steer_kg: 7000
      single_kg: 11500
      tandem: [{below_m: 1.0, limit_kg: 11500}, {below_m: 1.3, limit_kg: 16000}, {below_m: 1.8, limit_kg: 18000}]
      tridem: [{below_m: 1.3, limit_kg: 21000}, {below_m: 1.4, limit_kg: 24000}]
"""


def _rule(text: str = LIMITS) -> WimOverloadRule:
    (rule,) = rules_from(text)
    assert isinstance(rule, WimOverloadRule)
    return rule


def test_over_pct_is_signed_and_rounded() -> None:
    assert over_pct(52300, 49000) == 6.7
    assert over_pct(45000, 49000) == -8.2
    assert over_pct(1000, None) is None


def test_axles_closer_than_the_group_spacing_form_one_group() -> None:
    # steer, 3.2 m, tandem at 1.35 m, 7.4 m, tridem at 1.31 m
    assert group_axles([3.2, 1.35, 7.4, 1.31, 1.31], 6, 1.8) == [[0], [1, 2], [3, 4, 5]]
    assert group_axles([3.2], 2, 1.8) == [[0], [1]]


def test_each_group_is_judged_against_its_configured_limit() -> None:
    body = {"lane": 2, "speed_kmh": 54.0, "axles": 6, "gross_kg": 52300,
            "axle_kg": [7100, 9800, 9700, 8600, 8500, 8600], "spacing_m": [3.2, 1.35, 7.4, 1.31, 1.31],
            "plate": "浙A12345", "images": ["cam-01/18452-1.jpg"]}
    ev = vehicle_evidence("wim-0001", "18452-1764057612250", T0, body, _rule())
    assert ev["id"] == "wim-0001/18452-1764057612250"
    assert (ev["gross_limit_kg"], ev["gross_over_pct"]) == (49000.0, 6.7)
    groups = [(g["axles"], g["config"], g["load_kg"], g["limit_kg"], g["over_pct"]) for g in ev["groups"]]
    assert groups == [
        ([1], "steer", 7100.0, 7000.0, 1.4),
        ([2, 3], "tandem", 19500.0, 18000.0, 8.3),  # d = 1.35 m: the 1.3..1.8 m band
        ([4, 5, 6], "tridem", 25700.0, 24000.0, 7.1),  # d = 1.31 m: the 1.3..1.4 m band
    ]
    assert [r["spacing_m"] for r in ev["axle_rows"]] == [3.2, 1.35, 7.4, 1.31, 1.31, None]
    assert [r["group"] for r in ev["axle_rows"]] == [1, 2, 2, 3, 3, 3]
    assert (ev["plate"], ev["images"], ev["lane"], ev["speed_kmh"]) == ("浙A12345", ["cam-01/18452-1.jpg"], 2, 54.0)


def test_a_tandem_band_follows_the_spacing_and_an_uncovered_group_has_no_limit() -> None:
    rule = _rule()
    close = vehicle_evidence("w", "1", T0, {"axles": 3, "gross_kg": 20000, "axle_kg": [6000, 7000, 7000],
                                            "spacing_m": [3.0, 0.9]}, rule)
    assert close["groups"][1]["limit_kg"] == 11500.0
    quad = vehicle_evidence("w", "2", T0, {"axles": 5, "gross_kg": 30000, "axle_kg": [6000] * 5,
                                           "spacing_m": [3.0, 1.3, 1.3, 1.3]}, rule)
    assert (quad["groups"][1]["config"], quad["groups"][1]["limit_kg"], quad["groups"][1]["over_pct"]) == \
        ("4-axle group", None, None)


def test_without_configured_axle_limits_the_table_shows_loads_only() -> None:
    plain = _rule("rules: [{name: wim-overload, kind: wim_overload, applies_to: {kinds: [wim]}}]")
    ev = vehicle_evidence("w", "1", T0, {"axles": 2, "gross_kg": 20000, "axle_kg": [8000, 12000],
                                         "spacing_m": [3.5]}, plain)
    assert ev["groups"] == [] and ev["limits_source"] is None and "plate" not in ev
    assert [r["load_kg"] for r in ev["axle_rows"]] == [8000.0, 12000.0]
    assert ev["gross_over_pct"] == 11.1


def test_bands_must_ascend() -> None:
    bad = LIMITS.replace("{below_m: 1.3, limit_kg: 16000}, ", "")
    bad = bad.replace("{below_m: 1.0, limit_kg: 11500}", "{below_m: 1.9, limit_kg: 11500}")
    with pytest.raises(ConfigError, match="tandem"):
        rules_from(bad)


def test_the_shipped_rule_file_configures_the_axle_table() -> None:
    (wim,) = [r for r in load_rules([DEFAULT_RULES]) if isinstance(r, WimOverloadRule)]
    assert wim.axle_limits is not None and wim.axle_limits.steer_kg == 7000


def test_both_alarms_of_one_truck_carry_the_same_vehicle() -> None:
    rs = RuleSet(rules_from(LIMITS))
    wim = DeviceInfo("wim-0001", "wim", "wim")
    truck = Event("wim-0001", "vehicle", "9-1", T0, {"axles": 2, "gross_kg": 21000, "axle_kg": [7000, 14000],
                                                     "spacing_m": [3.6]})
    _, trs = evaluate(rs, EngineState(), [GatewayStatus("gw", "online", 0.0, (wim,)), truck], T0)
    assert sorted(tr.rule for tr in trs) == ["wim-axle-overload", "wim-overload"]
    assert {tr.evidence["vehicle"]["id"] for tr in trs} == {"wim-0001/9-1"}
    assert all("case_id" not in tr.evidence for tr in trs)
