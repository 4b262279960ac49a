"""Cases that a stream of alarm transitions would have opened, for ``citywatch backtest``.

Uses the bridge's own policy (:func:`case_bridge.policy.lookup_key`) over the default
category table, so a backtest counts what the bridge would do: rules that map to no case
open none, and a raise attaches to an open case with the same correlation key. A clear
stands in for the fix being verified (history has no handlers). History
carries no device registry, so circuit/grid correlation falls back to per (device, rule).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from functools import cache

from case_bridge.config import Catalog, load_catalog
from case_bridge.policy import PolicyConfig, lookup_key
from contracts.alarms import AlarmTransition, TransitionKind


@cache
def _default_catalog() -> Catalog:
    return load_catalog()


def cases_would_open(transitions: Sequence[AlarmTransition], catalog: Catalog | None = None) -> dict[str, int]:
    """Cases per alarm rule: a raise opens one unless its key has an open case; a clear closes it."""
    config = PolicyConfig(catalog or _default_catalog())
    open_keys: set[str] = set()
    key_of_alarm: dict[str, str] = {}
    counts: dict[str, int] = defaultdict(int)
    for tr in transitions:
        if tr.kind is TransitionKind.RAISED:
            key = lookup_key(tr, None, config)
            if key is None:
                continue
            key_of_alarm[tr.alarm_id] = key
            if key not in open_keys:
                open_keys.add(key)
                counts[tr.rule] += 1
        elif tr.kind is TransitionKind.CLEARED and tr.alarm_id in key_of_alarm:
            open_keys.discard(key_of_alarm.pop(tr.alarm_id))
    return dict(counts)
