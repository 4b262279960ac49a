"""Offline from the last will or from staleness: the will is lost when a cluster node dies."""

from __future__ import annotations

from contracts.liveness import MIN_STALE_S, liveness


def test_status_offline_is_the_will() -> None:
    assert liveness(False, 100.0, 100.0, 5.0, 101.0) == (False, "will")


def test_silent_too_long_is_stale_even_when_the_retained_status_says_online() -> None:
    assert liveness(True, 0.0, 0.0, 120.0, 3 * 120.0 + 1) == (False, "stale")
    assert liveness(True, 0.0, 0.0, 120.0, 3 * 120.0 - 1) == (True, None)


def test_short_intervals_are_not_stale_before_three_missed_heartbeats() -> None:
    assert liveness(True, 0.0, 0.0, 1.0, MIN_STALE_S - 1) == (True, None)
    assert liveness(True, 0.0, None, 1.0, MIN_STALE_S + 1) == (False, "stale")


def test_a_heartbeat_keeps_a_device_without_recent_samples_online() -> None:
    assert liveness(True, 0.0, 1000.0, 1.0, 1001.0) == (True, None)
    assert liveness(True, None, None, None, 1e9) == (True, None)
