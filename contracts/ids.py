"""Gateway and device ids: safe in MQTT topics (never ``+``, ``#``, ``/``) and as keys."""

from __future__ import annotations

import re

from contracts.errors import InvalidId

ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def validate_id(value: object, kind: str = "id") -> str:
    """Return ``value`` if it is a valid id, else raise :class:`InvalidId` naming ``kind``."""
    if not is_valid_id(value):
        raise InvalidId(f"invalid {kind} {value!r}: must match [a-z0-9][a-z0-9-]{{0,62}}")
    assert isinstance(value, str)
    return value
