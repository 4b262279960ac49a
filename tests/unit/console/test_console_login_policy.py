"""Who a request comes from, and how long a failed login makes the next one wait (pure)."""

from __future__ import annotations

import ipaddress

import pytest

from console.auth import LoginBackoff, resolve_client_ip
from console.errors import RateLimited

PROXY = (ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("::1/128"))


def test_forwarded_for_ignored_without_trusted_proxies() -> None:
    assert resolve_client_ip("127.0.0.1", ["203.0.113.9"], ()) == "127.0.0.1"


def test_forwarded_for_ignored_from_an_untrusted_peer() -> None:
    assert resolve_client_ip("198.51.100.7", ["203.0.113.9"], PROXY) == "198.51.100.7"


def test_trusted_proxy_walks_from_the_right() -> None:
    # the client forged "1.1.1.1"; the proxy appended what it saw (203.0.113.9)
    assert resolve_client_ip("10.0.0.5", ["1.1.1.1, 203.0.113.9"], PROXY) == "203.0.113.9"
    # two trusted hops, header split over two lines
    assert resolve_client_ip("10.0.0.5", ["203.0.113.9", "10.0.0.7"], PROXY) == "203.0.113.9"
    assert resolve_client_ip("::1", ["2001:db8::5"], PROXY) == "2001:db8::5"


def test_trusted_proxy_edge_cases() -> None:
    assert resolve_client_ip("10.0.0.5", [], PROXY) == "10.0.0.5"  # no header: the proxy itself
    assert resolve_client_ip("10.0.0.5", ["10.0.0.6"], PROXY) == "10.0.0.6"  # only proxies: the leftmost
    assert resolve_client_ip("10.0.0.5", ["junk, 10.0.0.6"], PROXY) == "10.0.0.6"  # malformed: stop there
    assert resolve_client_ip("testclient", ["203.0.113.9"], PROXY) == "testclient"


def test_backoff_free_failures_then_doubling_with_a_cap() -> None:
    b = LoginBackoff(free_failures=3, base_s=1.0, max_s=60.0)
    assert [b.delay_after(n) for n in range(1, 12)] == [0, 0, 0, 1, 2, 4, 8, 16, 32, 60, 60]
    assert b.delay_after(10_000) == 60.0


def test_backoff_waits_and_resets_on_success() -> None:
    b = LoginBackoff(free_failures=2, base_s=10.0, max_s=100.0)
    for _ in range(3):
        b.check("sup", "a", 0.0)
        b.failed("sup", "a", 0.0)
    with pytest.raises(RateLimited) as exc:
        b.check("sup", "a", 5.0)
    assert exc.value.retry_after_s == pytest.approx(5.0)
    b.check("sup", "b", 5.0)  # the owner at another address is not affected
    b.check("other", "a", 5.0)  # nor another account from the same address
    b.check("sup", "a", 10.0)  # the wait is over
    b.succeeded("sup", "a")
    b.failed("sup", "a", 10.0)
    b.check("sup", "a", 10.0)  # the count started again


def test_backoff_never_locks_forever() -> None:
    b = LoginBackoff(free_failures=0, base_s=1.0, max_s=900.0)
    t = 0.0
    for _ in range(200):  # a guesser who waits out every delay
        b.check("sup", "a", t)
        b.failed("sup", "a", t)
        t += b.delay_after(10_000)
    b.check("sup", "a", t)  # still gets an attempt after at most max_s


def test_backoff_memory_is_bounded_and_input_checked() -> None:
    b = LoginBackoff(free_failures=0, base_s=1.0, max_s=2.0, max_keys=10)
    for i in range(100):
        b.failed(f"u{i}", "a", 0.0)
    assert len(b._fails) == 10
    with pytest.raises(ValueError):
        LoginBackoff(free_failures=0, base_s=2.0, max_s=1.0)
