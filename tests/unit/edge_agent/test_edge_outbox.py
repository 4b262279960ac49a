"""Outbox: append / batch / ack / crash / reopen against a plain in-memory model."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from contracts.reading import Event, Quality, Reading
from edge_agent.errors import OutboxError
from edge_agent.outbox import Outbox, RecordClass, event_body, event_nbytes, reading_nbytes


def _r(i: int, device: str = "wl-0001") -> Reading:
    return Reading(device, "depth", 1_764_057_600.0 + i, i / 100, "m", Quality.GOOD)


def _e(i: int) -> Event:
    return Event("wim-0001", "vehicle", str(i), 1_764_057_600.0 + i, {"gross_kg": 1000 + i})


def test_pragmas_and_roundtrip(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", 1 << 20, boot="b1")
    ob.append([_r(1), _r(2)], [_e(1)])
    db = sqlite3.connect(tmp_path / "o.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    h = ob.form_batch(RecordClass.TELEMETRY, 100, 1 << 20)
    assert h is not None and (h.boot, h.seq, h.n) == ("b1", 1, 2)
    assert ob.load_readings(h) == [_r(1), _r(2)]
    he = ob.form_batch(RecordClass.EVENTS, 100, 1 << 20)
    assert he is not None and he.seq == 2
    assert ob.load_events(he) == [_e(1)]
    assert ob.form_batch(RecordClass.TELEMETRY, 100, 1 << 20) is None
    assert ob.ack({"b1": 1}) == 2
    assert [b.seq for b in ob.unacked()] == [2]
    led = ob.ledger()
    assert (led.telemetry.appended, led.telemetry.acked, led.telemetry.present) == (2, 2, 0)
    assert ob.integrity_check() == "ok"
    ob.close()


def test_batch_respects_limits_and_survives_restart(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", 1 << 20, boot="b1")
    ob.append([_r(i) for i in range(10)])
    h1 = ob.form_batch(RecordClass.TELEMETRY, 4, 1 << 20)
    one = reading_nbytes(_r(0))
    h2 = ob.form_batch(RecordClass.TELEMETRY, 100, 2 * one)
    assert h1 is not None and h2 is not None
    assert (h1.n, h2.n) == (4, 2)
    ob.close()
    ob = Outbox(tmp_path / "o.db", 1 << 20, boot="b2")  # a restart: new boot, old batches kept
    assert [(b.boot, b.seq, b.n) for b in ob.unacked()] == [("b1", 1, 4), ("b1", 2, 2)]
    assert ob.load_readings(ob.unacked()[1]) == [_r(4), _r(5)]
    h3 = ob.form_batch(RecordClass.TELEMETRY, 100, 1 << 20)
    assert h3 is not None and (h3.boot, h3.seq, h3.n) == ("b2", 1, 4)
    assert ob.ack({"b1": 5}) == 6  # watermark of the old boot clears its batches only
    assert [b.boot for b in ob.unacked()] == ["b2"]
    ob.close()


def test_budget_drops_oldest_telemetry_then_events(tmp_path: Path) -> None:
    one = reading_nbytes(_r(0))
    ev_bytes = event_nbytes(_e(0), event_body(_e(0)))
    ob = Outbox(tmp_path / "o.db", 10 * one + 2 * ev_bytes, boot="b1")
    ob.append([_r(i) for i in range(10)], [_e(0), _e(1)])
    assert ob.ledger().telemetry.dropped == 0
    res = ob.append([_r(i) for i in range(10, 13)])
    assert (res.dropped_telemetry, res.dropped_events) == (3, 0)
    h = ob.form_batch(RecordClass.TELEMETRY, 100, 1 << 20)
    assert h is not None and ob.load_readings(h)[0] == _r(3)  # 0, 1, 2 went first
    led = ob.ledger()
    assert led.events.present == 2 and led.telemetry.dropped == 3
    # everything telemetry is batched (exempt): the next overflow must take events
    res = ob.append([], [_e(2)])
    assert res.dropped_events == 1
    assert [e.id for e in ob.load_events(ob.form_batch(RecordClass.EVENTS, 100, 1 << 20))] == ["1", "2"]  # type: ignore[arg-type]
    ob.close()


def test_bad_path_is_outbox_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutboxError):
        Outbox(tmp_path / "f" / "o.db", 100, boot="b")


class OutboxMachine(RuleBasedStateMachine):
    """Model: per class, an ordered list of (key, nbytes) of unbatched rows; batches by (boot, seq)."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0
        self.boot_no = 0

    @initialize(budget_rows=st.integers(3, 40))
    def setup(self, budget_rows: int) -> None:
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="outbox-sm-"))
        self.budget = budget_rows * reading_nbytes(_r(0))
        self.boot = "b0"
        self.ob = Outbox(self.dir / "o.db", self.budget, boot=self.boot)
        self.unbatched: dict[RecordClass, list[tuple[object, int]]] = {c: [] for c in RecordClass}
        self.batches: dict[tuple[str, int], tuple[RecordClass, list[object]]] = {}
        self.appended = dict.fromkeys(RecordClass, 0)
        self.acked = dict.fromkeys(RecordClass, 0)
        self.dropped = dict.fromkeys(RecordClass, 0)
        self.seq = 0

    @rule(n_read=st.integers(0, 8), n_ev=st.integers(0, 2))
    def append(self, n_read: int, n_ev: int) -> None:
        rs = []
        es = []
        for _ in range(n_read):
            self.n += 1
            rs.append(_r(self.n, device=f"d{self.n % 3}"))
        for _ in range(n_ev):
            self.n += 1
            es.append(_e(self.n))
        self.ob.append(rs, es)
        for r in rs:
            self.unbatched[RecordClass.TELEMETRY].append(((r.device, r.metric, r.ts), reading_nbytes(r)))
        for e in es:
            self.unbatched[RecordClass.EVENTS].append(((e.device, e.kind, e.id), event_nbytes(e, event_body(e))))
        self.appended[RecordClass.TELEMETRY] += len(rs)
        self.appended[RecordClass.EVENTS] += len(es)
        # mirror the policy: drop oldest unbatched telemetry, then events, until within budget
        batched_bytes = sum(h.nbytes for h in self.ob.unacked())
        for cls in (RecordClass.TELEMETRY, RecordClass.EVENTS):
            while batched_bytes + sum(b for rows in self.unbatched.values() for _, b in rows) > self.budget:
                if not self.unbatched[cls]:
                    break
                self.unbatched[cls].pop(0)
                self.dropped[cls] += 1

    @precondition(lambda self: self.ob.unacked_count < 6)
    @rule(cls=st.sampled_from(list(RecordClass)), max_records=st.integers(1, 10))
    def form(self, cls: RecordClass, max_records: int) -> None:
        h = self.ob.form_batch(cls, max_records, 1 << 20)
        if not self.unbatched[cls]:
            assert h is None
            return
        assert h is not None
        self.seq += 1
        assert (h.boot, h.seq) == (self.boot, self.seq)
        take = self.unbatched[cls][: h.n]
        assert h.n == min(max_records, len(self.unbatched[cls]))
        del self.unbatched[cls][: h.n]
        self.batches[(h.boot, h.seq)] = (cls, [k for k, _ in take])

    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        boots = sorted({b for b, _ in self.batches} | {self.boot})
        boot = data.draw(st.sampled_from(boots))
        seq = data.draw(st.integers(0, self.seq + 1))
        deleted = self.ob.ack({boot: seq})
        expect = 0
        for key in [k for k in self.batches if k[0] == boot and k[1] <= seq]:
            cls, keys = self.batches.pop(key)
            self.acked[cls] += len(keys)
            expect += len(keys)
        assert deleted == expect

    @rule()
    def relabel_old_boots(self) -> None:
        old = [h for h in self.ob.unacked() if h.boot != self.boot]
        moved = self.ob.relabel([h.id for h in old])
        assert len(moved) == len(old)
        for h_old, h_new in zip(old, moved, strict=True):
            self.seq += 1
            assert (h_new.boot, h_new.seq) == (self.boot, self.seq)
            self.batches[(h_new.boot, h_new.seq)] = self.batches.pop((h_old.boot, h_old.seq))

    @rule(new_boot=st.booleans())
    def crash_and_reopen(self, new_boot: bool) -> None:
        # drop the connection without any goodbye, as a crash would, then reopen
        self.ob._db.close()
        if new_boot:
            self.boot_no += 1
            self.boot = f"b{self.boot_no}"
            self.seq = 0
        self.ob = Outbox(self.dir / "o.db", self.budget, boot=self.boot)

    @invariant()
    def ledger_holds(self) -> None:
        if not hasattr(self, "ob"):
            return
        led = self.ob.ledger()
        for cls, cl in ((RecordClass.TELEMETRY, led.telemetry), (RecordClass.EVENTS, led.events)):
            assert cl.appended == self.appended[cls]
            assert cl.acked == self.acked[cls]
            assert cl.dropped == self.dropped[cls]
            in_batches = sum(len(keys) for c, keys in self.batches.values() if c == cls)
            assert cl.present == len(self.unbatched[cls]) + in_batches
            assert cl.appended == cl.present + cl.acked + cl.dropped
            assert cl.unbatched == len(self.unbatched[cls])

    @invariant()
    def batches_are_stable(self) -> None:
        if not hasattr(self, "ob"):
            return
        got = {(h.boot, h.seq): h for h in self.ob.unacked()}
        assert set(got) == set(self.batches)
        for key, (cls, keys) in self.batches.items():
            h = got[key]
            if cls is RecordClass.TELEMETRY:
                assert [(r.device, r.metric, r.ts) for r in self.ob.load_readings(h)] == keys
            else:
                assert [(e.device, e.kind, e.id) for e in self.ob.load_events(h)] == keys

    @invariant()
    def within_budget_or_all_exempt(self) -> None:
        if not hasattr(self, "ob"):
            return
        led = self.ob.ledger()
        if self.ob.bytes > self.budget:
            assert led.telemetry.unbatched == 0 and led.events.unbatched == 0

    def teardown(self) -> None:
        if hasattr(self, "ob"):
            assert self.ob.integrity_check() == "ok"
            self.ob.close()
            import shutil

            shutil.rmtree(self.dir, ignore_errors=True)


OutboxMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, suppress_health_check=[HealthCheck.too_slow], deadline=None
)
TestOutboxMachine = OutboxMachine.TestCase


def test_disk_full_before_budget_drops_by_policy_and_counts(tmp_path: Path) -> None:
    # max_page_count makes SQLite answer SQLITE_FULL, as a full disk would
    ob = Outbox(tmp_path / "o.db", 1 << 30, boot="b1", max_pages=40)
    n = 0
    for i in range(300):
        ob.append([_r(n + k) for k in range(20)], [_e(i)] if i % 30 == 0 else [])
        n += 20
    led = ob.ledger()
    assert ob.disk_full_cap is not None and led.telemetry.dropped > 0
    assert led.events.dropped == 0 and led.events.present == 10
    assert led.telemetry.appended == n == led.telemetry.present + led.telemetry.dropped
    # the newest readings survived
    h = ob.form_batch(RecordClass.TELEMETRY, 100000, 1 << 30)
    assert h is not None and ob.load_readings(h)[-1] == _r(n - 1)
    assert ob.integrity_check() == "ok"
    ob.close()


def test_relabel_moves_old_boot_batches_to_current_boot(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", 1 << 20, boot="b0")
    ob.append([_r(i) for i in range(6)])
    h0 = ob.form_batch(RecordClass.TELEMETRY, 3, 1 << 20)
    ob.close()
    ob = Outbox(tmp_path / "o.db", 1 << 20, boot="b1")
    h1 = ob.form_batch(RecordClass.TELEMETRY, 3, 1 << 20)
    assert h0 is not None and h1 is not None and h1.seq == 1
    moved = ob.relabel([h0.id, h1.id])  # the current boot's batch is left alone
    assert [(h.boot, h.seq, h.first_id) for h in moved] == [("b1", 2, h0.first_id)]
    assert ob.load_readings(moved[0]) == [_r(0), _r(1), _r(2)]
    assert ob.ack({"b0": 99}) == 0 and ob.ack({"b1": 2}) == 6
    ob.close()
    assert Outbox(tmp_path / "o.db", 1 << 20, boot="b1").last_seq == 2  # persisted


def test_agent_refuses_overbooked_bus(tmp_path: Path) -> None:
    from edge_agent.cli import overbooked
    from edge_agent.config import parse_agent_config

    text = f"""
gateway: {{id: gw-1}}
mqtt: {{url: "mqtt://127.0.0.1:1883"}}
outbox: {{path: {tmp_path}/o.db, budget_bytes: 10000000}}
buses: [{{id: b1, type: rtu, serial: /dev/null, baud: 9600}}]
devices:
""" + "".join(f"  - {{id: wl-{i:04d}, profile: water_gauge, bus: b1, unit_id: {i + 1}, poll_interval_s: 60,"
              f" storm_poll_interval_s: 0.2}}\n" for i in range(10))
    cfg = parse_agent_config(text, "gw.yaml")
    assert overbooked(cfg, 0.8, show=False) == ["b1"]  # fine at 60 s, not with every gauge at 0.2 s
