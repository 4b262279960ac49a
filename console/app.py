"""The console app factory: ``create_app(settings, stores, ...)`` -> FastAPI.

Stores are injected (the CLI opens the real ones, tests build them over SQLite in a temp
dir), so the app itself does no I/O at import or construction time. Errors are JSON with a
code and a message (validation errors: 422 naming the field); Open311 errors keep the
client's format. OpenAPI is always generated; in production it is served only to a
logged-in user, and the docs page is rendered here (no CDN: the console runs offline).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from console import api, lamps, onemap, open311_api, pages, stats
from console.config import ConsoleSettings
from console.context import Ctx, Stores, principal_of
from console.errors import AuthError, ConsoleError, RateLimited
from console.live import Hub
from console.policy import Perm, has
from lighting.schedule import LightingSettings

log = logging.getLogger(__name__)
HERE = Path(__file__).parent


MEDIA_UPLOAD = re.compile(r"^/api/v1/cases/[^/]+/media$")


def body_limit(settings: ConsoleSettings, path: str) -> int:
    """A photo upload may be as large as ``media_max_bytes``; every other body ``max_body_bytes``."""
    return max(settings.media_max_bytes, settings.max_body_bytes) if MEDIA_UPLOAD.match(path) else \
        settings.max_body_bytes


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, declared or streamed (OWASP API4)."""

    def __init__(self, app: ASGIApp, max_bytes: Callable[[str], int]) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes(scope.get("path", ""))
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = limit + 1
                if declared > limit:
                    await _too_large(send, limit)
                    return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge
            return msg

        try:
            await self.app(scope, counted, send)
        except _BodyTooLarge:
            await _too_large(send, limit)


_BASE_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
                 (b"x-frame-options", b"DENY")]
def content_security_policy(tile_sources: list[str]) -> tuple[bytes, bytes]:
    """Own origin only, plus the configured tile servers for map images (no CDN, no inline script)."""
    img = " ".join(["'self'", "data:", *tile_sources])
    return (b"content-security-policy",
            f"default-src 'self'; style-src 'self' 'unsafe-inline'; img-src {img}; connect-src 'self'".encode())


class SecurityHeaders:
    """nosniff/frame/referrer headers on every response, a CSP on HTML (pure ASGI: no per-request task)."""

    def __init__(self, app: ASGIApp, tile_sources: list[str] | None = None) -> None:
        self.app = app
        self.csp = content_security_policy(tile_sources or [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                headers = list(msg.get("headers", []))
                present = {k.lower() for k, _v in headers}
                headers += [h for h in _BASE_HEADERS if h[0] not in present]
                ctype = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if ctype.startswith(b"text/html") and self.csp[0] not in present:
                    headers.append(self.csp)
                msg = {**msg, "headers": headers}
            await send(msg)

        await self.app(scope, receive, send_with_headers)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = JSONResponse({"error": {"code": "too_large", "message": f"request body over {limit} bytes"}}, 413)
    await send({"type": "http.response.start", "status": 413, "headers": body.raw_headers})
    await send({"type": "http.response.body", "body": body.body})


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status)


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith(("/api/", "/open311/")) and "text/html" in request.headers.get("accept", "")


def create_app(
    settings: ConsoleSettings,
    stores: Stores,
    *,
    hub: Hub | None = None,
    clock: Callable[[], float] = time.time,
    reload: Callable[[], ConsoleSettings] | None = None,
    background: Callable[[Hub], Coroutine[Any, Any, None]] | None = None,
    lighting: LightingSettings | None = None,
) -> FastAPI:
    """Build the console. ``background`` (e.g. the MQTT feed) runs for the app's lifetime."""
    the_hub = hub or Hub(queue_max=settings.sse_queue_max)
    ctx = Ctx(settings=settings, stores=stores, hub=the_hub, clock=clock, reload=reload,
              lighting=lighting or LightingSettings())

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with asyncio.TaskGroup() as tg:
            flusher = tg.create_task(the_hub.run_flusher())
            bg: asyncio.Task[None] | None = tg.create_task(background(the_hub)) if background is not None else None
            try:
                yield
            finally:
                flusher.cancel()
                if bg is not None:
                    bg.cancel()

    app = FastAPI(
        title="citywatch console",
        version="1",
        description="城市运行监测 · 数字城管 — REST API, Open311 GeoReport v2, live feed",
        docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan,
    )
    app.state.ctx = ctx

    @app.exception_handler(ConsoleError)
    async def console_error(request: Request, exc: ConsoleError) -> Response:
        if isinstance(exc, open311_api.Open311Error):
            return open311_api.error_response(exc.fmt, exc.status_code, str(exc))
        if isinstance(exc, AuthError) and _wants_html(request):
            return RedirectResponse(f"/login?next={request.url.path}", 303)
        extra: dict[str, Any] = {}
        field = getattr(exc, "field", None)
        if field:
            extra["field"] = field
        resp = _error(exc.status_code, exc.code, str(exc), **extra)
        if isinstance(exc, RateLimited):
            resp.headers["Retry-After"] = str(max(1, round(exc.retry_after_s + 0.5)))
        if isinstance(exc, AuthError):
            resp.headers["WWW-Authenticate"] = "Bearer"
        return resp

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = ".".join(str(p) for p in first.get("loc", ()))
        details = [{"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
                   for e in errors[:20]]
        return _error(422, "validation", f"{field}: {first.get('msg', 'invalid')}", field=field, errors=details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> Response:
        log.exception("console: unhandled error")
        return _error(500, "internal", "internal error; see the console log")

    app.add_middleware(BodyLimit, max_bytes=lambda path: body_limit(ctx.settings, path))

    app.add_middleware(SecurityHeaders, tile_sources=onemap.tile_sources(settings.map))

    onemap.map_data(ctx)  # read the district layer, tile archives and rule files now: a bad file stops the start
    pages.rules_of(ctx)
    app.include_router(api.router)
    app.include_router(lamps.router)
    app.include_router(stats.router)
    app.include_router(onemap.router)
    app.include_router(onemap.tiles_router)
    app.include_router(open311_api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "live_subscribers": the_hub.subscribers}

    @app.get("/api/openapi.json", include_in_schema=False)
    def openapi_json(request: Request) -> JSONResponse:
        if ctx.settings.production:
            p = principal_of(request)
            if not has(p, Perm.DOCS_READ):
                raise AuthError("docs need a login")
        return JSONResponse(app.openapi())

    @app.get("/api/docs", include_in_schema=False, response_class=HTMLResponse)
    def docs(request: Request) -> Response:
        if ctx.settings.production:
            principal_of(request)
        return pages.render_docs(request, app.openapi())

    return app
