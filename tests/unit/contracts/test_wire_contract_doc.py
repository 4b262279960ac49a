"""docs/wire-contract.md tells the truth: every example payload decodes with the real codecs.

Each fenced ``json`` block after a ``<!-- wire-example: KIND -->`` marker is decoded by KIND's
decoder in contracts/payloads.py; gateway uplink kinds also go through the ingester's gate
(cloud_ingest.validate.classify), which must accept them. ``<!-- wire-example: KIND rejects
REASON -->`` asserts the decoder and the gate refuse the block with that dead-letter reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from cloud_ingest.validate import Accepted, Limits, Rejected, classify
from contracts import payloads, topics
from contracts.errors import PayloadError

DOC = Path(__file__).resolve().parents[3] / "docs" / "wire-contract.md"
EXAMPLE = re.compile(r"<!-- wire-example: (\w+)(?: rejects (\w+))? -->\n```json\n(.*?)```", re.DOTALL)
GW = "gw-from-the-doc"

DECODERS: dict[str, Callable[[bytes], Any]] = {
    "telemetry": payloads.decode_telemetry,
    "events": payloads.decode_events,
    "status": payloads.decode_status,
    "ack": payloads.decode_ack,
    "cmd": payloads.decode_command,
    "cmd_result": payloads.decode_command_result,
    "alarm": payloads.decode_alarm,
    "alarm_ack": payloads.decode_alarm_ack,
    "case_open": payloads.decode_open_cases,
}
UPLINK = {"telemetry": topics.telemetry, "events": topics.events, "status": topics.status}


def examples() -> list[tuple[str, str | None, str]]:
    return [(m.group(1), m.group(2), m.group(3)) for m in EXAMPLE.finditer(DOC.read_text(encoding="utf-8"))]


def _ids() -> list[str]:
    return [f"{i}-{kind}{'-rejects-' + reason if reason else ''}" for i, (kind, reason, _b) in enumerate(examples())]


def test_the_doc_has_an_accepted_example_of_every_payload_and_no_stray_blocks() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert {kind for kind, reason, _b in examples() if reason is None} == set(DECODERS)
    assert text.count("```json") == len(examples()), "every json block in the doc needs a wire-example marker"


@pytest.mark.parametrize(("kind", "reason", "block"), examples(), ids=_ids())
def test_example_against_the_real_decoders(kind: str, reason: str | None, block: str) -> None:
    assert kind in DECODERS, f"unknown wire-example kind {kind!r}"
    obj = orjson.loads(block)
    if kind in ("telemetry", "events"):
        obj["gw"] = GW  # the doc's gateway names are illustrative; the gate compares gw with the topic
    raw = orjson.dumps(obj)
    if reason is None:
        DECODERS[kind](raw)
    else:
        with pytest.raises(PayloadError) as err:
            DECODERS[kind](raw)
        assert err.value.reason == reason
    if kind in UPLINK:
        times = re.findall(rb'"b?t"\s*:\s*([0-9.]+)', raw)
        now = max((float(t) for t in times if float(t) > 1e9), default=1764057600.0) + 60.0
        verdict = classify(UPLINK[kind](GW), raw, now, Limits())
        if reason is None:
            assert isinstance(verdict, Accepted), verdict
        else:
            assert isinstance(verdict, Rejected) and verdict.reason == reason, verdict
