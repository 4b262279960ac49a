"""The load generator's in-memory outbox and pre-encoded readings: the edge outbox's discipline, exactly."""

from __future__ import annotations

import itertools
from pathlib import Path

import orjson
import pytest

from citywatch.loadbox import MemOutbox, chunks_of
from citywatch.loadplan import Chunk, LoadPlan, chunks_at, make_plan, readings_at
from contracts import payloads
from contracts.reading import Event, Reading
from edge_agent.outbox import Outbox, RecordClass, reading_nbytes

T0 = 1_764_057_600.125
MIX = {"water_gauge": 0.3, "manhole": 0.3, "lamp": 0.3, "wim": 0.1}  # every kind, WIM's unitless metric too


def _plan() -> LoadPlan:
    return make_plan(["gw-lb-01", "gw-lb-02"], 40, 30.0, mix=MIX, storm_fraction=0.5, storm_start_s=5.0,
                     storm_end_s=40.0, seed=11)


def _chunks(n_devices: int, tick: int = 0) -> tuple[list[Chunk], int]:
    plan = make_plan(["gw-lb-01"], n_devices, n_devices / 2.0, mix={"water_gauge": 1.0}, seed=3)
    gp = plan.gateways[0]
    out: list[Chunk] = []
    total = 0
    for t in range(tick, tick + 40):
        ch, n = chunks_at(plan, gp, t, T0 + t)
        out += ch
        total += n
    return out, total


def _readings(box: MemOutbox, gw: str = "gw-lb-01") -> list[Reading]:
    out: list[Reading] = []
    for h in box.unacked():
        out += payloads.decode_telemetry(box.payload(gw, h)).readings
    return out


def test_chunks_are_the_bytes_encode_telemetry_makes_of_readings_at() -> None:
    plan = _plan()
    storm_seen = False
    for gp in plan.gateways:
        for tick in range(60):
            readings = readings_at(plan, gp, tick, T0 + tick)
            chunks, n = chunks_at(plan, gp, tick, T0 + tick)
            assert n == len(readings) == sum(c[0] for c in chunks)
            assert sum(c[1] for c in chunks) == sum(reading_nbytes(r) for r in readings)
            storm_seen |= any(r.metric == "depth" and r.value > 0.2 for r in readings)
            if not readings:
                continue
            head = orjson.dumps({"v": payloads.VERSION, "gw": gp.gw, "boot": "b" * 12, "seq": 7, "e": []})
            ours = head[:-2] + b",".join(c[2] for c in chunks) + b"]}"
            assert ours == payloads.encode_telemetry(gp.gw, "b" * 12, 7, readings)
            assert chunks_of(readings) == chunks
    assert storm_seen


def test_batches_take_whole_chunks_in_order_with_the_next_seq() -> None:
    chunks, total = _chunks(30)
    box = MemOutbox(1 << 24, "boot-a")
    box.append_chunks(chunks)
    assert box.unbatched(RecordClass.TELEMETRY) == total
    heads = []
    while (h := box.form_batch(RecordClass.TELEMETRY, 50, 1 << 20)) is not None:
        heads.append(h)
    assert [h.seq for h in heads] == list(range(1, len(heads) + 1))
    assert all(h.n <= 50 and h.n % 3 == 0 for h in heads)  # a gauge's 3 readings never split
    assert sum(h.n for h in heads) == total and heads[0].first_id == 1 and heads[-1].last_id == total
    assert all(a.last_id + 1 == b.first_id for a, b in itertools.pairwise(heads))
    sent = _readings(box)
    assert len(sent) == total and [(r.device, r.metric) for r in sent][:3] == [
        (sent[0].device, "depth"), (sent[0].device, "distance"), (sent[0].device, "battery")]
    # a resend is byte-identical
    assert all(box.payload("gw-lb-01", h) == box.payload("gw-lb-01", h) for h in heads)
    assert box.load_readings(heads[0]) == payloads.decode_telemetry(box.payload("gw-x", heads[0])).readings


def test_max_bytes_cuts_a_batch_but_it_takes_at_least_one_chunk() -> None:
    chunks, _ = _chunks(10)
    box = MemOutbox(1 << 24, "boot-a")
    box.append_chunks(chunks)
    h = box.form_batch(RecordClass.TELEMETRY, 500, chunks[0][1] + chunks[1][1])
    assert h is not None and h.n == 6 and h.nbytes == chunks[0][1] + chunks[1][1]
    h = box.form_batch(RecordClass.TELEMETRY, 1, 1)
    assert h is not None and h.n == 3  # one whole device sample even above both limits


def test_only_the_watermark_deletes_and_the_ledger_is_exact() -> None:
    chunks, total = _chunks(30)
    box = MemOutbox(1 << 24, "boot-a")
    box.append_chunks(chunks)
    heads = [box.form_batch(RecordClass.TELEMETRY, 60, 1 << 20) for _ in range(3)]
    assert all(h is not None for h in heads)
    assert box.ack({"other-boot": 99}) == 0 and box.unacked_count == 3  # another boot's watermark
    assert box.ack({"boot-a": 0}) == 0
    n1 = heads[0].n if heads[0] else 0
    assert box.ack({"boot-a": 1}) == n1
    assert [h.seq for h in box.unacked()] == [2, 3]  # the rest stays for resends, in order
    assert box.ack({"boot-a": 1}) == 0  # the same watermark again deletes nothing
    led = box.ledger().telemetry
    assert (led.appended, led.acked, led.dropped) == (total, n1, 0)
    assert led.present == total - n1 and led.appended == led.present + led.acked + led.dropped
    assert box.ack({"boot-a": 3}) == sum(h.n for h in heads[1:] if h)
    while box.form_batch(RecordClass.TELEMETRY, 60, 1 << 20) is not None:
        pass
    box.ack({"boot-a": box.last_seq})
    led = box.ledger().telemetry
    assert (led.appended, led.acked, led.present, led.unbatched, led.present_bytes) == (total, total, 0, 0, 0)


def test_budget_drops_the_oldest_unbatched_telemetry_first_never_a_batch() -> None:
    chunks, _ = _chunks(20)
    size = chunks[0][1]
    box = MemOutbox(size * 10, "boot-a")  # room for 10 device samples
    box.append_chunks(chunks[:4])
    h = box.form_batch(RecordClass.TELEMETRY, 6, 1 << 20)  # 2 samples batched: exempt from dropping
    assert h is not None
    res = box.append_chunks(chunks[4:20])
    assert res.dropped_telemetry == 3 * 10 and box.bytes <= box.budget_bytes
    led = box.ledger().telemetry
    assert led.appended == 60 and led.dropped == 30 and led.present == 30
    assert led.appended == led.present + led.acked + led.dropped
    assert box.unacked()[0] == h and box.payload("g", h).count(b'"bn"') == 2
    nxt = box.form_batch(RecordClass.TELEMETRY, 500, 1 << 20)
    assert nxt is not None and nxt.first_id == h.last_id + 30 + 1  # ids skip the dropped rows, as on disk
    sent = payloads.decode_telemetry(box.payload("g", nxt)).readings
    # samples 2..11 were dropped (0 and 1 are batched): the next batch starts at sample 12
    assert sent[0].device == orjson.loads(b"[" + chunks[12][2] + b"]")[0]["bn"][:-1]


def test_events_and_readings_through_the_outbox_port_match_the_disk_outbox(tmp_path: Path) -> None:
    readings = [Reading(f"wl-{i}", "depth", T0, i / 100, "m") for i in range(12)]  # one per device sample
    events = [Event("wim-1", "vehicle", str(i), T0, {"gross_kg": 1000 + i}) for i in range(3)]
    mem = MemOutbox(1 << 24, "boot-a")
    disk = Outbox(tmp_path / "o.db", 1 << 24, "boot-a")
    for box in (mem, disk):
        box.append(readings, events)
    for cls in (RecordClass.EVENTS, RecordClass.TELEMETRY, RecordClass.TELEMETRY):
        a = mem.form_batch(cls, 5, 1 << 20)
        b = disk.form_batch(cls, 5, 1 << 20)
        assert a is not None and b is not None
        assert (a.seq, a.cls, a.n, a.nbytes) == (b.seq, b.cls, b.n, b.nbytes)
        if cls is RecordClass.EVENTS:
            assert mem.load_events(a) == disk.load_events(b)
        else:
            assert mem.load_readings(a) == disk.load_readings(b)
    assert mem.ack({"boot-a": 2}) == disk.ack({"boot-a": 2})
    assert mem.ledger() == disk.ledger()
    disk.close()


def test_relabel_gives_old_boot_batches_new_seqs_of_this_boot() -> None:
    chunks, _ = _chunks(4)
    box = MemOutbox(1 << 24, "boot-a")
    box.append_chunks(chunks)
    h1 = box.form_batch(RecordClass.TELEMETRY, 3, 1 << 20)
    assert h1 is not None
    box.boot = "boot-b"  # a later boot of the same gateway
    h2 = box.form_batch(RecordClass.TELEMETRY, 3, 1 << 20)
    assert h2 is not None and (h2.boot, h2.seq) == ("boot-b", 2)
    moved = box.relabel([h1.id, h2.id])
    assert [(h.id, h.boot, h.seq) for h in moved] == [(h1.id, "boot-b", 3)]
    assert [(h.boot, h.seq) for h in box.unacked()] == [("boot-b", 3), ("boot-b", 2)]
    assert box.ack({"boot-b": 3}) == 6


def test_rejects_a_bad_budget_or_policy() -> None:
    with pytest.raises(ValueError):
        MemOutbox(0, "b")
    with pytest.raises(ValueError):
        MemOutbox(1, "b", policy="keep_everything")  # type: ignore[arg-type]
