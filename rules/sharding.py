"""Rules sharded by gateway: which runner owns a gateway's devices (pure).

Rule state is per device and a device belongs to one gateway, so hashing the gateway id gives
every device exactly one runner without a shared registry: runner ``i`` of ``n`` evaluates the
gateways with ``shard_of(gw, n) == i`` and ignores the rest. The hash is stable across
processes and Python versions (BLAKE2b, not ``hash()``), so a replacement runner for shard
``i`` resumes exactly the devices its predecessor had, from the same persisted state.
"""

from __future__ import annotations

import hashlib


def shard_of(gw: str, count: int) -> int:
    """The shard (0..count-1) that owns gateway ``gw``."""
    if count < 1:
        raise ValueError(f"shard count must be >= 1, got {count}")
    digest = hashlib.blake2b(gw.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n; ValueError otherwise."""
    index, sep, count = text.partition("/")
    if not sep or not index.isdigit() or not count.isdigit():
        raise ValueError(f"shard must look like 'i/n' (e.g. '0/3'), got {text!r}")
    i, n = int(index), int(count)
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard index must be in 0..{n - 1}, got {text!r}")
    return i, n


def owns(shard: tuple[int, int] | None, gw: str) -> bool:
    """True when the runner of ``shard`` (None: unsharded) evaluates gateway ``gw``."""
    return shard is None or shard_of(gw, shard[1]) == shard[0]
