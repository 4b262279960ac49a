"""Hash shards by gateway: every gateway in exactly one shard, stable across processes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.config import RulesSettings
from rules.runner import decode_inputs
from rules.sharding import owns, parse_shard, shard_of

GW = st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True)


@given(GW, st.integers(1, 16))
def test_every_gateway_has_exactly_one_owner(gw: str, n: int) -> None:
    owners = [i for i in range(n) if owns((i, n), gw)]
    assert owners == [shard_of(gw, n)]


def test_the_hash_is_stable_not_python_hash() -> None:
    assert shard_of("gw-e2e-01", 2) == shard_of("gw-e2e-01", 2)
    assert [shard_of(f"gw-{i}", 3) for i in range(6)] == [shard_of(f"gw-{i}", 3) for i in range(6)]
    assert {shard_of(f"gw-{i}", 3) for i in range(60)} == {0, 1, 2}  # spreads


@pytest.mark.parametrize("text", ["1", "2/2", "-1/2", "a/b", "0/0"])
def test_bad_shard_specs_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_shard(text)
    with pytest.raises(ValueError):
        RulesSettings(shard=text)


def test_a_runner_ignores_other_shards_gateways() -> None:
    from contracts.payloads import encode_telemetry
    from contracts.reading import Reading

    mine, other = next((g, h) for g in ("a1", "a2", "a3", "a4") for h in ("b1", "b2", "b3", "b4")
                       if shard_of(g, 2) == 0 and shard_of(h, 2) == 1)
    for gw, expect in ((mine, 1), (other, 0)):
        payload = encode_telemetry(gw, "b", 1, [Reading("d1", "depth", 1.0, 0.1, "m")])
        got = decode_inputs(f"citywatch/v1/gw/{gw}/telemetry", payload, 1.0, 1 << 20, shard=(0, 2))
        assert len(got) == expect
