"""``/schedules``: cron and interval schedules as a resource (issue 21 part 5; docs/flow-control.md).

- ``POST /schedules`` ``{"name", "task_type", "payload", "cron" + "timezone" | "interval_seconds",
  "catchup", "paused", "priority", "ttl_seconds", "concurrency_key", "fairness_key"}``: **201** with
  the schedule and ``Location: /schedules/{id}``; 409 when the caller has a schedule of that name;
  422 (``errors[0].loc`` into the body) for a bad cron expression, time zone, type or payload (the
  payload is validated as a ``POST /tasks`` body of the type would be).
- ``GET /schedules``: the caller's schedules, newest first, keyset-paged (``limit``, ``cursor``).
- ``GET /schedules/{id}``; ``POST /schedules/{id}:pause`` / ``:resume`` (200, idempotent; a resume
  counts its next time from now); ``DELETE /schedules/{id}`` (204; its tasks stay).
- ``GET /schedules/{id}/runs``: its firings, latest first: nominal time, task id and status.

A schedule belongs to its caller's principal, as a task does: its firings are submitted as that
principal; another caller's schedule is 404 (an admin sees every one).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tasklift.http.guard import owner_scope
from tasklift.http.handlers import _json_body, int_query, request_runtime, time_query
from tasklift.http.problems import Problem
from tasklift.http.types import HttpRequest, HttpResponse, json_response, rfc3339
from tasklift.settings import get_settings
from tasklift.store import schedules as store
from tasklift.tasks import schedules
from tasklift.tasks.flow import FLOW_FIELDS
from tasklift.tasks.service import (
    InvalidInput,
    NotFound,
    decode_cursor,
    encode_cursor,
    parse_flow,
    parse_submission,
)


def schedule_resource(row: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON resource of a schedule."""
    base = f"/schedules/{row['id']}"
    last = row["last_task_id"]
    return {
        "schedule_id": str(row["id"]),
        "name": row["name"],
        "task_type": row["task_type"],
        "payload": row["payload"],
        "cron": row["cron"],
        "timezone": row["timezone"] if row["cron"] is not None else None,
        "interval_seconds": row["interval_seconds"],
        "catchup": row["catchup"],
        **{field: row["flow"].get(field) for field in schedules.FIRING_FLOW_FIELDS},
        "paused": row["paused"],
        "next_fire_at": None if row["paused"] else rfc3339(row["next_fire_at"]),
        "last_fired_at": rfc3339(row["last_fired_at"]),
        "last_task_id": str(last) if last is not None else None,
        "last_error": row["last_error"],
        "fired": row["fired"],
        "created_at": rfc3339(row["created_at"]),
        "updated_at": rfc3339(row["updated_at"]),
        "links": {
            "self": base,
            "runs": f"{base}/runs",
            "pause": f"{base}:pause",
            "resume": f"{base}:resume",
            **({"last_task": f"/tasks/{last}"} if last is not None else {}),
        },
    }


def _answer(status: int, row: Mapping[str, Any], headers: dict[str, str] | None = None) -> HttpResponse:
    return json_response(status, schedule_resource(row), {"Cache-Control": "no-store", **(headers or {})})


def _invalid(field: str, msg: str) -> InvalidInput:
    loc = ["body"] if field == "body" else ["body", field]
    return InvalidInput(f"invalid {field}: {msg}", [{"loc": loc, "msg": msg}])


def parse_body(body: Any) -> schedules.ScheduleSpec:
    """A ``POST /schedules`` body, its payload checked by the submit path, or :class:`InvalidInput`."""
    try:
        spec = schedules.parse_spec(body)
    except schedules.ScheduleError as exc:
        raise _invalid(exc.field, exc.msg) from None
    reserved = sorted(set(spec.payload) & {*FLOW_FIELDS, "task_type"})
    if reserved:  # they would be read as the submit's own fields
        raise InvalidInput(
            f"payload may not carry {reserved[0]}",
            [{"loc": ["body", "payload", reserved[0]], "msg": "a submit field: give it beside payload"}],
        )
    submit = schedules.submit_body(spec.task_type, spec.payload, spec.flow)
    try:
        parse_submission(submit)
        parse_flow(submit)
    except InvalidInput as exc:  # its locations name the submit body: the payload's fields are under payload
        errors = [_payload_loc(error) for error in exc.errors]
        raise InvalidInput(exc.detail, errors) from None
    return spec


def _payload_loc(error: dict[str, Any]) -> dict[str, Any]:
    loc = list(error.get("loc", []))
    if len(loc) >= 2 and loc[1] not in ("task_type", *schedules.FIRING_FLOW_FIELDS):
        loc = ["body", "payload", *loc[1:]]
    return {**error, "loc": loc}


async def create_schedule(req: HttpRequest) -> HttpResponse:
    """POST /schedules: make a schedule (201)."""
    spec = parse_body(_json_body(req, get_settings().max_body_bytes))
    owner = req.principal
    timing = spec.timing
    values = {
        "id": uuid.uuid4(),
        "owner": owner,
        "name": spec.name,
        "task_type": spec.task_type,
        "payload": spec.payload,
        "flow": spec.flow,
        "cron": timing.cron,
        "timezone": timing.timezone,
        "interval_seconds": timing.interval,
        "catchup": timing.catchup,
        "paused": spec.paused,
        "next_fire_at": schedules.first_fire(timing, datetime.now(UTC)),
    }
    row = await store.create(request_runtime(req).store, values)
    if row is None:
        raise Problem(409, f"a schedule named {spec.name!r} exists already", slug="conflict")
    return _answer(201, row, {"Location": f"/schedules/{row['id']}"})


async def list_schedules(req: HttpRequest) -> HttpResponse:
    """GET /schedules: the caller's schedules, newest first, keyset-paged like GET /tasks."""
    limit = int_query(req, "limit", 20, 1, 100)
    cursor = req.query.get("cursor") or None
    before = decode_cursor(cursor) if cursor else None
    rows = await store.list_page(request_runtime(req).store, owner_scope(req), limit + 1, before)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more and rows else None
    items = [schedule_resource(row) for row in rows]
    return json_response(200, {"items": items, "next_cursor": next_cursor}, {"Cache-Control": "no-store"})


def _schedule_id(req: HttpRequest) -> uuid.UUID:
    raw = req.path_params["schedule_id"]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"schedule {raw} does not exist") from None


def _found(row: Mapping[str, Any] | None, schedule_id: uuid.UUID) -> Mapping[str, Any]:
    if row is None:
        raise NotFound(f"schedule {schedule_id} does not exist")
    return row


async def get_schedule(req: HttpRequest) -> HttpResponse:
    """GET /schedules/{id}."""
    sid = _schedule_id(req)
    return _answer(200, _found(await store.get(request_runtime(req).store, sid, owner_scope(req)), sid))


async def pause_schedule(req: HttpRequest) -> HttpResponse:
    """POST /schedules/{id}:pause: no firing until resumed (idempotent)."""
    sid = _schedule_id(req)
    return _answer(200, _found(await store.pause(request_runtime(req).store, sid, owner_scope(req)), sid))


async def resume_schedule(req: HttpRequest) -> HttpResponse:
    """POST /schedules/{id}:resume: fires again from its next time after now (idempotent)."""
    sid = _schedule_id(req)
    runtime, owner = request_runtime(req), owner_scope(req)
    row = _found(await store.get(runtime.store, sid, owner), sid)
    timing = schedules.Timing(row["cron"], row["timezone"], row["interval_seconds"], row["catchup"])
    next_fire_at = schedules.first_fire(timing, datetime.now(UTC))
    return _answer(200, _found(await store.resume(runtime.store, sid, owner, next_fire_at), sid))


async def delete_schedule(req: HttpRequest) -> HttpResponse:
    """DELETE /schedules/{id}: 204; the tasks it fired stay."""
    sid = _schedule_id(req)
    if not await store.delete(request_runtime(req).store, sid, owner_scope(req)):
        raise NotFound(f"schedule {sid} does not exist")
    return HttpResponse(204, {"Cache-Control": "no-store"})


async def schedule_runs(req: HttpRequest) -> HttpResponse:
    """GET /schedules/{id}/runs: its firings, latest first (``limit``; ``before``: an RFC 3339 fire time)."""
    sid = _schedule_id(req)
    runtime = request_runtime(req)
    _found(await store.get(runtime.store, sid, owner_scope(req)), sid)
    limit = int_query(req, "limit", 20, 1, 100)
    before = time_query(req, "before")
    rows = await store.runs(runtime.store, sid, limit, before)
    items = [
        {
            "fire_at": rfc3339(row["fire_at"]),
            "task_id": str(row["task_id"]),
            "status": row["status"],
            "created_at": rfc3339(row["created_at"]),
            "links": {"task": f"/tasks/{row['task_id']}"},
        }
        for row in rows
    ]
    return json_response(200, {"items": items}, {"Cache-Control": "no-store"})
