"""The device profiles: one module per device type, one registry.

``get(name)`` / ``all_profiles()`` are what config validation, the poller, the simulator
and the documentation use; adding a device type means adding a module and a line here.
"""

from __future__ import annotations

from gateway.errors import ProfileError
from gateway.profiles.lamp import LAMP
from gateway.profiles.manhole import MANHOLE
from gateway.profiles.water_gauge import WATER_GAUGE, WATER_GAUGE_I32
from gateway.profiles.wim import WIM
from gateway.registers import Profile

_REGISTRY: dict[str, Profile] = {p.name: p for p in (WATER_GAUGE, WATER_GAUGE_I32, MANHOLE, LAMP, WIM)}

KINDS = ("water_gauge", "manhole", "lamp", "wim")


def get(name: str) -> Profile:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ProfileError(f"unknown profile {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def all_profiles() -> tuple[Profile, ...]:
    return tuple(_REGISTRY.values())


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


__all__ = ["KINDS", "Profile", "all_profiles", "get", "names"]
