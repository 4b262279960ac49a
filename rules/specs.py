"""Rule specs: YAML rule files validated once at load (file, key path and bad value on error).

A rule file is ``{"rules": [ ... ]}``; each rule has a ``name`` (the alarm's ``rule`` field
and the case bridge's condition key), a ``kind`` and an ``applies_to`` selector (device kinds,
tags, ids). Per-device ``overrides`` carry a gauge's own datum offset and thresholds or a
cover's own tilt limit. Nothing here is clamped or fixed: a bad value is an error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from contracts.alarms import Severity
from contracts.config import StrictModel, parse_config
from contracts.errors import ConfigError
from contracts.ids import is_valid_id
from contracts.reading import DeviceInfo

RULE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
DeviceKind = Literal["water_gauge", "manhole", "lamp", "wim"]


class Selector(StrictModel):
    """Which devices a rule applies to.

    A device matches if its id is in ``devices``, or if it matches every given criterion of
    ``kinds`` (one of) and ``tags`` (one of). ``exclude`` always wins.
    """

    kinds: list[DeviceKind] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    devices: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_empty(self) -> Selector:
        if not (self.kinds or self.tags or self.devices):
            raise ValueError("give at least one of kinds, tags, devices (a rule for every device is never meant)")
        for dev in (*self.devices, *self.exclude):
            if not is_valid_id(dev):
                raise ValueError(f"device id {dev!r} must match [a-z0-9][a-z0-9-]{{0,62}}")
        return self

    def matches(self, info: DeviceInfo) -> bool:
        if info.id in self.exclude:
            return False
        if info.id in self.devices:
            return True
        if not (self.kinds or self.tags):
            return False
        if self.kinds and info.kind not in self.kinds:
            return False
        return not (self.tags and not set(self.tags) & set(info.tags))


class Level(StrictModel):
    """One severity level of a threshold: raise at ``raise_at``, clear past ``raise_at ∓ hysteresis``."""

    severity: Severity
    raise_at: float
    hysteresis: float = Field(default=0.0, ge=0.0)
    raise_after_s: float = Field(default=0.0, ge=0.0)
    clear_after_s: float = Field(default=0.0, ge=0.0)


def _check_levels(levels: Sequence[Level], direction: str) -> None:
    sev = [lv.severity.rank for lv in levels]
    if sev != sorted(sev) or len(set(sev)) != len(sev):
        raise ValueError("levels must be listed by increasing severity, each severity at most once")
    at = [lv.raise_at for lv in levels]
    ordered = sorted(at) if direction == "above" else sorted(at, reverse=True)
    if at != ordered or len(set(at)) != len(at):
        trend = "increasing" if direction == "above" else "decreasing"
        raise ValueError(f"raise_at must be strictly {trend} with severity")


class Flapping(StrictModel):
    """An alarm raised ``max_raises`` times within ``window_s`` is flapping: it then clears only
    after its clear condition held ``hold_s`` (instead of its own clear delay), so a noisy
    sensor gives one long alarm instead of a stream of notifications."""

    max_raises: int = Field(default=3, ge=2)
    window_s: float = Field(default=3600.0, gt=0)
    hold_s: float = Field(default=900.0, ge=0)


class _RuleBase(StrictModel):
    name: str = Field(pattern=RULE_NAME)
    applies_to: Selector
    enabled: bool = True
    description: str = ""
    flapping: Flapping | None = Field(default_factory=Flapping)


# ---------------------------------------------------------------- threshold family


class ThresholdOverride(StrictModel):
    offset: float | None = None
    levels: list[Level] | None = Field(default=None, min_length=1)
    enabled: bool = True


class ThresholdRule(_RuleBase):
    """Multi-level threshold with hysteresis and minimum durations per level.

    ``offset`` is added to the value first (a gauge's datum correction). Each level latches on
    its own; the alarm's severity is the highest latched level, and moving between levels is
    an escalation or de-escalation of the same alarm.
    """

    kind: Literal["threshold"] = "threshold"
    metric: str
    direction: Literal["above", "below"] = "above"
    offset: float = 0.0
    levels: list[Level] = Field(min_length=1)
    overrides: dict[str, ThresholdOverride] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _levels_ok(self) -> ThresholdRule:
        _check_levels(self.levels, self.direction)
        for dev, ov in self.overrides.items():
            if not is_valid_id(dev):
                raise ValueError(f"override for invalid device id {dev!r}")
            if ov.levels is not None:
                _check_levels(ov.levels, self.direction)
        return self


class BatteryLowRule(ThresholdRule):
    """Battery voltage below its levels (a threshold rule pointing down)."""

    kind: Literal["battery_low"] = "battery_low"  # type: ignore[assignment]
    metric: str = "battery"
    direction: Literal["above", "below"] = "below"


class TiltOverride(StrictModel):
    limit_deg: float | None = Field(default=None, gt=0.0, lt=90.0)
    enabled: bool = True


class TiltRule(_RuleBase):
    """Manhole cover tilt relative to its installed background angle.

    Above ``limit_deg`` (per-device override possible) raises ``severity``; above 90° raises
    critical whatever the limit. ``raise_after_s`` filters passing-vehicle vibration.
    """

    kind: Literal["tilt"] = "tilt"
    metric: str = "tilt"
    limit_deg: float = Field(default=10.0, gt=0.0, lt=90.0)
    hysteresis_deg: float = Field(default=2.0, ge=0.0)
    raise_after_s: float = Field(default=0.0, ge=0.0)
    clear_after_s: float = Field(default=60.0, ge=0.0)
    severity: Severity = Severity.MAJOR
    overrides: dict[str, TiltOverride] = Field(default_factory=dict)


class SupplyVoltageRule(_RuleBase):
    """TALQ supplyVoltageTooLow/TooHigh: a band with hysteresis and delays."""

    kind: Literal["supply_voltage"] = "supply_voltage"
    metric: str = "voltage"
    min_v: float = 198.0
    max_v: float = 242.0
    hysteresis_v: float = Field(default=4.0, ge=0.0)
    raise_after_s: float = Field(default=300.0, ge=0.0)
    clear_after_s: float = Field(default=300.0, ge=0.0)
    severity: Severity = Severity.MINOR

    @model_validator(mode="after")
    def _band(self) -> SupplyVoltageRule:
        if self.min_v + self.hysteresis_v >= self.max_v - self.hysteresis_v:
            raise ValueError("min_v + hysteresis_v must be below max_v - hysteresis_v")
        return self


# ---------------------------------------------------------------- rate, staleness, sensor faults


class RateOverride(StrictModel):
    offset: float | None = None
    enabled: bool = True


class RateRule(_RuleBase):
    """Rate of change over a window (Theil–Sen slope, robust to single spikes), in units per hour."""

    kind: Literal["rate"] = "rate"
    metric: str
    direction: Literal["rising", "falling"] = "rising"
    rate_per_h: float = Field(gt=0.0)
    hysteresis_per_h: float = Field(default=0.0, ge=0.0)
    window_s: float = Field(default=1800.0, gt=0.0)
    min_points: int = Field(default=5, ge=3)
    max_points: int = Field(default=48, ge=3)
    eval_every_s: float = Field(default=60.0, ge=0.0)
    raise_after_s: float = Field(default=0.0, ge=0.0)
    clear_after_s: float = Field(default=600.0, ge=0.0)
    severity: Severity = Severity.MAJOR
    overrides: dict[str, RateOverride] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _hyst(self) -> RateRule:
        if self.hysteresis_per_h >= self.rate_per_h:
            raise ValueError("hysteresis_per_h must be below rate_per_h")
        if self.max_points < self.min_points:
            raise ValueError("max_points must be >= min_points")
        return self


class StalenessRule(_RuleBase):
    """A device silent for ``factor`` × its expected interval (and at least ``min_silence_s``).

    When the device's gateway is offline (retained status ``offline``: its last will), the
    device alarm is not raised; one ``gateway_rule`` alarm on the gateway id is raised instead,
    so a dead uplink is one alarm, not one per device.
    """

    kind: Literal["staleness"] = "staleness"
    factor: float = Field(default=3.0, ge=1.0)
    min_silence_s: float = Field(default=300.0, ge=0.0)
    default_interval_s: float = Field(default=300.0, gt=0.0)
    severity: Severity = Severity.MINOR
    gateway_rule: str | None = Field(default="gateway_offline", pattern=RULE_NAME)
    gateway_after_s: float = Field(default=60.0, ge=0.0)
    gateway_severity: Severity = Severity.MAJOR


class SensorFaultRule(_RuleBase):
    """Out-of-physical-range and stuck/flatline: a sensor fault alarm.

    A reading outside [min, max] (or flagged bad by the gateway) is bad: no threshold alarm is
    raised from it. ``bad_count`` consecutive bad readings raise; ``good_count`` consecutive
    good ones clear. Flatline: at least ``flatline_min_readings`` readings spanning at least
    ``flatline_window_s`` whose spread is ≤ ``flatline_epsilon``.
    """

    kind: Literal["sensor_fault"] = "sensor_fault"
    metric: str
    min: float | None = None
    max: float | None = None
    bad_count: int = Field(default=3, ge=1)
    good_count: int = Field(default=3, ge=1)
    flatline_window_s: float | None = Field(default=None, gt=0.0)
    flatline_min_readings: int = Field(default=10, ge=2)
    flatline_epsilon: float = Field(default=0.0, ge=0.0)
    severity: Severity = Severity.MINOR

    @model_validator(mode="after")
    def _range(self) -> SensorFaultRule:
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError("min must be below max")
        return self


# ---------------------------------------------------------------- manhole cover, lamps


class CoverOpenRule(_RuleBase):
    """Cover open: the ``cover_open`` flag reads 1, or a cover interrupt event arrives."""

    kind: Literal["cover_open"] = "cover_open"
    metric: str = "cover_open"
    event_kinds: list[str] = Field(default_factory=lambda: ["cover_open", "cover"])
    clear_after_s: float = Field(default=60.0, ge=0.0)
    severity: Severity = Severity.CRITICAL


class LampFailureRule(_RuleBase):
    """TALQ lampFailure: relay on but current near zero."""

    kind: Literal["lamp_failure"] = "lamp_failure"
    min_current_a: float = Field(default=0.05, ge=0.0)
    raise_after_s: float = Field(default=120.0, ge=0.0)
    clear_after_s: float = Field(default=120.0, ge=0.0)
    severity: Severity = Severity.MAJOR


class LampDayBurningRule(_RuleBase):
    """TALQ lampUnexpectedOn (day-burning): lit while the sun is up at the lamp's coordinates."""

    kind: Literal["lamp_unexpected_on"] = "lamp_unexpected_on"
    on_current_a: float = Field(default=0.05, ge=0.0)
    margin_s: float = Field(default=1800.0, ge=0.0)
    raise_after_s: float = Field(default=600.0, ge=0.0)
    clear_after_s: float = Field(default=120.0, ge=0.0)
    severity: Severity = Severity.MINOR


class LampDarkRule(_RuleBase):
    """Dark at night: switched off (relay off; current when the relay is unknown) while the sun is down.

    A lamp whose relay is on but draws no current is ``lampFailure``, not this.
    """

    kind: Literal["lamp_dark"] = "lamp_dark"
    on_current_a: float = Field(default=0.05, ge=0.0)
    margin_s: float = Field(default=1800.0, ge=0.0)
    raise_after_s: float = Field(default=600.0, ge=0.0)
    clear_after_s: float = Field(default=120.0, ge=0.0)
    severity: Severity = Severity.MAJOR


# ---------------------------------------------------------------- WIM


_DEFAULT_GROSS_T = {2: 18.0, 3: 25.0, 4: 31.0, 5: 43.0, 6: 49.0}
_DEFAULT_COMBO_T = {3: 27.0, 4: 36.0, 5: 43.0, 6: 49.0}


class AxleBand(StrictModel):
    """One row of an axle-group limit table: groups whose largest inner spacing is below ``below_m``."""

    below_m: float = Field(gt=0.0)
    limit_kg: float = Field(gt=0.0)


class AxleLimits(StrictModel):
    """Axle-load limits by axle configuration (GB 1589-2016 表3, as the city configures them).

    A scale measures loads and spacings only, so the configuration is read from the spacings:
    consecutive axles closer than ``group_spacing_m`` form one group (二轴组, 三轴组); the first
    axle is the steering axle (single tyres), any other lone axle is a ``single_kg`` axle. A
    group's limit is the first band (ascending ``below_m``) above its largest inner spacing; a
    group no band covers, or of four or more axles, has no limit (shown, never judged).
    """

    group_spacing_m: float = Field(default=1.8, gt=0.0)
    steer_kg: float = Field(gt=0.0)
    single_kg: float = Field(gt=0.0)
    tandem: tuple[AxleBand, ...] = ()
    tridem: tuple[AxleBand, ...] = ()

    @field_validator("tandem", "tridem")
    @classmethod
    def _ascending(cls, value: tuple[AxleBand, ...]) -> tuple[AxleBand, ...]:
        edges = [b.below_m for b in value]
        if edges != sorted(set(edges)):
            raise ValueError(f"bands must be in strictly ascending below_m order, got {edges}")
        return value


class WimOverloadRule(_RuleBase):
    """Per vehicle record: gross weight above the limit for its axle count (+ tolerance).

    Limits default to 交通运输部令2016年第62号 Art. 3 (2..6+ axles: 18/25/31/43/49 t;
    combinations 3/4 axles: 27/36 t). A record is a combination when its body says
    ``"combination": true``. ``axle_limit_kg`` (optional) raises ``axle_rule`` for any single
    axle above it. Each overload is its own alarm carrying the record; it clears itself after
    ``auto_clear_s`` (it is an event, not a state). ``axle_limits`` (optional) is the per-axle
    table the evidence of each alarm shows (:mod:`rules.wim`); it does not change what raises.
    """

    kind: Literal["wim_overload"] = "wim_overload"
    event_kind: str = "vehicle"
    gross_limits_t: dict[int, float] = Field(default_factory=lambda: dict(_DEFAULT_GROSS_T))
    combination_limits_t: dict[int, float] = Field(default_factory=lambda: dict(_DEFAULT_COMBO_T))
    tolerance_pct: float = Field(default=5.0, ge=0.0, le=50.0)
    critical_over_pct: float = Field(default=30.0, gt=0.0)
    axle_limit_kg: float | None = Field(default=None, gt=0.0)
    axle_rule: str = Field(default="wim-axle-overload", pattern=RULE_NAME)
    auto_clear_s: float = Field(default=3600.0, ge=0.0)
    axle_limits: AxleLimits | None = None
    severity: Severity = Severity.MAJOR
    flapping: Flapping | None = None

    @field_validator("gross_limits_t", "combination_limits_t")
    @classmethod
    def _limits(cls, value: dict[int, float]) -> dict[int, float]:
        for axles, limit in value.items():
            if axles < 2 or limit <= 0:
                raise ValueError(f"limit {axles}: {limit} — axle count must be ≥ 2 and the limit positive")
        return value

    def limit_kg(self, axles: int, combination: bool) -> float | None:
        table = self.combination_limits_t if combination else self.gross_limits_t
        if not table:
            return None
        if axles in table:
            return table[axles] * 1000.0
        top = max(table)
        return table[top] * 1000.0 if axles > top else None


Rule = Annotated[
    ThresholdRule
    | BatteryLowRule
    | TiltRule
    | SupplyVoltageRule
    | RateRule
    | StalenessRule
    | SensorFaultRule
    | CoverOpenRule
    | LampFailureRule
    | LampDayBurningRule
    | LampDarkRule
    | WimOverloadRule,
    Field(discriminator="kind"),
]


class RuleFile(StrictModel):
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> RuleFile:
        seen: set[str] = set()
        for rule in self.rules:
            names = [rule.name]
            if isinstance(rule, StalenessRule) and rule.gateway_rule:
                names.append(rule.gateway_rule)
            if isinstance(rule, WimOverloadRule) and rule.axle_limit_kg is not None:
                names.append(rule.axle_rule)
            for name in names:
                if name in seen:
                    raise ValueError(f"rule name {name!r} is used twice")
                seen.add(name)
        return self


_KINDS = (
    "threshold", "battery_low", "tilt", "supply_voltage", "rate", "staleness", "sensor_fault", "cover_open",
    "lamp_failure", "lamp_unexpected_on", "lamp_dark", "wim_overload",
)
_TAG_IN_PATH = re.compile(r"^(rules\[\d+\])\.(" + "|".join(_KINDS) + r")(?=\.|$)")


def parse_rules(text: str, source: str) -> list[Rule]:
    """Validate one rule file's text; errors name the file, key path and value."""
    try:
        return [r for r in parse_config(text, RuleFile, source=source).rules if r.enabled]
    except ConfigError as exc:
        # pydantic puts the union tag into the location ("rules[0].threshold.levels"): drop it
        path = _TAG_IN_PATH.sub(r"\1", exc.key_path)
        if path == exc.key_path:
            raise
        raise ConfigError(exc.source, path, exc.value, exc.problem) from exc


def load_rules(paths: Sequence[str | Path]) -> list[Rule]:
    """Load and merge rule files; a rule name defined in two files is an error."""
    out: list[Rule] = []
    where: dict[str, str] = {}
    for path in paths:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(str(p), "", str(p), f"cannot read rule file: {exc.strerror}") from exc
        for rule in parse_rules(text, str(p)):
            if rule.name in where:
                raise ConfigError(str(p), "rules", rule.name, f"rule name already defined in {where[rule.name]}")
            where[rule.name] = str(p)
            out.append(rule)
    return out
