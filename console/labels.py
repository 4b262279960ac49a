"""Bilingual labels (中文 first, English second) for states, roles, kinds and severities."""

from __future__ import annotations

STATES: dict[str, tuple[str, str]] = {
    "reported": ("上报", "reported"),
    "filed": ("立案", "filed"),
    "rejected": ("不予立案", "rejected"),
    "dispatched": ("派遣", "dispatched"),
    "in_handling": ("处置中", "in handling"),
    "handling": ("处置中", "in handling"),
    "handled": ("已处置", "handled"),
    "verified": ("已核查", "verified"),
    "closed": ("结案", "closed"),
    "returned": ("回退", "returned"),
    "extended": ("延期", "extended"),
    "extension_requested": ("申请延期", "extension requested"),
    "parked": ("挂账", "parked"),
    "cancelled": ("作废", "cancelled"),
}

ACTIONS: dict[str, tuple[str, str]] = {
    "file": ("立案", "file"),
    "reject": ("不予立案", "reject"),
    "dispatch": ("派遣", "dispatch"),
    "accept": ("接收", "accept"),
    "start": ("开始处置", "start handling"),
    "report_fix": ("处置反馈", "report fixed"),
    "fail_verification": ("核查不通过", "fail verification"),
    "resume": ("恢复处置", "resume"),
    "cancel": ("作废", "cancel"),
    "report": ("上报", "report"),
    "handle": ("处置反馈", "report handled"),
    "feedback": ("处置反馈", "report handled"),
    "verify": ("核查通过", "verify"),
    "close": ("结案", "close"),
    "return": ("回退", "return"),
    "request_extension": ("申请延期", "request extension"),
    "approve_extension": ("批准延期", "approve extension"),
    "deny_extension": ("驳回延期", "deny extension"),
    "park": ("挂账", "park"),
    "unpark": ("取消挂账", "unpark"),
    "reopen": ("重新打开", "reopen"),
}

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

URGENCIES: dict[str, tuple[str, str]] = {
    "normal": ("一般", "normal"),
    "urgent": ("紧急", "urgent"),
    "very_urgent": ("非常紧急", "very urgent"),
}

CLOSED_STATES = frozenset({"closed", "rejected", "cancelled"})


def zh_en(table: dict[str, tuple[str, str]], key: str) -> str:
    zh, en = table.get(key, (key, key))
    return zh if zh == en else f"{zh} {en}"
