"""Errors of the console.

    CitywatchError
    └── ConsoleError
        ├── AuthError          bad credentials, bad or expired token (HTTP 401)
        ├── Forbidden          authenticated but not allowed (HTTP 403)
        ├── NotFound           no such object, or not visible to this user (HTTP 404)
        ├── Conflict           a workflow action not allowed in the current state (HTTP 409)
        ├── RateLimited        too many attempts; carries ``retry_after_s`` (HTTP 429)
        └── StoreUnavailable   a store below us failed (HTTP 503)

Handlers raise these; one exception handler in :mod:`console.app` turns them into JSON.
"""

from __future__ import annotations

from contracts.errors import CitywatchError


class ConsoleError(CitywatchError):
    status_code = 500
    code = "internal"


class AuthError(ConsoleError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ConsoleError):
    status_code = 403
    code = "forbidden"


class NotFound(ConsoleError):
    status_code = 404
    code = "not_found"


class BadRequest(ConsoleError):
    status_code = 400
    code = "bad_request"


class Conflict(ConsoleError):
    status_code = 409
    code = "conflict"


class RateLimited(ConsoleError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"too many requests; retry after {retry_after_s:.0f} s")


class StoreUnavailable(ConsoleError):
    status_code = 503
    code = "store_unavailable"
