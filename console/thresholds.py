"""Alarm thresholds per device and metric, from the rule engine's own rule files.

Charts draw the levels the rule engine really uses for this device (per-device overrides and
datum offsets included), by binding the same rule files with the engine's own compiler;
there is no second copy of a threshold in the console's configuration.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from case_bridge.policy import ClearCondition
from console.views import DeviceView
from contracts.errors import ConfigError
from contracts.reading import DeviceInfo
from rules.errors import RulesError
from rules.evaluate import Compiled, compile_rule
from rules.specs import Rule, load_rules


@dataclass(frozen=True, slots=True)
class Threshold:
    rule: str
    metric: str
    severity: str
    value: float  # where the alarm raises, in the reading's scale (datum offset removed)
    kind: str  # level (value of the metric) | rate (per hour)


def load(paths: Sequence[Path]) -> list[Rule]:
    if not paths:
        return []
    try:
        return load_rules([str(p) for p in paths])
    except (OSError, RulesError) as exc:
        raise ConfigError("console.rules_files", "", [str(p) for p in paths], str(exc)) from exc


def _compiled(rules: Sequence[Rule], d: DeviceView) -> Iterator[tuple[Rule, Compiled, str | None]]:
    """(rule, the rule compiled for ``d``, its metric) for every rule that applies to ``d``."""
    info = DeviceInfo(d.id, d.profile, d.kind, d.lat, d.lon, grid=d.grid, owner=d.owner)
    for rule in rules:
        if rule.applies_to.matches(info) and (c := compile_rule(rule, info)) is not None:
            yield rule, c, getattr(rule, "metric", None)


def for_device(rules: Sequence[Rule], d: DeviceView) -> list[Threshold]:
    """The levels and rates that raise alarms on ``d``, lowest severity first."""
    out: list[Threshold] = []
    for rule, c, metric in _compiled(rules, d):
        if c.kind == "threshold" and metric:
            out += [Threshold(rule.name, metric, str(lv.severity), round(lv.raise_at - c.offset, 6), "level")
                    for lv in c.levels]
        elif c.kind == "rate" and metric:
            out.append(Threshold(rule.name, metric, str(c.severities[0]), float(getattr(rule, "rate_per_h", 0.0)),
                                 "rate"))
    return out


def clear_conditions(rules: Sequence[Rule], d: DeviceView) -> list[ClearCondition]:
    """Where each level rule's alarm clears on ``d`` (every level released), in the reading's scale.

    The sensor gate compares the device's latest reading with it: an alarm cleared by staleness or
    an acknowledgement does not make a reading above the clear level a confirmed fix.
    """
    out: list[ClearCondition] = []
    for rule, c, metric in _compiled(rules, d):
        if c.kind != "threshold" or not metric or not c.levels:
            continue
        clears = [lv.clear_at for lv in c.levels]
        level = min(clears) if c.above else max(clears)
        out.append(ClearCondition(rule.name, metric, round(level - c.offset, 6), c.above))
    return out
