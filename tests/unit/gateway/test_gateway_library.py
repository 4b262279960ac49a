"""The YAML library is today's compiled profiles, field for field, through the one loader."""

from __future__ import annotations

import dataclasses

import pytest

from gateway import profiles
from gateway.poller import derived_values
from tests.support.compiled_profiles import COMPILED


@pytest.mark.parametrize("compiled", COMPILED, ids=lambda p: p.name)
def test_yaml_library_equals_compiled_profile(compiled: profiles.Profile) -> None:
    loaded = profiles.get(compiled.name)
    for f in dataclasses.fields(compiled):
        assert getattr(loaded, f.name) == getattr(compiled, f.name) or f.name == "source", f.name
    assert loaded == compiled
    assert loaded.source.endswith(f"gateway/profiles/{compiled.name}.yaml")


def test_manhole_expression_matches_the_compiled_function() -> None:
    compiled = next(p for p in COMPILED if p.name == "manhole")
    for angle, bg in ((1.5, 1.4), (25.0, 1.4), (0.0, 179.99), (90.01, 0.37)):
        values = {"angle": angle, "background_angle": bg}
        assert derived_values(profiles.get("manhole"), values) == derived_values(compiled, values)


def test_library_names_and_paths_share_one_loader(tmp_path: object) -> None:
    lib = profiles.get("water_gauge")
    same = profiles.get(lib.source)  # a path to the very same file
    assert same == lib and same.source == lib.source
