"""Open311 GeoReport v2 at ``/open311/v2/`` (XML required by the spec, JSON as well).

GET methods are public (``open311_public_read``) and show only the spec's fields — never
reporter contact details. POST needs an API key (form ``api_key`` or ``X-API-Key``) and
creates a *reported* case, the same entry point a 12319 hotline or citizen app uses. A
client may send ``Idempotency-Key``: a retried POST then returns the same request id.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response

from console import open311 as fmt311
from console.context import Ctx, api_client, ctx_of
from console.errors import AuthError, BadRequest, ConsoleError
from console.views import CaseFilter, NewReport

router = APIRouter(prefix="/open311/v2", tags=["open311"])
CtxDep = Annotated[Ctx, Depends(ctx_of)]
Fmt = Literal["json", "xml"]
MAX_RESULTS = 1000
DEFAULT_DAYS = 90


def respond(fmt: str, resource: str, items: list[dict[str, Any]], status: int = 200) -> Response:
    if fmt == "xml":
        return Response(fmt311.xml_list(resource, items), status, media_type="text/xml; charset=utf-8")
    import orjson

    return Response(orjson.dumps(items), status, media_type="application/json; charset=utf-8")


def error_response(fmt: str, status: int, message: str) -> Response:
    return respond(fmt, "errors", [fmt311.error(status, message)], status)


class Open311Error(ConsoleError):
    """An error to render in the client's format (XML or JSON) with the spec's error shape."""

    def __init__(self, fmt: str, status: int, message: str) -> None:
        self.fmt = fmt
        self.status_code = status
        super().__init__(message)


def _public(ctx: Ctx, request: Request, fmt: str) -> None:
    if ctx.settings.open311_public_read:
        return
    try:
        api_client(request, request.query_params.get("api_key"))
    except AuthError as exc:
        raise Open311Error(fmt, 401, str(exc)) from exc


@router.get("/services.{fmt}", summary="GeoReport: service list (our case categories)")
def services(fmt: Fmt, request: Request, ctx: CtxDep) -> Response:
    _public(ctx, request, fmt)
    return respond(fmt, "services", [fmt311.service(c) for c in ctx.stores.cases.categories()])


@router.get("/services/{service_code}.{fmt}", summary="GeoReport: service definition")
def service_definition(service_code: str, fmt: Fmt, request: Request, ctx: CtxDep) -> Response:
    _public(ctx, request, fmt)
    for c in ctx.stores.cases.categories():
        if c.code == service_code:
            body = fmt311.service_definition(c)
            if fmt == "xml":
                return Response(fmt311.xml_object("service_definition", body), media_type="text/xml; charset=utf-8")
            import orjson

            return Response(orjson.dumps(body), media_type="application/json; charset=utf-8")
    raise Open311Error(fmt, 404, f"service_code {service_code!r} not found")


@router.get("/requests.{fmt}", summary="GeoReport: service requests (filters per spec)")
def get_requests(  # noqa: PLR0917
    fmt: Fmt, request: Request, ctx: CtxDep,
    service_request_id: str | None = None, service_code: str | None = None,
    start_date: str | None = None, end_date: str | None = None, status: str | None = None,
    page: int = 1, page_size: int = MAX_RESULTS,
) -> Response:
    _public(ctx, request, fmt)
    now = ctx.clock()
    try:
        if page < 1 or not 1 <= page_size <= MAX_RESULTS:
            raise BadRequest(f"page >= 1 and 1 <= page_size <= {MAX_RESULTS}")
        if service_request_id:
            # the spec: a list of ids overrides every other filter
            ids = fmt311.split_ids(service_request_id, MAX_RESULTS)
            flt = CaseFilter(ids=tuple(ids), limit=MAX_RESULTS)
        else:
            end_t = fmt311.parse_iso(end_date, "end_date") if end_date else now
            start_t = fmt311.parse_iso(start_date, "start_date") if start_date else end_t - DEFAULT_DAYS * 86400
            if start_t > end_t:
                raise BadRequest("start_date is after end_date")
            statuses = [s.strip() for s in (status or "").split(",") if s.strip()]
            if any(s not in ("open", "closed") for s in statuses):
                raise BadRequest("status must be open or closed")
            flt = CaseFilter(category=service_code or None, created_from=start_t, created_to=end_t,
                             status=statuses[0] if len(statuses) == 1 else None,
                             limit=page_size, offset=(page - 1) * page_size)
    except BadRequest as exc:
        raise Open311Error(fmt, 400, str(exc)) from exc
    result = ctx.stores.cases.worklist(flt, now)
    return respond(fmt, "requests", [fmt311.request(c, ctx.tz, now) for c in result.items])


@router.get("/requests/{service_request_id}.{fmt}", summary="GeoReport: one service request")
def get_request(service_request_id: str, fmt: Fmt, request: Request, ctx: CtxDep) -> Response:
    _public(ctx, request, fmt)
    c = ctx.stores.cases.get(service_request_id)
    if c is None:
        raise Open311Error(fmt, 404, f"service_request_id {service_request_id!r} not found")
    now = ctx.clock()
    return respond(fmt, "requests", [fmt311.request(c, ctx.tz, now)])


@router.get("/tokens/{token}.{fmt}", summary="GeoReport: service request id for a token")
def get_token(token: str, fmt: Fmt, request: Request, ctx: CtxDep) -> Response:
    _public(ctx, request, fmt)
    case_id = ctx.stores.audit.token(token)
    if case_id is None:
        raise Open311Error(fmt, 404, f"token {token!r} not found")
    return respond(fmt, "requests", [{"service_request_id": case_id, "token": token}])


def _coord(form: dict[str, str], key: str, lo: float, hi: float) -> float | None:
    raw = form.get(key, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{key}: not a number: {raw[:20]!r}") from None
    if not lo <= value <= hi:
        raise BadRequest(f"{key}: out of range [{lo}, {hi}]")
    return value


@router.post("/requests.{fmt}", summary="GeoReport: create a service request (needs api_key)",
             openapi_extra={"requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {
                 "type": "object", "required": ["service_code"],
                 "properties": {k: {"type": "string"} for k in (
                     "api_key", "service_code", "lat", "long", "address_string", "address_id", "email",
                     "device_id", "account_id", "first_name", "last_name", "phone", "description", "media_url")},
             }}}}})
async def post_request(fmt: Fmt, request: Request, ctx: CtxDep) -> Response:
    body = await request.body()
    try:
        form = fmt311.parse_form(body)
    except BadRequest as exc:
        raise Open311Error(fmt, 400, str(exc)) from exc
    try:
        client = api_client(request, form.get("api_key"))
    except AuthError as exc:
        raise Open311Error(fmt, 403, str(exc)) from exc
    try:
        code = form.get("service_code", "").strip()
        if not code:
            raise BadRequest("service_code is required")
        if code not in {c.code for c in ctx.stores.cases.categories()}:
            raise BadRequest(f"service_code {code!r} not found")
        lat = _coord(form, "lat", -90, 90)
        lon = _coord(form, "long", -180, 180)
        address = form.get("address_string", "").strip()
        address_id = form.get("address_id", "").strip()
        if (lat is None) != (lon is None):
            raise BadRequest("lat and long go together")
        if lat is None and not address and not address_id:
            raise BadRequest("a location is required: lat+long, address_string or address_id")
        description = form.get("description", "")
        if len(description) > fmt311.MAX_DESCRIPTION:
            raise BadRequest(f"description longer than {fmt311.MAX_DESCRIPTION} characters")
        media_url = fmt311.media_url(form.get("media_url", ""))
    except BadRequest as exc:
        ctx.audit(client.actor, "open311.post", "open311", 400, error=str(exc))
        raise Open311Error(fmt, 400, str(exc)) from exc
    contact = {k: form[k][:200] for k in ("email", "first_name", "last_name", "phone", "account_id", "device_id")
               if form.get(k)}
    attributes = {k[len("attribute["):-1]: v[:200] for k, v in form.items()
                  if k.startswith("attribute[") and k.endswith("]")}
    idem = request.headers.get("idempotency-key", "")[:64]
    request_id = "o311-" + hashlib.sha256(f"{client.username}\x00{idem or body.decode()}".encode()).hexdigest()[:32]
    report = NewReport(service_code=code, description=description, lat=lat, lon=lon,
                       address=address or address_id, reporter=client.username, contact=contact,
                       request_id=request_id, attributes=attributes, media_url=media_url)
    from starlette.concurrency import run_in_threadpool

    now = ctx.clock()
    case = await run_in_threadpool(ctx.stores.cases.create_reported, report, now)
    token = request_id
    await run_in_threadpool(ctx.stores.audit.put_token, token, case.id, client.username, now)
    ctx.audit(client.actor, "open311.post", f"case:{case.id}", 201, service_code=code)
    notice = "已受理 received; 将按时限处理 it will be handled within the category's time limit"
    return respond(fmt, "requests", [{"service_request_id": case.id, "service_notice": notice, "account_id": None,
                                      "token": token}], 201)
