"""The one reconnect backoff of every MQTT client in the project."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Exponential backoff with "equal jitter": uniform(c/2, c) with c = min(cap, base * 2**attempt).

    Jitter spreads the reconnects of many clients after a broker restart (no takeover storm);
    the c/2 floor keeps a dead broker from being retried in a tight loop.
    """
    ceiling = min(cap_s, base_s * (2 ** min(attempt, 30)))
    return rng.uniform(ceiling / 2, ceiling)
