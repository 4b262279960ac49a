"""Per-app state and the request dependencies (who is calling, may they, how fast)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from fastapi import Request

from console.audit import AuditEntry, AuditLog
from console.auth import LoginBackoff, RateLimiter, csrf_token, match_api_key, resolve_client_ip, verify_token
from console.config import ConsoleSettings, UserSpec
from console.errors import AuthError, Forbidden, RateLimited
from console.live import Hub
from console.policy import Perm, Principal, Role, centre_grants, has
from console.views import AckPort, AlarmPort, CasePort, DevicePort
from lighting.schedule import LightingSettings

if TYPE_CHECKING:
    from console.lamps import LampControl

SESSION_COOKIE = "cw_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class Stores:
    """The store objects the console reads; built by the caller (CLI, all-in-one, tests)."""

    devices: DevicePort
    alarms: AlarmPort
    cases: CasePort
    audit: AuditLog
    acks: AckPort | None = None
    lamps: LampControl | None = None  # lamp commands over MQTT; None without a broker


class TtlCache:
    """Values recomputed at most once per ``ttl_s`` per key, single-flight across threads.

    A wall screen per duty room polls the same overview; without this, N screens cost N
    full recomputations per refresh (and all of them at once when the entry expires). While
    one thread recomputes an expired entry, the others get the previous value at once
    (stale-while-revalidate) instead of queueing behind the recomputation.
    """

    def __init__(self) -> None:
        self._values: dict[str, tuple[float, Any]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: str, ttl_s: float, compute: Callable[[], Any]) -> Any:
        hit = self._values.get(key)
        if hit is not None and time.monotonic() - hit[0] < ttl_s:
            return hit[1]
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        if hit is not None and ttl_s > 0:
            if not lock.acquire(blocking=False):
                return hit[1]  # someone is refreshing it: serve the previous value meanwhile
        else:
            lock.acquire()
        try:
            hit = self._values.get(key)
            if hit is not None and time.monotonic() - hit[0] < ttl_s:
                return hit[1]
            started = time.monotonic()
            value = compute()
            self._values[key] = (started, value)
            return value
        finally:
            lock.release()


@dataclass
class Ctx:
    settings: ConsoleSettings
    stores: Stores
    hub: Hub
    clock: Callable[[], float] = time.time
    reload: Callable[[], ConsoleSettings] | None = None
    users: dict[str, UserSpec] = field(default_factory=dict)
    api_keys: dict[str, str] = field(default_factory=dict)  # sha256 digest -> client name
    login_limiter: RateLimiter = field(init=False)
    login_backoff: LoginBackoff = field(init=False)
    write_limiter: RateLimiter = field(init=False)
    tz: ZoneInfo = field(init=False)
    cache: TtlCache = field(default_factory=TtlCache)
    lighting: LightingSettings = field(default_factory=LightingSettings)  # lamp schedules to show

    grants: dict[Role, frozenset[Perm]] = field(init=False)  # case rights the city's roles config adds

    def __post_init__(self) -> None:
        self.grants = centre_grants(self.stores.cases.seats())
        self.apply(self.settings)

    def apply(self, settings: ConsoleSettings) -> None:
        """(Re)load users, keys and limits from settings; listen address and stores need a restart."""
        self.settings = settings
        self.users = {u.username: u for u in settings.users}
        self.api_keys = {k.key_sha256: k.name for k in settings.api_keys}
        self.login_limiter = RateLimiter(settings.login_rate.per_minute, settings.login_rate.burst)
        b = settings.login_backoff
        self.login_backoff = LoginBackoff(b.free_failures, b.base_s, b.max_s)
        self.write_limiter = RateLimiter(settings.write_rate.per_minute, settings.write_rate.burst)
        self.tz = ZoneInfo(settings.timezone)

    def audit(self, actor: str, action: str, obj: str, result: int, **detail: object) -> None:
        self.stores.audit.record(AuditEntry(self.clock(), actor, action, obj, result, dict(detail)))


def ctx_of(request: Request) -> Ctx:
    ctx = request.app.state.ctx
    assert isinstance(ctx, Ctx)
    return ctx


def client_ip(request: Request) -> str:
    """The client's address: the TCP peer, or what a configured trusted proxy says it forwarded."""
    peer = request.client.host if request.client else "unknown"
    trusted = ctx_of(request).settings.trusted_proxies
    if not trusted:
        return peer
    return resolve_client_ip(peer, request.headers.getlist("x-forwarded-for"), trusted)  # type: ignore[arg-type]


def session_token(request: Request) -> tuple[str | None, bool]:
    """(token, came_from_cookie): a bearer header wins over the page cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    cookie = request.cookies.get(SESSION_COOKIE)
    return (cookie, True) if cookie else (None, False)


def principal_of(request: Request) -> Principal:
    """The logged-in user; cookie-authenticated writes must echo the CSRF value in a header."""
    ctx = ctx_of(request)
    token, from_cookie = session_token(request)
    if not token:
        raise AuthError("login required")
    claims = verify_token(ctx.settings.secret_key, token, ctx.clock())
    user = ctx.users.get(claims.sub)
    if user is None or user.role is not claims.role or user.unit != claims.unit:
        raise AuthError("user no longer exists or changed; log in again")
    if from_cookie and request.method not in SAFE_METHODS:
        sent = request.headers.get("x-csrf-token", "")
        if sent != csrf_token(ctx.settings.secret_key, token):
            raise Forbidden("missing or wrong X-CSRF-Token for a cookie-authenticated write")
    p = claims.principal()
    if p.role in ctx.grants:
        p = replace(p, grants=ctx.grants[p.role])
    request.state.principal = p
    return p


def need(perm: Perm) -> Callable[[Request], Principal]:
    def dep(request: Request) -> Principal:
        p = principal_of(request)
        if not has(p, perm):
            raise Forbidden(f"role {p.role} lacks {perm.value}")
        return p

    dep.__name__ = f"need_{perm.name.lower()}"
    return dep


def writer(perm: Perm) -> Callable[[Request], Principal]:
    """Like :func:`need`, plus the per-user write rate limit; a refused write is audited too."""
    check = need(perm)

    def dep(request: Request) -> Principal:
        try:
            p = check(request)
        except Forbidden:
            who = getattr(request.state, "principal", None)
            actor = who.actor if who is not None else "?"
            ctx_of(request).audit(actor, f"denied:{request.method}", request.url.path[:120], 403, perm=perm.value)
            raise
        ctx_of(request).write_limiter.take(p.actor, ctx_of(request).clock())
        return p

    dep.__name__ = f"write_{perm.name.lower()}"
    return dep


def api_client(request: Request, form_key: str | None) -> Principal:
    """A machine client from ``api_key`` (Open311 form field) or the ``X-API-Key`` header."""
    ctx = ctx_of(request)
    key = request.headers.get("x-api-key") or form_key
    if not key:
        raise AuthError("api_key required")
    name = match_api_key(key, ctx.api_keys)
    if name is None:
        raise AuthError("unknown api_key")
    try:
        ctx.write_limiter.take(f"apikey:{name}", ctx.clock())
    except RateLimited:
        raise
    return Principal(name, None, None, api_key=True)
