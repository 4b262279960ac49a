"""A birth's device objects are still refused for NUL characters or deep nesting anywhere in them (the check was
unrolled one level for speed: a birth lists ~1 000 devices)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from contracts.errors import PayloadError
from contracts.payloads import decode_status

GOOD = {"id": "wl-0001", "profile": "radar", "kind": "water_gauge", "lat": 30.2, "tags": ["a"]}


def birth(device: dict[str, Any]) -> bytes:
    return orjson.dumps({"v": 1, "state": "online", "boot": "b-1", "agent": "x", "devices": [device], "health": {}})


def deep(n: int) -> Any:
    return {"x": deep(n - 1)} if n else 1


@pytest.mark.parametrize("extra", [
    {"note": "a\x00b"}, {"no\x00te": 1}, {"tags": ["a\x00"]}, {"more": {"k": ["\x00"]}}, {"more": deep(17)},
])
def test_nul_or_depth_anywhere_in_a_device_is_refused(extra: dict[str, Any]) -> None:
    with pytest.raises(PayloadError):
        decode_status(birth({**GOOD, **extra}))


def test_a_clean_device_with_unknown_fields_decodes() -> None:
    st = decode_status(birth({**GOOD, "more": {"k": [1, 2.5, "s"]}, "flag": True}))
    assert [d.id for d in st.devices] == ["wl-0001"]
