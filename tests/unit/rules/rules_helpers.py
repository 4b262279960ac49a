"""Small builders shared by the rule tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from contracts.alarms import AlarmTransition
from contracts.reading import DeviceInfo, Quality, Reading
from rules.evaluate import EngineState, GatewayStatus, Input, RuleSet, evaluate
from rules.specs import Rule, parse_rules

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_RULES = ROOT / "configs" / "rules" / "default.yaml"
CLOUD_EXAMPLE = ROOT / "configs" / "cloud.example.yaml"
T0 = 1_764_057_600.0  # 2025-11-25 08:00 UTC (16:00 in Hangzhou)


def rules_from(yaml_text: str) -> list[Rule]:
    return parse_rules(yaml_text, "test.yaml")


def gauge(dev: str = "wl-0001", **kw: object) -> DeviceInfo:
    return DeviceInfo(id=dev, profile="radar", kind="water_gauge", **kw)  # type: ignore[arg-type]


def birth(*devices: DeviceInfo, gw: str = "gw-1", t: float = T0) -> GatewayStatus:
    return GatewayStatus(gw, "online", t, tuple(devices))


def series(device: str, metric: str, values: Sequence[float], t0: float = T0, step_s: float = 60.0,
           quality: Quality = Quality.GOOD) -> list[Reading]:
    return [Reading(device, metric, t0 + i * step_s, float(v), "", quality) for i, v in enumerate(values)]


def run(rules: Sequence[Rule], inputs: Iterable[Input], now: float = 0.0,
        state: EngineState | None = None) -> tuple[EngineState, list[AlarmTransition]]:
    return evaluate(RuleSet(rules), state or EngineState(), list(inputs), now)


def key(trs: Iterable[AlarmTransition]) -> list[tuple[str, str, str, float]]:
    return [(tr.alarm_id, tr.kind.value, tr.severity.value, round(tr.t, 6)) for tr in trs]
