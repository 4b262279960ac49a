"""Pure parts of notifications (formats, DingTalk signing, backoff, escalation) and verification."""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.parse

from case_bridge.config import TargetKind
from case_bridge.lifecycle import AlarmView, Verdict, verification
from case_bridge.notify import (
    Notice,
    backoff_s,
    dingtalk_sign,
    dingtalk_url,
    escalated,
    http_body,
    notice_from,
    notice_json,
)

N = Notice("k", "CRITICAL road-water-depth @ wl-0001", ("value=0.42",), "critical", {"case_id": 7})


def test_dingtalk_signature_matches_the_documented_recipe() -> None:
    secret, ts = "SEC000000", 1764057600000
    raw = hmac.new(secret.encode(), f"{ts}\n{secret}".encode(), hashlib.sha256).digest()
    assert urllib.parse.unquote_plus(dingtalk_sign(secret, ts)) == base64.b64encode(raw).decode()
    url = dingtalk_url("https://oapi.dingtalk.com/robot/send?access_token=t", secret, ts)
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert q["timestamp"] == [str(ts)] and q["access_token"] == ["t"]
    assert dingtalk_url("https://x/robot/send?access_token=t", None, ts) == "https://x/robot/send?access_token=t"


def test_bodies() -> None:
    d = http_body(TargetKind.DINGTALK, N)
    assert d["msgtype"] == "markdown" and d["markdown"]["title"] == N.title and "value=0.42" in d["markdown"]["text"]
    w = http_body(TargetKind.WECOM, N)
    assert w["msgtype"] == "markdown" and '<font color="warning">' in w["markdown"]["content"]
    g = http_body(TargetKind.WEBHOOK, N)
    assert g["key"] == "k" and g["data"] == {"case_id": 7} and g["v"] == 1


def test_backoff_doubles_and_caps() -> None:
    assert [backoff_s(a, 1.0, 10.0) for a in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert backoff_s(2, 1.0, 10.0, jitter=0.2) == 2.4


def test_notice_round_trip_and_escalated_form() -> None:
    assert notice_from(notice_json(N)) == N
    e = escalated(N)
    assert e.key == "k:escalated" and e.title.startswith("[升级]") and e.lines == N.lines


def av(active: bool, cleared_at: float | None = None, raised_at: float = 0.0) -> AlarmView:
    return AlarmView("a", "mh-1", "manhole-tilt", active, "major", 0.0, 30.0 if active else 0.5, cleared_at, raised_at)


def test_verification_decisions() -> None:
    assert verification(1000.0, [av(True)], 600, 1010.0).verdict is Verdict.FAIL
    assert verification(1000.0, [av(True)], 600, 1010.0, grace_s=60).verdict is Verdict.WAIT
    assert verification(1000.0, [av(True)], 600, 1061.0, grace_s=60).verdict is Verdict.FAIL
    back = verification(1000.0, [av(True, raised_at=1005.0)], 600, 1010.0, grace_s=60)
    assert back.verdict is Verdict.FAIL and back.evidence["reason"] == "alarm raised again inside the hold time"
    assert verification(1000.0, [av(False, 900.0)], 600, 1599.0).verdict is Verdict.WAIT
    ok = verification(1000.0, [av(False, 900.0)], 600, 1600.0)
    assert ok.verdict is Verdict.VERIFY and ok.normal_since == 1000.0
    late_clear = verification(1000.0, [av(False, 1200.0)], 600, 1700.0)
    assert late_clear.verdict is Verdict.WAIT and late_clear.normal_since == 1200.0
    assert verification(1000.0, [], 600, 1600.0).verdict is Verdict.VERIFY  # no linked alarm: time alone
