"""The ASGI app (FastAPI) over the host-neutral handlers.

FastAPI contributes routing, OpenAPI (what it says of each route: :mod:`tasklift.http.openapi`) and
/docs; validation and every rule stay in the handlers, so Azure Functions and Lambda behave exactly
alike. Request bodies are read here with the size cap enforced while reading, so an oversized body
is refused without buffering all of it.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

import anyio
from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import StreamingResponse
from sse_starlette import EventSourceResponse
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from tasklift.events.hub import EventHub
from tasklift.http import openapi, pages, routes
from tasklift.http._compat import PlainRoute
from tasklift.http.problems import Problem, problem_response
from tasklift.http.runtime import STATE_KEY, ApiRuntime, HostRuntime
from tasklift.http.types import HttpRequest, HttpResponse
from tasklift.security.headers import SecurityHeadersMiddleware, security_headers, with_security_headers
from tasklift.security.redaction import install_redaction
from tasklift.settings import get_settings


async def receive_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body from ASGI ``receive``, or a 413 :class:`Problem` as soon as it exceeds ``limit`` bytes."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and int(value) > limit:
                raise Problem(413, f"the body is larger than {limit} bytes", slug="payload-too-large")
            break
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Problem(413, f"the body is larger than {limit} bytes", slug="payload-too-large")
        parts.append(chunk)
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def to_neutral(request: Request, body: bytes, runtime: ApiRuntime | None = None) -> HttpRequest:
    """Starlette request → :class:`HttpRequest` (:func:`scope_to_neutral` of its scope)."""
    return scope_to_neutral(request.scope, body, runtime)


def _repeated(pairs: list[tuple[str, str]]) -> frozenset[str]:
    counts = Counter(name for name, _ in pairs)
    return frozenset(name for name, count in counts.items() if count > 1)


def scope_to_neutral(scope: Scope, body: bytes, runtime: ApiRuntime | None = None) -> HttpRequest:
    """An ASGI request → :class:`HttpRequest`, read straight from the scope.

    ``runtime``: the host's API runtime; by default the one the lifespan put in ``scope["state"]``.

    The same values as Starlette's ``request.url.path`` / ``base_url`` / ``query_params`` (the
    scheme and host after uvicorn's proxy-headers handling), without building URL objects per
    request (``tests/unit/test_asgi_request.py`` holds the two side by side).
    """
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    scheme = scope.get("scheme", "http")
    host = headers.get("host")
    if host is None:
        server_host, port = scope.get("server") or ("", None)
        host = server_host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{server_host}:{port}"
    root = scope.get("app_root_path", scope.get("root_path", ""))
    raw_query = scope.get("query_string") or b""
    pairs = parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True) if raw_query else []
    query = dict(pairs)
    return HttpRequest(
        method=scope["method"],
        path=scope["path"],
        headers=headers,
        query=query,
        repeated_query=_repeated(pairs) if len(query) < len(pairs) else frozenset(),
        body=body,
        base_url=f"{scheme}://{host}{root}".rstrip("/"),
        path_params=dict(scope.get("path_params", {})),
        runtime=runtime or scope.get("state", {}).get(STATE_KEY),
    )


def to_starlette(resp: HttpResponse, hub: EventHub | None = None) -> Response:
    """:class:`HttpResponse` → Starlette response (streaming when the handler streams).

    SSE goes through sse-starlette's EventSourceResponse for its disconnect detection and its
    graceful drain on server shutdown; the pings come from our stream (every host needs them), so
    its own ping task is off. ``hub``: the runtime's, drained on server shutdown (a stream's).
    """
    resp.headers = with_security_headers(resp.headers)  # hosts that skip the middleware (Azure) get them too
    if resp.stream is not None:
        if resp.media_type == "text/event-stream":
            shutdown = anyio.Event()

            async def drain_on_shutdown() -> None:
                await shutdown.wait()
                if hub is not None:
                    hub.drain()

            return EventSourceResponse(
                resp.stream,
                status_code=resp.status,
                headers=resp.headers,
                ping=0,
                shutdown_event=shutdown,
                shutdown_grace_period=2,
                data_sender_callable=drain_on_shutdown,
            )
        return StreamingResponse(resp.stream, status_code=resp.status, headers=resp.headers)
    return Response(content=resp.body, status_code=resp.status, headers=resp.headers)


#: :func:`security_headers` of every path but /docs, as ASGI headers.
_SECURITY_RAW = tuple((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in security_headers().items())


def raw_headers(resp: HttpResponse) -> list[tuple[bytes, bytes]]:
    """The ASGI headers Starlette's ``Response`` sends for ``to_starlette(resp)`` (not for /docs)."""
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers.items()]
    names = {name for name, _ in raw}
    raw += [header for header in _SECURITY_RAW if header[0] not in names]
    if not (resp.status < 200 or resp.status in (204, 304)) and b"content-length" not in names:
        raw.append((b"content-length", b"%d" % len(resp.body)))
    return raw


def body_limit(route_name: str) -> int | None:
    """The largest body the route ``route_name`` reads, or None for a route that reads none."""
    settings = get_settings()
    if route_name == "submit_task":
        return settings.submit_body_limit
    if route_name == "submit_tasks_batch":
        return settings.batch_max_bytes
    if route_name == "send_signal":  # the payload: http/signals.py holds it to the inline size
        return settings.submit_body_limit
    if route_name in ("create_bulk", "create_schedule"):  # http/bulk.py, http/schedules.py: a small JSON body
        return settings.max_body_bytes
    return None


async def _answer(
    route: routes.Route, scope: Scope, receive: Receive, runtime: ApiRuntime | None = None
) -> HttpResponse:
    """``route``'s answer to the request in ``scope``: its body read under the cap, then the handler."""
    try:
        # Only the submits and a signal have a body; POST /tasks's may be large (its input then goes to blob storage).
        limit = body_limit(route.name)
        body = await receive_body(scope, receive, limit) if limit is not None else b""
    except Problem as problem:
        return problem_response(problem, scope["path"])
    return await routes.handle(route, scope_to_neutral(scope, body, runtime))


def _asgi(route: routes.Route) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """``route`` as an ASGI app: :func:`_answer`, sent as the two ASGI messages (or a stream)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        resp = await _answer(route, scope, receive)
        if resp.stream is not None:
            await to_starlette(resp, scope["state"][STATE_KEY].hub)(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": resp.status, "headers": raw_headers(resp)})
        await send({"type": "http.response.body", "body": resp.body})

    return app


async def serve(route: routes.Route, request: Request, runtime: ApiRuntime) -> Response:
    """``route`` for a Starlette request (what Azure Functions hands over): :func:`_answer` in its types."""
    return to_starlette(await _answer(route, request.scope, request.receive, runtime), runtime.hub)


def _endpoint(route: routes.Route) -> Any:
    """The endpoint FastAPI documents for ``route`` (its name and docstring); :func:`_asgi` serves it
    (:class:`~tasklift.http._compat.PlainRoute`)."""

    async def endpoint(request: Request) -> Response:
        return await serve(route, request, request.scope["state"][STATE_KEY])

    endpoint.__name__ = route.name
    endpoint.__doc__ = route.handler.__doc__
    endpoint.asgi_app = _asgi(route)  # type: ignore[attr-defined]  # what PlainRoute serves
    return endpoint


#: Young-generation collections every 10,000 net allocations instead of 700 (see tune_gc).
GC_THRESHOLDS = (10_000, 20, 10)


def tune_gc() -> None:
    """Keep the cyclic garbage collector from stalling live streams (once per process).

    Each waiting stream holds one short-lived future (about 100 ms at 10 events/s). With the default
    thresholds a young collection runs every ~700 sends and promotes the thousand futures alive at
    that moment; promoted objects then trigger a full collection every ~15 s, and a full collection
    of a process serving 1,000 streams stops the event loop for ~300 ms, every stream at once (the
    fan-out benchmark's p99). Rarer young collections let those futures die young, and freezing what
    exists after startup (modules, the app, SQLAlchemy metadata) takes it out of every full
    collection. Uncollectable cycles among frozen objects are never freed: this freezes once (the
    interpreter's own count says whether it did).
    """
    gc.set_threshold(*GC_THRESHOLDS)
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    """Build the process's API runtime and hand it to every request; close it at the end.

    The runtime goes out as Starlette's lifespan state: the server copies it into each request's
    ``scope["state"]`` (:mod:`tasklift.http.runtime`). The database work runs on the event loop;
    anyio's worker threads (40 by default) carry only the blocking clients: the Redis limit
    scripts, OIDC key fetches, cancel's and retry's announcements, blob storage and /metrics.
    """
    settings = get_settings()
    tune_gc()
    runtime = ApiRuntime.open(settings)
    try:
        yield {STATE_KEY: runtime}
    finally:
        await runtime.close()


ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class WithoutLifespan:
    """``app`` for a host that runs no ASGI lifespan (Mangum on Lambda): its requests get the
    runtime of :attr:`host` (a :class:`~tasklift.http.runtime.HostRuntime`), built at the first."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.host = HostRuntime()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["state"] = {**scope.get("state", {}), STATE_KEY: self.host.get()}
        await self.app(scope, receive, send)


def create_app() -> FastAPI:
    """The tasklift ASGI application."""
    app = FastAPI(
        lifespan=lifespan,
        title="tasklift",
        version="1",
        description="Long-running operations behind HTTP: submit (202), poll, stream (SSE), cancel.",
        openapi_url="/openapi.json",
        docs_url=None,  # tasklift.http.pages serves /docs and /redoc from packaged assets, not a CDN
        redoc_url=None,
        # FastAPI >= 0.16x traces requests itself; routes.handle already opens the server span on
        # every host (tasklift/telemetry/tracing.py), so a second one here would only duplicate it.
        telemetry={"tracing": False, "operation_spans": False, "metrics": False, "logs": False},
    )
    for route in routes.ROUTES:
        app.router.add_api_route(
            route.template,
            _endpoint(route),
            methods=[route.method],
            name=route.name,
            route_class_override=PlainRoute,
            **openapi.route_options(route.name),  # parameters, security, responses and links
        )

    pages.add_pages(app)  # the dashboard (GET /), Swagger UI (/docs) and ReDoc (/redoc), all served locally

    # Outermost last: the security headers also go on CORS preflight answers and on errors.
    settings = get_settings()
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[
                "Authorization",
                "X-API-Key",
                "Content-Type",
                "Idempotency-Key",
                "If-None-Match",
                "Last-Event-ID",
            ],
            expose_headers=[
                "Location",
                "Operation-Location",
                "Azure-AsyncOperation",
                "Retry-After",
                "ETag",
                "Idempotent-Replayed",
            ],
            max_age=600,
        )
    app.add_middleware(SecurityHeadersMiddleware)
    install_redaction()  # this process's log handlers (set up by now) mask credentials

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> Response:
        return to_starlette(problem_response(Problem(404, f"no endpoint at {request.url.path}"), request.url.path))

    @app.exception_handler(405)
    async def not_allowed(request: Request, exc: Exception) -> Response:
        allow = (getattr(exc, "headers", None) or {}).get("Allow")  # Starlette's, for the dashboard's paths
        return to_starlette(routes.not_allowed(request.method, request.url.path, allow))

    return app


async def answer_with_app(app: Callable[[Scope, Receive, Send], Awaitable[None]], request: Request) -> Response:
    """``request`` answered in process by the ASGI ``app``, buffered.

    For hosts whose functions cannot mount an ASGI app: the Azure catch-all serves the dashboard,
    /docs, /redoc and /openapi.json this way (:mod:`tasklift.http.pages`), so they are the same
    bytes on every host. Only for answers that end (pages, documents), never for streams.
    """
    body = await request.body()
    url = request.url
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": url.scheme,
        "path": url.path,
        "raw_path": url.path.encode(),
        "query_string": url.query.encode(),
        "root_path": "",
        "headers": request.headers.raw,
        "client": (request.client.host, request.client.port) if request.client else None,
        "server": (url.hostname or "localhost", url.port or (443 if url.scheme == "https" else 80)),
    }
    start: dict[str, Any] = {}
    chunks: list[bytes] = []
    request_sent, response_done = False, anyio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await response_done.wait()  # as a server does: the client "leaves" once the answer is complete
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                response_done.set()

    await app(scope, receive, send)
    response = Response(content=b"".join(chunks), status_code=start.get("status", 500))
    response.raw_headers = list(start.get("headers", []))  # the app's own headers, as it sent them
    return response
