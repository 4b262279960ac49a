"""The profile library: the YAML files next to this module, and site profiles by file path.

``get(name_or_path)`` is what config validation, the poller, the simulator and the
documentation use. A bare name (``water_gauge``) is a library profile; anything with a
``/`` or ending in ``.yaml``/``.yml`` is a site profile file, read through the same loader
(:mod:`gateway.profile_schema`), cached by path and modification time.
"""

from __future__ import annotations

import functools
from pathlib import Path

from contracts.errors import ConfigError
from gateway.errors import ProfileError
from gateway.profile_schema import load_profile
from gateway.registers import Profile

LIBRARY_DIR = Path(__file__).resolve().parent
#: the device kinds the cloud has rules for; the library has a profile of each (site profiles may be ``generic``)
KINDS = ("water_gauge", "manhole", "lamp", "wim")


def is_path(ref: str) -> bool:
    """A profile reference that names a file rather than a library profile."""
    return "/" in ref or ref.endswith((".yaml", ".yml"))


@functools.cache
def _library() -> dict[str, Profile]:
    out: dict[str, Profile] = {}
    for path in sorted(LIBRARY_DIR.glob("*.yaml")):
        p = load_profile(path)
        if p.name != path.stem:
            raise ProfileError(f"{path}: profile name {p.name!r} differs from its file name")
        out[p.name] = p
    return out


@functools.lru_cache(maxsize=256)
def _site(path: str, _mtime_ns: int) -> Profile:
    p = load_profile(path)
    _check_events(p)
    return p


def _check_events(p: Profile) -> None:
    """A site profile's events must fit the schema the cloud checks (the library's), or they would be dead-lettered."""
    from gateway.events import event_schemas

    known = event_schemas(all_profiles())
    for kind, keys in event_schemas([p]).items():
        where = "records.event" if p.records is not None and p.records.event_kind == kind else "events"
        if kind not in known:
            raise ConfigError(p.source, where, kind, f"not an event kind the cloud knows: {', '.join(sorted(known))}")
        for key in keys:
            if key not in known[kind]:
                raise ConfigError(p.source, where, key, f"{kind} events have no body key {key!r}; "
                                  f"known: {', '.join(sorted(known[kind]))}")


def get(ref: str) -> Profile:
    """A library profile by name, or a site profile by file path (ConfigError if the file is invalid)."""
    if is_path(ref):
        p = Path(ref)
        try:
            mtime = p.stat().st_mtime_ns
        except OSError as exc:
            raise ConfigError(ref, "", ref, f"cannot read profile: {exc.strerror or exc}") from exc
        return _site(str(p.resolve()), mtime)
    try:
        return _library()[ref]
    except KeyError:
        raise ProfileError(f"unknown profile {ref!r}; known: {', '.join(sorted(_library()))}, "
                           f"or a path to a profile file") from None


def all_profiles() -> tuple[Profile, ...]:
    """The library's profiles, in file-name order."""
    return tuple(_library().values())


def names() -> tuple[str, ...]:
    return tuple(_library())


def check_ref(ref: str) -> str:
    """For config validators: the reference if it resolves to a valid profile, else ValueError with why."""
    try:
        get(ref)
    except (ProfileError, ConfigError) as exc:
        raise ValueError(str(exc)) from exc
    return ref


__all__ = ["KINDS", "Profile", "all_profiles", "check_ref", "get", "is_path", "names"]
