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
