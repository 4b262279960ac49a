"""docs/devices.md is generated from the profiles and must be current."""

from __future__ import annotations

from pathlib import Path

from gateway.docs import render_devices_md
from gateway.profiles import all_profiles

DOC = Path(__file__).resolve().parents[3] / "docs" / "devices.md"


def test_devices_doc_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == render_devices_md(), (
        "docs/devices.md is stale: run `.venv/bin/python -m gateway.docs > docs/devices.md`"
    )


def test_doc_lists_every_field() -> None:
    text = render_devices_md()
    for p in all_profiles():
        assert f"## `{p.name}`" in text
        for f in p.fields:
            assert f"`{f.name}`" in text
