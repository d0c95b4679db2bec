"""The gate every request passes on every host: who is calling, and may it do this now?

:func:`guard` runs inside :func:`tasklift.http.routes.handle`, so the ASGI app, Azure Functions,
Lambda and the local emulators authenticate and limit identically (adapters hold no logic):

1. ``/healthz``, ``/readyz`` and ``/metrics`` are public (the dashboard, ``/docs`` and ``/openapi.json`` are
   not core routes and are public too).
2. Credentials: ``Authorization: Bearer <API key | OIDC JWT>`` or ``X-API-Key: <API key>``; on
   the stream endpoint alone, ``?access_token=<stream token>`` from ``links.stream``. With none,
   the caller is anonymous if ``TASKLIFT_ANONYMOUS`` is true, else 401 + ``WWW-Authenticate``.
   Credentials that are present but wrong are 401 even when anonymous access is on.
3. Limits (429 + ``Retry-After``): request rate, unfinished tasks at submit, open streams.
4. The handler runs with the request's ``principal`` set and the identity current
   (:func:`owner_scope`, below).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio

from tasklift.http.problems import Problem
from tasklift.http.types import HttpRequest, HttpResponse
from tasklift.security import stream_tokens
from tasklift.security.api_keys import active_key_ids, authenticate_key, looks_like_key
from tasklift.security.identity import ANONYMOUS, Identity, acting_as, current_identity
from tasklift.security.limits import StreamSlot
from tasklift.security.oidc import InvalidToken, IssuerUnavailable
from tasklift.settings import Settings, get_settings

#: A route's handler, as the route table holds it.
Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]

log = logging.getLogger(__name__)

#: Probes and the Prometheus scrape (operational data only; keep /metrics off the public edge).
PUBLIC_ROUTES = frozenset({"healthz", "readyz", "metrics"})
SUBMIT_ROUTE = "submit_task"
#: The routes that create tasks: the active-task limit applies to each.
SUBMIT_ROUTES = frozenset({SUBMIT_ROUTE, "submit_tasks_batch"})
STREAM_ROUTE = "stream_task"
REALM = 'Bearer realm="tasklift"'


async def guard(name: str, handler: Handler, req: HttpRequest) -> HttpResponse:
    """Authenticate ``req``, apply the limits, and run the route ``name``'s ``handler`` as that caller.

    Raises:
        Problem: 401 without valid credentials, 429 over a limit, 503 if the token issuer is down.
    """
    if name in PUBLIC_ROUTES:
        return await handler(req)
    settings = get_settings()
    stream_token = name == STREAM_ROUTE and req.query.get("access_token")
    if settings.anonymous and not stream_token and _credential(req) is None:
        identity, slot = ANONYMOUS, None  # no credential to look up and no limits
    else:
        identity, slot = await admit(name, req, settings)
    req.principal = identity.principal
    try:
        with acting_as(identity):
            response = await handler(req)
    except BaseException:
        if slot is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(slot.release)
        raise
    if slot is not None:
        if response.stream is None:  # 204 after the end, say: nothing stays open
            await anyio.to_thread.run_sync(slot.release)
        else:
            response.stream = _holding(response.stream, slot)
    return response


async def admit(route_name: str, req: HttpRequest, settings: Settings) -> tuple[Identity, StreamSlot | None]:
    """The caller (:func:`authenticate`) within its limits, and its stream slot.

    PostgreSQL is the API runtime's store (``req.runtime.store``, on the loop); the rate and stream
    limits are Redis scripts on the runtime's synchronous limit store, run in a worker thread.
    """
    identity = await authenticate(route_name, req, settings)
    if identity.is_anonymous:
        return identity, None  # one principal shared by every caller: limits would be global
    limits = req.runtime.limits
    if settings.rate_limit_requests:
        decision = await anyio.to_thread.run_sync(
            limits.hit, identity.principal, settings.rate_limit_requests, settings.rate_limit_window_seconds
        )
        if not decision.allowed:
            raise _too_many(
                f"more than {settings.rate_limit_requests} requests in {settings.rate_limit_window_seconds} s",
                decision.retry_after,
            )
    if route_name in SUBMIT_ROUTES and settings.max_active_tasks:
        active = await req.runtime.store.active_tasks(identity.principal)
        if active >= settings.max_active_tasks:
            raise _too_many(f"{active} tasks are pending or running; at most {settings.max_active_tasks} may be", 5)
    if route_name == STREAM_ROUTE and settings.max_open_streams:
        slot = await anyio.to_thread.run_sync(
            limits.open_stream, identity.principal, settings.max_open_streams, stream_lease_seconds(settings)
        )
        if slot is None:
            raise _too_many(f"at most {settings.max_open_streams} streams may be open at once", 5)
        return identity, slot
    return identity, None


async def authenticate(route_name: str, req: HttpRequest, settings: Settings) -> Identity:
    """The caller's identity; a 401 (or 503) :class:`Problem` otherwise."""
    credential = _credential(req)
    if credential is not None:
        return await _check_credential(req, credential, settings)
    token = req.query.get("access_token") if route_name == STREAM_ROUTE else None
    if token:
        try:
            grant = stream_tokens.verify(token, req.path_params.get("task_id", ""), settings)
            if grant.key_id is not None and not await active_key_ids(req.runtime.store, [grant.key_id]):
                raise stream_tokens.BadStreamToken("its API key has been revoked")
        except stream_tokens.BadStreamToken as exc:
            log.info("refused a stream token: %s", exc)
            raise _unauthorized("the stream link expired or is not valid; read the task for a fresh one") from None
        return stream_tokens.grant_identity(grant)
    if settings.anonymous:
        return ANONYMOUS
    raise _unauthorized("credentials are required: Authorization: Bearer <API key or token> or X-API-Key", None)


def _credential(req: HttpRequest) -> str | None:
    authorization = req.header("authorization")
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise _unauthorized("use the Bearer scheme: Authorization: Bearer <API key or token>", "invalid_request")
        return value.strip()
    key = req.header("x-api-key")
    return key.strip() if key is not None else None


async def _check_credential(req: HttpRequest, credential: str, settings: Settings) -> Identity:
    if looks_like_key(credential):
        identity = await authenticate_key(req.runtime.store, credential)
        if identity is None:
            raise _unauthorized("the API key is not valid or has been revoked")
        return identity
    verifier = req.runtime.oidc
    if verifier is None:
        raise _unauthorized("the credential is not a valid API key")
    try:
        # Blocking: a key rotation fetches the issuer's JWKS (cached otherwise).
        return await anyio.to_thread.run_sync(verifier.verify, credential)
    except InvalidToken as exc:
        log.info("refused a bearer token: %s", exc)
        raise _unauthorized("the bearer token is not valid") from None
    except IssuerUnavailable as exc:
        log.warning("cannot check bearer tokens: %s", exc)
        raise Problem(503, "the identity provider is unavailable; try again", headers={"Retry-After": "5"}) from None


def _unauthorized(detail: str, error: str | None = "invalid_token") -> Problem:
    # RFC 6750 §3: a request without credentials gets the challenge alone, with no error code.
    challenge = REALM if error is None else f'{REALM}, error="{error}"'
    return Problem(401, detail, headers={"WWW-Authenticate": challenge}, slug="unauthorized")


def _too_many(detail: str, retry_after: int) -> Problem:
    return Problem(429, detail, headers={"Retry-After": str(retry_after)}, slug="too-many-requests")


def stream_lease_seconds(settings: Settings) -> float:
    """How long a stream slot lives without renewal: several pings, so a live stream always renews."""
    return max(30.0, 3 * settings.sse_ping_seconds)


async def _holding(stream: AsyncIterator[bytes], slot: StreamSlot) -> AsyncIterator[bytes]:
    """``stream``, renewing ``slot`` while it runs and releasing it however it ends."""
    renew_every = slot.lease / 3
    renew_at = time.monotonic() + renew_every
    try:
        async with contextlib.aclosing(stream) as chunks:  # type: ignore[type-var]
            async for chunk in chunks:
                yield chunk
                if time.monotonic() >= renew_at:
                    await anyio.to_thread.run_sync(slot.renew)
                    renew_at = time.monotonic() + renew_every
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(slot.release)


def owner_scope(req: HttpRequest) -> str | None:
    """The owner filter for reading or changing an existing task: None means "every owner".

    None for an admin, and for a stream token on the task it was issued for (it was issued to a
    caller who could see that task); otherwise the caller's own principal, so another principal's
    task is simply not found (404), never forbidden (which would confirm that it exists).
    """
    identity = current_identity()
    if identity is None:
        return req.principal
    if identity.admin or (identity.task_id is not None and identity.task_id == req.path_params.get("task_id")):
        return None
    return identity.principal
