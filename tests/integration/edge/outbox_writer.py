"""A real outbox writer process for the kill -9 loop (run as a script, killed at random moments).

It appends readings (and now and then an event), forms batches inside a small window and
applies the ack watermark the test writes to ``ACKFILE``, printing one line *after* each
commit: ``A t|e n1 n2`` (appended ids n1..n2), ``B boot seq t|e n,n,...`` (batch members);
and ``P t|e n1 n2`` just *before* each append, so a sample whose commit outcome the kill
made unknown is still known to the test.
Sample n is the reading ``wl-0001/depth`` at ``T0 + n/1000`` or the event with id ``n``.

usage: outbox_writer.py DB BOOT BUDGET_BYTES ACKFILE FIRST_N SEED
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from contracts.reading import Event, Reading
from edge_agent.outbox import Outbox, RecordClass

T0 = 1_764_057_600.0
WINDOW = 4


def main() -> None:
    db, boot, budget, ackfile, first, seed = sys.argv[1:7]
    rng = random.Random(int(seed))
    n = int(first)
    ob = Outbox(db, int(budget), boot=boot)
    out = sys.stdout
    last_ack = ""
    first_burst = True
    while True:
        k = 60 if first_burst else rng.randint(1, 12)  # the burst alone exceeds the test's budget
        first_burst = False
        rs = [Reading("wl-0001", "depth", T0 + (n + i) / 1000, float(n + i), "m") for i in range(k)]
        es = []
        if rng.random() < 0.2:
            es = [Event("wim-0001", "vehicle", str(n + k), T0 + (n + k) / 1000, {"gross_kg": n})]
        out.write(f"P t {n} {n + k - 1}\n")
        if es:
            out.write(f"P e {n + k} {n + k}\n")
        out.flush()
        ob.append(rs, es)
        out.write(f"A t {n} {n + k - 1}\n")
        if es:
            out.write(f"A e {n + k} {n + k}\n")
        out.flush()
        n += k + 1
        if ob.unacked_count < WINDOW and rng.random() < 0.5:
            cls = RecordClass.EVENTS if rng.random() < 0.2 else RecordClass.TELEMETRY
            h = ob.form_batch(cls, 30, 1 << 20)
            if h is not None:
                if cls is RecordClass.TELEMETRY:
                    members = [round((r.ts - T0) * 1000) for r in ob.load_readings(h)]
                else:
                    members = [int(e.id) for e in ob.load_events(h)]
                out.write(f"B {h.boot} {h.seq} {'t' if cls is RecordClass.TELEMETRY else 'e'} "
                          f"{','.join(map(str, members))}\n")
                out.flush()
        text = Path(ackfile).read_text() if Path(ackfile).exists() else ""
        if text and text != last_ack:
            ob.ack({b: int(s) for b, s in json.loads(text).items()})
            last_ack = text


if __name__ == "__main__":
    main()
