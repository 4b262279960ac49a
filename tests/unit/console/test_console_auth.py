"""Passwords, tokens, API keys and rate limits (time is a parameter)."""

from __future__ import annotations

import pytest

from console.auth import (
    RateLimiter,
    csrf_token,
    hash_api_key,
    hash_password,
    issue_token,
    match_api_key,
    new_api_key,
    verify_password,
    verify_token,
)
from console.errors import AuthError, RateLimited
from console.policy import Principal, Role

SECRET = "s" * 40
P = Principal("ha", Role.CASE_HANDLER, "unit-a")


def test_password_hash_roundtrip() -> None:
    h = hash_password("correct horse")
    assert h.startswith("$argon2id$")
    assert verify_password(h, "correct horse")
    assert not verify_password(h, "wrong")
    assert not verify_password("not-a-hash", "correct horse")


def test_token_roundtrip_and_expiry() -> None:
    token, claims = issue_token(SECRET, P, now=1000.0, ttl_s=60)
    got = verify_token(SECRET, token, now=1059.0)
    assert got.principal() == P
    assert claims.exp == 1060.0
    with pytest.raises(AuthError, match="expired"):
        verify_token(SECRET, token, now=1060.0)


def test_token_tamper_and_wrong_secret() -> None:
    token, _ = issue_token(SECRET, P, now=0.0, ttl_s=60)
    payload, sig = token.split(".")
    forged_payload = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB")
    with pytest.raises(AuthError):
        verify_token(SECRET, f"{forged_payload}.{sig}", now=1.0)
    with pytest.raises(AuthError, match="signature"):
        verify_token("t" * 40, token, now=1.0)
    for bad in ("", "abc", "a.b.c", "." * 10, "x" * 5000):
        with pytest.raises(AuthError):
            verify_token(SECRET, bad, now=1.0)


def test_machine_clients_get_no_session_token() -> None:
    with pytest.raises(AuthError):
        issue_token(SECRET, Principal("k", None, api_key=True), now=0.0, ttl_s=60)


def test_csrf_is_bound_to_the_session() -> None:
    a, _ = issue_token(SECRET, P, now=0.0, ttl_s=60)
    b, _ = issue_token(SECRET, P, now=1.0, ttl_s=60)
    assert csrf_token(SECRET, a) != csrf_token(SECRET, b)
    assert csrf_token(SECRET, a) == csrf_token(SECRET, a)


def test_api_keys_hashed_at_rest() -> None:
    key = new_api_key()
    stored = {hash_api_key(key): "hotline"}
    assert key not in str(stored)
    assert match_api_key(key, stored) == "hotline"
    assert match_api_key(key + "x", stored) is None


def test_rate_limiter_bucket_refills() -> None:
    rl = RateLimiter(per_minute=60, burst=3)  # 1 token per second
    for _ in range(3):
        rl.take("ip", now=0.0)
    with pytest.raises(RateLimited) as exc:
        rl.take("ip", now=0.0)
    assert exc.value.retry_after_s == pytest.approx(1.0)
    rl.take("other", now=0.0)  # keys are independent
    rl.take("ip", now=1.0)  # one token back after a second
    with pytest.raises(RateLimited):
        rl.take("ip", now=1.0)


def test_rate_limiter_memory_is_bounded() -> None:
    rl = RateLimiter(per_minute=1, burst=1, max_keys=10)
    for i in range(100):
        rl.take(f"k{i}", now=0.0)
    assert len(rl._buckets) == 10


def test_rate_limiter_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        RateLimiter(per_minute=0, burst=1)
