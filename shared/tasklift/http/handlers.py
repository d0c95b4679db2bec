"""The endpoint handlers: async, host-neutral, each translating HTTP to one service call.

Database work runs on the event loop, on the API runtime's asyncpg store; only blocking clients
(blob storage SDKs, the metrics' gauges) run in a worker thread (``anyio.to_thread``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Iterator
from datetime import datetime
from typing import Any, cast

import anyio
import redis

from tasklift import telemetry
from tasklift.blobs import BlobNotFound, BlobStoreError, claims
from tasklift.events.sse import StreamPlan, stream_events
from tasklift.http.guard import owner_scope
from tasklift.http.problems import Problem
from tasklift.http.resources import etag, retry_after, task_resource
from tasklift.http.runtime import ApiRuntime, RuntimeMissing
from tasklift.http.types import HttpRequest, HttpResponse, json_response
from tasklift.security.identity import current_identity
from tasklift.settings import get_settings
from tasklift.store.aio import DatabaseError
from tasklift.tasks.registry import all_task_types
from tasklift.tasks.service import InvalidInput, TaskService, utc_instant
from tasklift.tasks.states import TERMINAL, TaskStatus

log = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY = 255


def request_runtime(req: HttpRequest) -> ApiRuntime:
    """The API runtime the host handed over with ``req`` (:mod:`tasklift.http.runtime`)."""
    runtime: ApiRuntime | None = req.runtime
    if runtime is None:
        raise RuntimeMissing("no API runtime: the host must build one (tasklift.http.runtime) and pass it")
    return runtime


def _service(req: HttpRequest) -> TaskService:
    return request_runtime(req).service


def _json_body(req: HttpRequest, limit: int | None = None) -> Any:
    """The JSON body of ``req`` within ``limit`` bytes (default: POST /tasks's), checked storable."""
    content_type = (req.header("content-type") or "").split(";")[0].strip().lower()
    if content_type and content_type != "application/json" and not content_type.endswith("+json"):
        raise Problem(415, f"send the body as application/json, not {content_type}", slug="unsupported-media-type")
    settings = get_settings()
    if limit is None:
        limit = settings.submit_body_limit  # large inputs go to blob storage (docs/large-payloads.md)
    if len(req.body) > limit:
        raise Problem(413, f"the body is larger than {limit} bytes", slug="payload-too-large")
    try:
        raw = req.body or b"null"
        body = _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))  # as json.loads does
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NaN / Infinity
        raise Problem(400, f"the body is not valid JSON: {exc}", slug="malformed-json") from None
    except RecursionError:  # nested far deeper than any limit: the parser itself gave up
        raise _too_deep(["body"], settings.max_json_depth) from None
    if _may_be_unstorable(req.body, settings.max_json_depth):
        _check_storable(body, settings.max_json_depth)
    return body


def _not_json(name: str) -> Any:
    """``json.loads`` accepts NaN and ±Infinity; JSON (RFC 8259) and PostgreSQL's JSONB do not."""
    raise ValueError(f"{name} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=_not_json)  # made once: json.loads(…, parse_constant=) makes one a call

#: An event id: ASCII digits, at most 18 of them (every one fits PostgreSQL's bigint).
_EVENT_ID = re.compile(r"[0-9]{1,18}")

#: A number beyond a double (~1.8e308) needs a positive exponent of three digits, or 210 digits
#: before its point (with an exponent of at most 99): only bodies with one of these are walked.
_HUGE_NUMBER = re.compile(rb"[eE]\+?0*[0-9]{3}|[0-9]{210}")


def _may_be_unstorable(raw: bytes, max_depth: int) -> bool:
    """Whether ``raw`` could break a bound :func:`_check_storable` enforces (byte scans only).

    Almost every body passes none of these at C speed, so the walk over the parsed value runs only
    for the bodies that might need it. In UTF-8 JSON, NUL and lone surrogates can only arrive as
    ``\\u`` escapes; nesting deeper than ``max_depth`` needs more than ``max_depth`` brackets.
    """
    return (
        b"\\u" in raw
        or b"\x00" in raw
        or raw.count(b"[") + raw.count(b"{") > max_depth
        or _HUGE_NUMBER.search(raw) is not None
    )


def _check_storable(value: Any, max_depth: int) -> None:
    """Raise :class:`InvalidInput` naming the first value PostgreSQL could not store or we could not
    read back: nesting deeper than ``max_depth``, a number beyond a double (1e400 parses as
    infinity, JSONB refuses it), a key or string with NUL or an unpaired surrogate (JSONB refuses
    both). Checked before anything is stored, so nothing stored is ever unreadable."""
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(value, 1, ("body",))]
    while stack:
        item, depth, loc = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                raise _too_deep(list(loc), max_depth)
            if isinstance(item, dict):
                for key, child in item.items():
                    if _bad_text(key):
                        raise _unstorable_text([*loc, key])
                    stack.append((child, depth + 1, (*loc, key)))
            else:
                stack.extend((child, depth + 1, (*loc, index)) for index, child in enumerate(item))
        elif isinstance(item, str):
            if _bad_text(item):
                raise _unstorable_text(list(loc))
        elif isinstance(item, int | float) and not isinstance(item, bool) and not _finite_double(item):
            raise _out_of_range(list(loc))


_MAX_DOUBLE = sys.float_info.max


def _finite_double(number: float) -> bool:
    """A float that is finite, or an integer that is one as a double (JSON readers take it as one)."""
    return math.isfinite(number) if isinstance(number, float) else abs(number) <= _MAX_DOUBLE


def _bad_text(text: str) -> bool:
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _printable(loc: list[Any]) -> list[Any]:
    return [part if isinstance(part, int) else part.encode("utf-8", "backslashreplace").decode() for part in loc]


def _too_deep(loc: list[Any], max_depth: int) -> InvalidInput:
    return InvalidInput(
        f"the body nests arrays and objects deeper than max_json_depth ({max_depth} levels)",
        [{"loc": _printable(loc), "msg": f"nested deeper than max_json_depth={max_depth}", "limit": "max_json_depth"}],
    )


def _out_of_range(loc: list[Any]) -> InvalidInput:
    return InvalidInput(
        "numbers must be finite and within the range of a double (about ±1.8e308)",
        [{"loc": _printable(loc), "msg": "a number beyond a double (it would be infinity)", "limit": "finite_number"}],
    )


def _unstorable_text(loc: list[Any]) -> InvalidInput:
    return InvalidInput(
        "strings must not contain NUL (\\u0000) or unpaired surrogates",
        [{"loc": _printable(loc), "msg": "text with NUL or an unpaired surrogate", "limit": "storable_text"}],
    )


def time_query(req: HttpRequest, name: str) -> datetime | None:
    """An RFC 3339 query parameter as a UTC time (absent or empty: None), or 422 naming it."""
    raw = req.query.get(name)
    if not raw:
        return None
    try:
        return utc_instant(raw)
    except ValueError:
        raise InvalidInput(
            f"{name} must be an RFC 3339 time",
            [{"loc": ["query", name], "msg": "an RFC 3339 time (years 1 to 9999 in UTC)"}],
        ) from None


def int_query(req: HttpRequest, name: str, default: int, low: int, high: int) -> int:
    raw = req.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise InvalidInput(
            f"{name} must be an integer from {low} to {high}",
            [{"loc": ["query", name], "msg": f"an integer from {low} to {high}"}],
        )
    return value


def _task_headers(row: Any) -> dict[str, str]:
    headers = {"ETag": etag(row), "Cache-Control": "no-store"}
    seconds = retry_after(row, floor=get_settings().poll_retry_after_seconds)
    if seconds is not None:
        headers["Retry-After"] = str(seconds)
    return headers


async def submit_task(req: HttpRequest) -> HttpResponse:
    """POST /tasks: validate, commit durably, publish, answer 202 with the task."""
    body = _json_body(req)
    key = req.header("idempotency-key")
    if key is not None and (not 0 < len(key) <= MAX_IDEMPOTENCY_KEY or "\x00" in key):
        raise InvalidInput(
            "Idempotency-Key must be 1 to 255 characters, none of them NUL",
            [{"loc": ["header", "Idempotency-Key"], "msg": "1 to 255 characters, no NUL"}],
        )
    try:
        outcome = await _service(req).submit(req.principal, body, key)
    except BlobStoreError as exc:  # a large input could not be stored: no task was created
        log.warning("blob storage failed on submit: %s", exc)
        raise _blob_store_unavailable() from None
    resource = task_resource(outcome.task)
    base = get_settings().public_url or req.base_url
    headers = {
        "Location": resource["links"]["self"],
        "Operation-Location": f"{base.rstrip('/')}{resource['links']['self']}",  # API.md: the task itself
        # The task's Azure status monitor, for pollers that follow the guidelines' status values
        # (azure-core's OperationResourcePolling(operation_location_header="azure-asyncoperation")).
        "Azure-AsyncOperation": f"{base.rstrip('/')}{resource['links']['operation']}",
        "Retry-After": str(get_settings().poll_retry_after_seconds),
    }
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_response(202, resource, headers)


def _float_query(req: HttpRequest, name: str, low: float, high: float) -> float | None:
    raw = req.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = low - 1
    if not low < value <= high:
        raise InvalidInput(
            f"{name} must be a number of seconds above {low:g} and at most {high:g}",
            [{"loc": ["query", name], "msg": f"above {low:g}, at most {high:g}"}],
        )
    return value


async def get_task(req: HttpRequest) -> HttpResponse:
    """GET /tasks/{id}: the resource, with ETag / 304, an adaptive Retry-After and ``?wait=N`` long poll."""
    wait = _float_query(req, "wait", 0, get_settings().max_long_poll_seconds)
    row = await _service(req).get(owner_scope(req), req.path_params["task_id"])
    client_tag = req.header("if-none-match")
    if wait and TaskStatus(row["status"]) not in TERMINAL and client_tag in (None, etag(row), "*"):
        row = await _wait_for_change(request_runtime(req), row, wait)
    headers = _task_headers(row)
    if client_tag in (headers["ETag"], "*"):
        return HttpResponse(304, headers)
    return json_response(200, task_resource(row), headers)


async def _wait_for_change(runtime: ApiRuntime, row: Any, seconds: float) -> Any:
    """Long poll: sleep on the hub (no busy loop) until the task's next event or ``seconds``."""
    async with await runtime.hub.subscribe(str(row["id"])) as sub:
        current = await runtime.store.get_task(row["id"]) or row
        if current["last_seq"] == row["last_seq"]:
            sub.seen = current["last_seq"]  # a missed publish wakes it by the hub's database check
            await sub.get(seconds)
            current = await runtime.store.get_task(row["id"]) or current
    return current


async def stream_task(req: HttpRequest) -> HttpResponse:
    """GET /tasks/{id}/stream: Server-Sent Events, resumable with Last-Event-ID (API.md)."""
    # Each one given is checked, though the header wins: a malformed parameter is refused even when
    # the other would do (the document declares both with one pattern).
    given = [
        ("header", "Last-Event-ID", req.header("last-event-id")),
        ("query", "last_event_id", req.query.get("last_event_id")),
    ]
    for where, name, raw in given:
        # ASCII digits only ("²".isdigit() is true, int("²") fails), and within a bigint.
        if raw and _EVENT_ID.fullmatch(raw.strip()) is None:
            raise InvalidInput(
                f"{name} must be an event id this stream sent (a non-negative integer)",
                [{"loc": [where, name], "msg": "a non-negative integer below 2**63"}],
            )
    raw_id = next((raw for _, _, raw in given if raw), None)
    last_event_id = None if raw_id is None else int(raw_id)
    service = _service(req)
    row = await service.get(owner_scope(req), req.path_params["task_id"])
    settings = get_settings()
    plan = StreamPlan(
        task=row,
        last_event_id=last_event_id,
        load_events=service.events_after,
        load_task=service.load,
        hub=request_runtime(req).hub,
        ping_seconds=settings.sse_ping_seconds,
        retry_ms=settings.sse_retry_ms,
        window_seconds=settings.sse_window_seconds,
        key_id=identity.key_id if (identity := current_identity()) is not None else None,
    )
    if plan.finished_before:
        # The client already saw the terminal event: 204 tells EventSource to stop reconnecting.
        return HttpResponse(204, {"Cache-Control": "no-store"})
    headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return HttpResponse(200, headers, stream=stream_events(plan))


async def list_tasks(req: HttpRequest) -> HttpResponse:
    """GET /tasks: the caller's tasks, newest first, keyset-paged."""
    limit = int_query(req, "limit", 20, 1, 100)
    created_after = time_query(req, "created_after")
    listing = await _service(req).list_tasks(
        owner_scope(req),
        status=req.query.get("status") or None,
        task_type=req.query.get("task_type") or None,
        created_after=created_after,
        limit=limit,
        cursor=req.query.get("cursor") or None,
    )
    items = [task_resource(row) for row in listing.items]
    return json_response(200, {"items": items, "next_cursor": listing.next_cursor}, {"Cache-Control": "no-store"})


def _blob_store_unavailable() -> Problem:
    detail = "blob storage is unavailable; try again"
    return Problem(503, detail, headers={"Retry-After": "5"}, slug="blob-store-unavailable")


async def task_result(req: HttpRequest) -> HttpResponse:
    """GET /tasks/{id}/result: the result inline, a 303 to a short-lived signed URL, or streamed from blob storage."""
    row = await _service(req).get(owner_scope(req), req.path_params["task_id"])
    status = TaskStatus(row["status"])
    if status != TaskStatus.SUCCESS:
        headers = {} if status in TERMINAL else {"Retry-After": str(get_settings().poll_retry_after_seconds)}
        detail = f"the task is {status.value}; only a SUCCESS task has a result"
        raise Problem(409, detail, headers=headers, slug="no-result")
    if not claims.is_ref(row["result"]):
        return json_response(200, row["result"], {"Cache-Control": "no-store"})
    ref = row["result"][claims.REF]
    store = request_runtime(req).blobs
    try:
        url = await anyio.to_thread.run_sync(store.url, ref["key"], get_settings().blob_url_ttl_seconds)
        if url is not None:  # S3 presigned / Azure SAS: the bytes do not pass through the API
            return HttpResponse(303, {"Location": url, "Cache-Control": "no-store"})
        chunks = await anyio.to_thread.run_sync(store.chunks, ref["key"])
    except BlobNotFound:
        raise Problem(410, "the result's blob no longer exists", slug="result-gone") from None
    except BlobStoreError as exc:
        log.warning("blob storage failed serving %s: %s", ref["key"], exc)
        raise _blob_store_unavailable() from None
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(ref["size"]),
        "ETag": f'"{ref["sha256"]}"',
        "Cache-Control": "no-store",
    }
    return HttpResponse(200, headers, stream=_in_thread(chunks))


async def _in_thread(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """A blocking iterator (file or SDK reads) as an async one: each read runs in a worker thread."""
    end = b""
    try:
        while chunk := await anyio.to_thread.run_sync(next, chunks, end):
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


async def task_logs(req: HttpRequest) -> HttpResponse:
    """GET /tasks/{id}/logs: log lines after ``?after=<seq>``, oldest first."""
    after = int_query(req, "after", 0, 0, 2**62)
    limit = int_query(req, "limit", 100, 1, 1000)

    rows = await _service(req).logs(owner_scope(req), req.path_params["task_id"], after=after, limit=limit)
    lines = [
        {"seq": r["seq"], "timestamp": r["created_at"], "level": r["data"]["level"], "message": r["data"]["message"]}
        for r in rows
    ]
    return json_response(200, lines, {"Cache-Control": "no-store"})


async def cancel_task(req: HttpRequest) -> HttpResponse:
    """DELETE /tasks/{id}: 204 once CANCELLED, 202 while a running task stops, 409 if finished."""
    outcome = await _service(req).cancel(owner_scope(req), req.path_params["task_id"])
    if outcome.done:
        return HttpResponse(204)
    return json_response(202, task_resource(outcome.task), _task_headers(outcome.task))


async def retry_task(req: HttpRequest) -> HttpResponse:
    """POST /tasks/{id}/retry: re-queue a FAILED or CANCELLED task (same id, events continue)."""
    row = await _service(req).retry(owner_scope(req), req.path_params["task_id"])
    resource = task_resource(row)
    headers = {"Location": resource["links"]["self"], "Retry-After": str(get_settings().poll_retry_after_seconds)}
    return json_response(202, resource, headers)


async def task_types(req: HttpRequest) -> HttpResponse:
    """GET /task-types: every registered type with its input JSON Schema and flow limits."""
    types = [
        {
            "name": t.name,
            "description": t.description,
            "queue": t.queue,
            "timeout": t.timeout,
            "retries": t.retries,
            "concurrency_limit": t.concurrency_limit,
            "rate_limit": t.rate_in_force,
            "rate_limit_per_key": t.rate_limit_per_key,
            "input_schema": t.input_schema(),
        }
        for t in all_task_types()
    ]
    return json_response(200, types, {"Cache-Control": "max-age=60"})


async def healthz(req: HttpRequest) -> HttpResponse:
    """GET /healthz: the process is alive (no dependencies checked)."""
    return json_response(200, {"status": "ok"}, {"Cache-Control": "no-store"})


async def _check_dependencies(runtime: ApiRuntime) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        await runtime.store.ping()
        checks["database"] = "ok"
    except DatabaseError:
        checks["database"] = "unavailable"
    try:
        async with asyncio.timeout(2):
            await cast(Awaitable[bool], runtime.enqueuer.client.ping())  # async client: awaitable
        checks["broker"] = "ok"
    except (redis.RedisError, TimeoutError):
        checks["broker"] = "unavailable"
    return checks


async def metrics(req: HttpRequest) -> HttpResponse:
    """GET /metrics: this process's metrics in the Prometheus text format (see docs/observability.md)."""
    body, content_type = await anyio.to_thread.run_sync(telemetry.prometheus_text)  # gauges read Redis/PostgreSQL
    return HttpResponse(200, {"Content-Type": content_type, "Cache-Control": "no-store"}, body)


async def readyz(req: HttpRequest) -> HttpResponse:
    """GET /readyz: 200 when PostgreSQL and Redis answer, else 503 with Retry-After."""
    checks = await _check_dependencies(request_runtime(req))
    if all(v == "ok" for v in checks.values()):
        return json_response(200, {"status": "ready", "checks": checks}, {"Cache-Control": "no-store"})
    return json_response(
        503, {"status": "unavailable", "checks": checks}, {"Cache-Control": "no-store", "Retry-After": "5"}
    )
