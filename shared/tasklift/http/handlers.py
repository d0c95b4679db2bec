"""The endpoint handlers: async, host-neutral, each translating HTTP to one service call.

Database work runs in a worker thread (``anyio.to_thread``) so that an async host stays free to
serve streams while PostgreSQL answers.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import anyio
import redis
from sqlalchemy.exc import DBAPIError

from tasklift.http.problems import Problem
from tasklift.http.resources import etag, retry_after, task_resource
from tasklift.http.types import HttpRequest, HttpResponse, json_response
from tasklift.queue.app import redis_url
from tasklift.settings import get_settings
from tasklift.store import repository as repo
from tasklift.store.db import get_engine
from tasklift.tasks.registry import all_task_types
from tasklift.tasks.service import InvalidInput, TaskService

log = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY = 255


def _service() -> TaskService:
    from tasklift.http.app_state import service

    return service()


def _json_body(req: HttpRequest) -> Any:
    content_type = (req.header("content-type") or "").split(";")[0].strip().lower()
    if content_type and content_type != "application/json" and not content_type.endswith("+json"):
        raise Problem(415, f"send the body as application/json, not {content_type}", slug="unsupported-media-type")
    if len(req.body) > get_settings().max_body_bytes:
        raise Problem(413, f"the body is larger than {get_settings().max_body_bytes} bytes", slug="payload-too-large")
    try:
        return json.loads(req.body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Problem(400, f"the body is not valid JSON: {exc}", slug="malformed-json") from None


def _int_query(req: HttpRequest, name: str, default: int, low: int, high: int) -> int:
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
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidInput(
            "Idempotency-Key must be 1 to 255 characters",
            [{"loc": ["header", "Idempotency-Key"], "msg": "1 to 255 characters"}],
        )
    outcome = await anyio.to_thread.run_sync(_service().submit, req.principal, body, key)
    resource = task_resource(outcome.task)
    base = get_settings().public_url or req.base_url
    headers = {
        "Location": resource["links"]["self"],
        "Operation-Location": f"{base.rstrip('/')}{resource['links']['self']}",
        "Retry-After": str(get_settings().poll_retry_after_seconds),
    }
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_response(202, resource, headers)


async def get_task(req: HttpRequest) -> HttpResponse:
    """GET /tasks/{id}: the resource, with ETag / 304 and an adaptive Retry-After."""
    row = await anyio.to_thread.run_sync(_service().get, req.principal, req.path_params["task_id"])
    headers = _task_headers(row)
    if req.header("if-none-match") in (headers["ETag"], "*"):
        return HttpResponse(304, headers)
    return json_response(200, task_resource(row), headers)


async def list_tasks(req: HttpRequest) -> HttpResponse:
    """GET /tasks: the caller's tasks, newest first, keyset-paged."""
    limit = _int_query(req, "limit", 20, 1, 100)
    created_after = None
    if raw := req.query.get("created_after"):
        try:
            created_after = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(
                "created_after must be an RFC 3339 time",
                [{"loc": ["query", "created_after"], "msg": "an RFC 3339 time"}],
            ) from None

    def run() -> Any:
        return _service().list(
            req.principal,
            status=req.query.get("status") or None,
            task_type=req.query.get("task_type") or None,
            created_after=created_after,
            limit=limit,
            cursor=req.query.get("cursor") or None,
        )

    listing = await anyio.to_thread.run_sync(run)
    items = [task_resource(row) for row in listing.items]
    return json_response(200, {"items": items, "next_cursor": listing.next_cursor}, {"Cache-Control": "no-store"})


async def task_logs(req: HttpRequest) -> HttpResponse:
    """GET /tasks/{id}/logs: log lines after ``?after=<seq>``, oldest first."""
    after = _int_query(req, "after", 0, 0, 2**62)
    limit = _int_query(req, "limit", 100, 1, 1000)

    def run() -> Any:
        return _service().logs(req.principal, req.path_params["task_id"], after=after, limit=limit)

    rows = await anyio.to_thread.run_sync(run)
    lines = [
        {"seq": r["seq"], "timestamp": r["created_at"], "level": r["data"]["level"], "message": r["data"]["message"]}
        for r in rows
    ]
    return json_response(200, lines, {"Cache-Control": "no-store"})


async def cancel_task(req: HttpRequest) -> HttpResponse:
    """DELETE /tasks/{id}: 204 once CANCELLED, 202 while a running task stops, 409 if finished."""
    outcome = await anyio.to_thread.run_sync(_service().cancel, req.principal, req.path_params["task_id"])
    if outcome.done:
        return HttpResponse(204)
    return json_response(202, task_resource(outcome.task), _task_headers(outcome.task))


async def task_types(req: HttpRequest) -> HttpResponse:
    """GET /task-types: every registered type with its input JSON Schema."""
    types = [
        {
            "name": t.name,
            "description": t.description,
            "queue": t.queue,
            "timeout": t.timeout,
            "retries": t.retries,
            "input_schema": t.input_schema(),
        }
        for t in all_task_types()
    ]
    return json_response(200, types, {"Cache-Control": "max-age=60"})


async def healthz(req: HttpRequest) -> HttpResponse:
    """GET /healthz: the process is alive (no dependencies checked)."""
    return json_response(200, {"status": "ok"}, {"Cache-Control": "no-store"})


def _check_dependencies() -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        with get_engine().connect() as conn:
            repo.ping(conn)
        checks["database"] = "ok"
    except DBAPIError:
        checks["database"] = "unavailable"
    try:
        client = redis.Redis.from_url(redis_url(), socket_timeout=2, socket_connect_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
        checks["broker"] = "ok"
    except redis.RedisError:
        checks["broker"] = "unavailable"
    return checks


async def readyz(req: HttpRequest) -> HttpResponse:
    """GET /readyz: 200 when PostgreSQL and Redis answer, else 503 with Retry-After."""
    checks = await anyio.to_thread.run_sync(_check_dependencies)
    if all(v == "ok" for v in checks.values()):
        return json_response(200, {"status": "ready", "checks": checks}, {"Cache-Control": "no-store"})
    return json_response(
        503, {"status": "unavailable", "checks": checks}, {"Cache-Control": "no-store", "Retry-After": "5"}
    )
