"""Passwords, signed session tokens, API keys and rate limits — pure except for hashing.

Tokens are ``base64url(json claims) "." base64url(HMAC-SHA256(secret, claims))`` with an
expiry (``exp``) and an issuer/audience pinned to the console. They are stateless so any
console process with the same secret accepts them; the trade-off is that a stolen token is
valid until it expires, hence short lifetimes (``token_ttl_s``). Passwords are argon2id
hashes; API keys are long random strings, so a SHA-256 digest at rest is enough (a slow
hash only matters for low-entropy secrets) and lets us look a key up in O(1).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from console.errors import AuthError, RateLimited
from console.policy import Principal, Role

ISSUER = "citywatch-console"
_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return str(_hasher.hash(password))


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return bool(_hasher.verify(password_hash, password))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# a valid hash to verify against when the user is unknown, so timing does not reveal usernames
DUMMY_HASH = hash_password(secrets.token_hex(8))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Claims:
    sub: str
    role: Role
    unit: str | None
    iat: float
    exp: float
    jti: str

    def principal(self) -> Principal:
        return Principal(self.sub, self.role, self.unit)


def issue_token(secret: str, principal: Principal, now: float, ttl_s: float) -> tuple[str, Claims]:
    if principal.role is None:
        raise AuthError("machine clients do not get session tokens")
    claims = Claims(principal.username, principal.role, principal.unit, now, now + ttl_s, secrets.token_hex(8))
    body = orjson.dumps(
        {"iss": ISSUER, "sub": claims.sub, "role": claims.role.value, "unit": claims.unit,
         "iat": claims.iat, "exp": claims.exp, "jti": claims.jti}
    )
    payload = _b64(body)
    sig = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{_b64(sig)}", claims


def verify_token(secret: str, token: str, now: float) -> Claims:
    """Check signature, issuer and expiry; raise :class:`AuthError` saying which failed."""
    payload, sep, sig = token.partition(".")
    if not sep or not payload or not sig or len(token) > 4096:
        raise AuthError("malformed token")
    want = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    try:
        got = _unb64(sig)
        obj = orjson.loads(_unb64(payload))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise AuthError("malformed token") from exc
    if not hmac.compare_digest(want, got):
        raise AuthError("bad token signature")
    if not isinstance(obj, dict) or obj.get("iss") != ISSUER:
        raise AuthError("token not issued by this console")
    try:
        claims = Claims(str(obj["sub"]), Role(obj["role"]), obj.get("unit"), float(obj["iat"]),
                        float(obj["exp"]), str(obj["jti"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise AuthError("malformed token claims") from exc
    if now >= claims.exp:
        raise AuthError("token expired")
    return claims


def csrf_token(secret: str, session_token: str) -> str:
    """Double-submit value tied to one session: pages send it back on every cookie-authenticated write."""
    return _b64(hmac.new(secret.encode(), b"csrf:" + session_token.encode(), hashlib.sha256).digest()[:18])


def new_api_key() -> str:
    return "cwk_" + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def match_api_key(key: str, hashed: dict[str, str]) -> str | None:
    """Name of the client whose stored digest matches ``key`` (``hashed``: digest -> name)."""
    digest = hash_api_key(key)
    for stored, name in hashed.items():
        if hmac.compare_digest(stored, digest):
            return name
    return None


class RateLimiter:
    """Token buckets per key (client address, user); pure: callers pass ``now``.

    Memory is bounded: the least recently used keys are forgotten beyond ``max_keys``
    (a forgotten key starts with a full bucket, which only ever errs towards allowing).
    """

    def __init__(self, per_minute: float, burst: int, max_keys: int = 10_000) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError("rate limit needs per_minute > 0 and burst >= 1")
        self.rate_per_s = per_minute / 60.0
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()  # sync handlers run in a thread pool

    def take(self, key: str, now: float) -> None:
        """Spend one token of ``key``; raise :class:`RateLimited` with the wait if none is left."""
        with self._lock:
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate_per_s)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                raise RateLimited((1.0 - tokens) / self.rate_per_s)
            self._buckets[key] = (tokens - 1.0, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None, trusted: Sequence[IpNetwork]) -> bool:
    return addr is not None and any(addr.version == net.version and addr in net for net in trusted)


def resolve_client_ip(peer: str, forwarded_for: Iterable[str], trusted: Sequence[IpNetwork]) -> str:
    """The address a rate limit should key on.

    ``X-Forwarded-For`` is believed only when the TCP peer is one of ``trusted`` (the
    configured reverse proxies); then the hops are walked from the right (each proxy
    appends the address it saw) past every trusted proxy, and the first other hop is the
    client. With no trusted proxy configured the header is ignored: a client could
    otherwise pick a fresh address per request and never be limited.
    """
    if not _trusted(_ip(peer), trusted):
        return peer
    hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
    client = peer
    for hop in reversed(hops):
        addr = _ip(hop)
        if addr is None:
            return client  # a malformed hop: stop at the last address a trusted proxy vouched for
        client = str(addr)
        if not _trusted(addr, trusted):
            return client
    return client


class LoginBackoff:
    """Failed logins per (account, client address): exponential backoff with a cap, reset on success.

    The first ``free_failures`` failures cost nothing; failure number ``free_failures + k``
    makes the next attempt from that address for that account wait ``base_s * 2**(k-1)``
    seconds, at most ``max_s``. A correct password resets the count. Because the key is the
    pair, someone guessing from elsewhere never locks the owner out, and even the guesser
    is never locked out for longer than ``max_s``. Pure (callers pass ``now``); memory is
    bounded like :class:`RateLimiter` (a forgotten pair starts afresh).
    """

    def __init__(self, free_failures: int, base_s: float, max_s: float, max_keys: int = 10_000) -> None:
        if free_failures < 0 or base_s <= 0 or max_s < base_s:
            raise ValueError("login backoff needs free_failures >= 0 and 0 < base_s <= max_s")
        self.free_failures = free_failures
        self.base_s = base_s
        self.max_s = max_s
        self.max_keys = max_keys
        self._fails: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()  # -> (failures, not_before)
        self._lock = threading.Lock()

    def check(self, account: str, ip: str, now: float) -> None:
        """Raise :class:`RateLimited` if this pair must still wait."""
        with self._lock:
            entry = self._fails.get((account, ip))
        if entry is not None and now < entry[1]:
            raise RateLimited(entry[1] - now)

    def delay_after(self, failures: int) -> float:
        over = failures - self.free_failures
        if over <= 0:
            return 0.0
        return min(self.max_s, self.base_s * 2.0 ** min(over - 1, 62))

    def failed(self, account: str, ip: str, now: float) -> None:
        with self._lock:
            failures = self._fails.pop((account, ip), (0, now))[0] + 1
            self._fails[(account, ip)] = (failures, now + self.delay_after(failures))
            while len(self._fails) > self.max_keys:
                self._fails.popitem(last=False)

    def succeeded(self, account: str, ip: str) -> None:
        with self._lock:
            self._fails.pop((account, ip), None)
