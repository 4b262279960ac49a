"""Bilingual labels (中文 first, English second) for states, actions, roles, kinds and severities."""

from __future__ import annotations

from case_bridge import Urgency
from case_bridge.workflow import ACTION_LABELS, State

# case facts are case_bridge's: its workflow names states and actions, its config urgencies
STATES: dict[str, tuple[str, str]] = {s.value: (s.label_zh, s.label_en) for s in State}
ACTIONS: dict[str, tuple[str, str]] = dict(ACTION_LABELS)
URGENCIES: dict[str, tuple[str, str]] = {u.value: (u.label_zh, u.label_en) for u in Urgency}

ROLES: dict[str, tuple[str, str]] = {
    "duty_officer": ("值班员", "duty officer"),
    "case_handler": ("处置人员", "case handler"),
    "supervisor": ("监督员", "supervisor"),
    "admin": ("管理员", "administrator"),
    "supervision": ("监督中心", "supervision centre"),
    "command": ("指挥中心", "command centre"),
}

KINDS: dict[str, tuple[str, str]] = {
    "water_gauge": ("积水监测", "water gauge"),
    "manhole": ("井盖", "manhole cover"),
    "lamp": ("路灯", "street lamp"),
    "wim": ("治超称重", "WIM scale"),
}

SEVERITIES: dict[str, tuple[str, str]] = {
    "critical": ("严重", "critical"),
    "major": ("重要", "major"),
    "minor": ("一般", "minor"),
}


def zh_en(table: dict[str, tuple[str, str]], key: str) -> str:
    zh, en = table.get(key, (key, key))
    return zh if zh == en else f"{zh} {en}"

METRICS: dict[str, tuple[str, str]] = {
    "depth": ("积水深度", "water depth"),
    "distance": ("测距", "radar distance"),
    "install_height": ("安装高度", "install height"),
    "battery": ("电池电压", "battery"),
    "status": ("状态", "status"),
    "tilt": ("倾角", "tilt"),
    "tilt_x": ("X 倾角", "tilt x"),
    "tilt_y": ("Y 倾角", "tilt y"),
    "background_tilt": ("基准倾角", "background tilt"),
    "cover_open": ("井盖开启", "cover open"),
    "water_under": ("井下积水", "water under cover"),
    "voltage": ("电压", "voltage"),
    "current": ("电流", "current"),
    "power": ("功率", "power"),
    "power_factor": ("功率因数", "power factor"),
    "energy": ("电能", "energy"),
    "run_hours": ("运行时长", "run hours"),
    "dim_level": ("调光", "dim level"),
    "relay": ("继电器", "relay"),
    "record_count": ("过车数", "vehicles weighed"),
}

# rule -> (中文, English, unit of the alarm's value as people read it, multiplier from the raw value)
RULES: dict[str, tuple[str, str, str, float]] = {
    "road-water-depth": ("路面积水", "road water depth", "m", 1.0),
    "road-water-rising": ("积水快速上涨", "water rising fast", "m/h", 1.0),
    "gauge-sensor-fault": ("水位计故障", "gauge sensor fault", "m", 1.0),
    "gauge-distance-stuck": ("测距冻结", "radar distance stuck", "m", 1.0),
    "manhole-tilt": ("井盖倾斜", "cover tilted", "deg", 1.0),
    "manhole-cover-open": ("井盖开启", "cover open", "", 1.0),
    "lampFailure": ("路灯故障", "lamp failure", "A", 1.0),
    "lampUnexpectedOn": ("白天亮灯", "lamp on by day", "", 1.0),
    "lampDarkAtNight": ("夜间熄灯", "lamp dark at night", "", 1.0),
    "supplyVoltage": ("供电电压异常", "supply voltage", "V", 1.0),
    "wim-overload": ("车辆超限", "vehicle overload", "t", 0.001),  # the value is gross kg
    "wim-axle-overload": ("轴载超限", "axle overload", "t", 0.001),
    "battery-low": ("电池电量低", "battery low", "V", 1.0),
    "device-offline": ("设备离线", "device offline", "", 1.0),
}

# unit -> decimals people need: centimetres of water, tenths of a degree or tonne, whole volts/watts
DECIMALS: dict[str, int] = {"m": 2, "m/h": 2, "deg": 1, "t": 1, "V": 1, "A": 2, "W": 0, "kWh": 1, "%": 0, "h": 0,
                            "/": 2, "": 0}
UNIT_SHOWN: dict[str, str] = {"deg": "°"}


def fmt_value(value: float | None, unit: str) -> str:
    """A value as people read it: fixed decimals for its unit, the unit always (no ``7.79e+04``)."""
    if value is None:
        return "—"
    text = f"{value:,.{DECIMALS.get(unit, 2)}f}".replace(",", " ")
    shown = UNIT_SHOWN.get(unit, unit)
    if not shown:
        return text
    return f"{text}{shown}" if shown == "°" else f"{text} {shown}"


def rule_label(rule: str) -> str:
    zh, en, _u, _k = RULES.get(rule, (rule, rule, "", 1.0))
    return zh if zh == en else f"{zh} {en}"


def alarm_value(rule: str, value: float | None) -> str:
    """An alarm's value in its rule's unit: a WIM overload in tonnes, a depth in metres."""
    _zh, _en, unit, k = RULES.get(rule, ("", "", "", 1.0))
    if rule in RULES and not unit:
        return "—"  # a flag (cover open, offline): the rule's name says it all
    return fmt_value(None if value is None else value * k, unit)
