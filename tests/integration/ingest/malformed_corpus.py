"""A corpus of malformed payloads, each with the dead-letter reason it must produce.

Every entry is ``(name, kind, make(seq) -> bytes, reason)``; ``kind`` is the topic kind the
payload is published on, for gateway ``GW``. Times are relative to ``now``.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

GW = "gw-m"
BOOT = "bm"

Entry = tuple[str, str, Callable[[int, float], bytes], str]


def env(seq: int, **over: object) -> dict[str, object]:
    base: dict[str, object] = {"v": 1, "gw": GW, "boot": BOOT, "seq": seq}
    base.update(over)
    return base


def tele(seq: int, now: float, rec: dict[str, object] | None = None, /, **over: object) -> bytes:
    r: dict[str, object] = {"bn": "wl-m/", "bt": now - 5, "n": "depth", "u": "m", "v": 0.5}
    if rec:
        r.update(rec)
    return orjson.dumps({**env(seq), "e": [r], **over})


def raw_tele(seq: int, now: float, value_literal: str) -> bytes:
    """A record whose value is a literal orjson would never write (NaN, Infinity, 1e309...)."""
    return (
        f'{{"v":1,"gw":"{GW}","boot":"{BOOT}","seq":{seq},"e":[{{"bn":"wl-m/","bt":{now - 5},'
        f'"n":"depth","u":"m","v":{value_literal}}}]}}'
    ).encode()


def event(seq: int, now: float, /, **rec: object) -> bytes:
    e: dict[str, object] = {"device": "wim-m", "kind": "vehicle", "id": "1", "t": now - 5, "body": {"axles": 2}}
    e.update(rec)
    return orjson.dumps({**env(seq), "events": [e]})


def status(**over: object) -> bytes:
    s: dict[str, object] = {"v": 1, "state": "online", "boot": BOOT, "agent": "x", "devices": [], "health": {}}
    s.update(over)
    return orjson.dumps(s)


def _without(key: str) -> Callable[[int, float], bytes]:
    def make(seq: int, now: float) -> bytes:
        obj = orjson.loads(tele(seq, now))
        del obj[key]
        return orjson.dumps(obj)

    return make


CORPUS: list[Entry] = [
    ("garbage", "telemetry", lambda s, n: b"not json at all", "not_json"),
    ("empty", "telemetry", lambda s, n: b"", "not_json"),
    ("truncated", "telemetry", lambda s, n: tele(s, n)[:-7], "not_json"),
    ("array", "telemetry", lambda s, n: b"[1,2,3]", "wrong_type"),
    ("string", "telemetry", lambda s, n: b'"hello"', "wrong_type"),
    ("null", "telemetry", lambda s, n: b"null", "wrong_type"),
    ("nan", "telemetry", lambda s, n: raw_tele(s, n, "NaN"), "not_json"),
    ("infinity", "telemetry", lambda s, n: raw_tele(s, n, "Infinity"), "not_json"),
    ("neg_infinity", "telemetry", lambda s, n: raw_tele(s, n, "-Infinity"), "not_json"),
    ("1e309", "telemetry", lambda s, n: raw_tele(s, n, "1e309"), "not_json"),
    ("5000_digits", "telemetry", lambda s, n: raw_tele(s, n, "9" * 5000), "not_json"),
    ("deep_nesting", "telemetry", lambda s, n: b"[" * 100_000 + b"]" * 100_000, "not_json"),
    ("deep_nesting_small", "telemetry", lambda s, n: b'{"v":1,"x":' + b"[" * 2000 + b"]" * 2000 + b"}", "not_json"),
    ("too_large", "telemetry", lambda s, n: tele(s, n, pad="x" * 300_000), "too_large"),
    ("nul_in_metric", "telemetry", lambda s, n: tele(s, n, {"n": "dep\u0000th"}), "nul_char"),
    ("nul_in_unit", "telemetry", lambda s, n: tele(s, n, {"u": "m\u0000"}), "nul_char"),
    ("lone_surrogate", "telemetry", lambda s, n: tele(s, n)[:-3] + b'"\\ud800"}]}', "not_json"),
    ("invalid_utf8", "telemetry", lambda s, n: tele(s, n).replace(b"depth", b"dep\xff\xfeth"), "not_json"),
    ("no_version", "telemetry", _without("v"), "unsupported_version"),
    ("version_2", "telemetry", lambda s, n: tele(s, n, v=2), "unsupported_version"),
    ("version_bool", "telemetry", lambda s, n: tele(s, n, v=True), "unsupported_version"),
    (
        "duplicate_key_v",
        "telemetry",
        lambda s, n: b'{"v":1,' + tele(s, n)[1:].replace(b'"v":1', b'"v":2', 1),
        "unsupported_version",
    ),
    ("no_gw", "telemetry", _without("gw"), "bad_gateway_id"),
    ("gw_wildcard", "telemetry", lambda s, n: tele(s, n, gw="gw-+/#"), "bad_gateway_id"),
    ("gw_mismatch", "telemetry", lambda s, n: tele(s, n, gw="gw-other"), "gw_mismatch"),
    ("no_boot", "telemetry", _without("boot"), "bad_boot"),
    ("boot_bad_chars", "telemetry", lambda s, n: tele(s, n, boot="b/1"), "bad_boot"),
    ("seq_negative", "telemetry", lambda s, n: tele(s, n, seq=-1), "bad_seq"),
    ("seq_string", "telemetry", lambda s, n: tele(s, n, seq="7"), "bad_seq"),
    ("seq_float", "telemetry", lambda s, n: tele(s, n, seq=1.5), "bad_seq"),
    ("seq_bool", "telemetry", lambda s, n: tele(s, n, seq=True), "bad_seq"),
    ("e_not_list", "telemetry", lambda s, n: tele(s, n, e={"a": 1}), "wrong_type"),
    ("record_not_object", "telemetry", lambda s, n: tele(s, n, e=[1]), "wrong_type"),
    (
        "no_base_name",
        "telemetry",
        lambda s, n: orjson.dumps({**env(s), "e": [{"n": "depth", "u": "m", "v": 1}]}),
        "bad_device_id",
    ),
    ("device_uppercase", "telemetry", lambda s, n: tele(s, n, {"bn": "WL-1/"}), "bad_device_id"),
    ("device_unicode", "telemetry", lambda s, n: tele(s, n, {"bn": "水位-1/"}), "bad_device_id"),
    ("unknown_metric", "telemetry", lambda s, n: tele(s, n, {"n": "rainfall"}), "unknown_metric"),
    ("unit_mismatch", "telemetry", lambda s, n: tele(s, n, {"u": "cm"}), "unit_mismatch"),
    ("value_string", "telemetry", lambda s, n: tele(s, n, {"v": "0.5"}), "wrong_type"),
    ("value_bool", "telemetry", lambda s, n: tele(s, n, {"v": True}), "wrong_type"),
    ("value_null", "telemetry", lambda s, n: tele(s, n, {"v": None}), "wrong_type"),
    ("quality_out_of_enum", "telemetry", lambda s, n: tele(s, n, {"q": 7}), "bad_quality"),
    ("quality_string", "telemetry", lambda s, n: tele(s, n, {"q": "good"}), "bad_quality"),
    ("bt_string", "telemetry", lambda s, n: tele(s, n, {"bt": "2025-11-25"}), "wrong_type"),
    ("too_old", "telemetry", lambda s, n: tele(s, n, {"bt": n - 40 * 86400}), "time_out_of_window"),
    ("in_1970", "telemetry", lambda s, n: tele(s, n, {"bt": 5.0}), "time_out_of_window"),
    ("future", "telemetry", lambda s, n: tele(s, n, {"bt": n + 3600}), "time_out_of_window"),
    ("event_body_not_object", "events", lambda s, n: event(s, n, body=[1]), "wrong_type"),
    ("event_bad_kind", "events", lambda s, n: event(s, n, kind="Vehicle!"), "bad_event_kind"),
    ("event_empty_id", "events", lambda s, n: event(s, n, id=""), "bad_event_id"),
    ("event_bad_device", "events", lambda s, n: event(s, n, device="WIM 1"), "bad_device_id"),
    ("event_nul_in_body", "events", lambda s, n: event(s, n, body={"plate": "浙A\u000012345"}), "nul_char"),
    ("event_future", "events", lambda s, n: event(s, n, t=n + 86400), "time_out_of_window"),
    ("status_bad_state", "status", lambda s, n: status(state="sleeping"), "bad_state"),
    ("status_devices_not_list", "status", lambda s, n: status(devices={"id": "x"}), "wrong_type"),
    ("status_nul_in_health", "status", lambda s, n: status(health={"note": "a\u0000b"}), "nul_char"),
    ("status_bad_boot", "status", lambda s, n: status(boot=""), "bad_boot"),
]
