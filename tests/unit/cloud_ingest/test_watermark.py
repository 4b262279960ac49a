"""Ack watermark and gap bookkeeping (pure)."""

from __future__ import annotations

from cloud_ingest.watermark import AckTracker, advance, holes


def test_advance_and_holes() -> None:
    assert advance(0, [1, 2, 3, 5]) == 3
    assert advance(0, [2, 3]) == 0
    assert advance(3, [1, 2, 4]) == 4  # already-covered seqs are harmless
    assert holes(3, [5, 6, 9]) == [(4, 4), (7, 8)]
    assert holes(3, []) == []


def test_tracker_watermark_and_ack_payload() -> None:
    t = AckTracker(first_seq=1, grace_s=10, boots_kept=2)
    t.load(("gw", "b1"), [1, 2])
    assert t.ack_payload("gw") == {"b1": 2}
    assert t.add(("gw", "b1"), [4]) is False
    assert t.add(("gw", "b1"), [3]) is True
    assert t.wm[("gw", "b1")] == 4
    t.load(("gw", "b2"), [])
    assert t.ack_payload("gw") == {"b1": 4}  # b2 has nothing committed yet
    t.load(("gw", "b3"), [1])
    assert set(t.boots["gw"]) == {"b2", "b3"}  # only the recent boots are kept


def test_gap_recorded_after_grace_and_closed_when_filled() -> None:
    t = AckTracker(first_seq=1, grace_s=10)
    key = ("gw", "b1")
    t.load(key, [1, 2, 5])
    new, filled = t.check_gaps(now=100.0)
    assert new == [] and filled == []  # reordering is normal: wait for the grace period
    new, _ = t.check_gaps(now=111.0)
    assert [(g.first_seq, g.last_seq, g.detected_at) for g in new] == [(3, 4, 100.0)]
    assert t.check_gaps(now=120.0) == ([], [])  # recorded once
    t.add(key, [3, 4])
    new, filled = t.check_gaps(now=121.0)
    assert new == [] and filled == [("gw", "b1", 5)]


def test_hole_that_fills_within_grace_is_never_a_gap() -> None:
    t = AckTracker(first_seq=1, grace_s=10)
    t.load(("gw", "b1"), [1, 3])
    t.check_gaps(now=0.0)
    t.add(("gw", "b1"), [2])
    assert t.check_gaps(now=50.0) == ([], [])
