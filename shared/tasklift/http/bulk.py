"""``POST /bulk``: cancel, retry or purge the tasks a filter selects, as an operation (issue 22, part 3).

- ``POST /bulk`` ``{"action": "cancel"|"retry"|"purge", "filter": {...}, "dry_run": false}``: with
  ``dry_run`` **200** ``{"action", "filter", "dry_run": true, "count"}``, the number of tasks it
  would change now; otherwise **202** with the bulk operation's resource and ``Location:
  /bulk/{id}``. The reaper works through it in batches (:mod:`tasklift.tasks.bulk_worker`).
- ``GET /bulk/{bulk_id}``: the operation: ``status`` (PENDING, RUNNING, SUCCESS, CANCELLED,
  FAILED), ``total`` (matched when it was made), ``done``, ``skipped``, ``failed``, ``processed``,
  ``progress.percent``, its times; ``Retry-After`` while it is open.
- ``GET /bulk``: the caller's operations (an admin's: everyone's), newest first, ``?status=``,
  ``?limit=`` (1-100, 20) and ``?cursor=`` (the page before's ``next_cursor``).
- ``DELETE /bulk/{bulk_id}``: stop it (200; the batch being worked on still commits); 409 once it
  finished by itself.

Who may touch what: an admin's operation covers every owner's tasks, or the filter's ``owner``; any
other caller's only its own tasks, and a filter naming another ``owner`` is 403. An operation is
seen by whoever made it (and by admins); another caller's is 404. The filter's fields are
:mod:`tasklift.tasks.bulk`'s; a bad body is 422 with ``errors[].loc`` into it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from tasklift.http.handlers import _json_body, int_query, request_runtime
from tasklift.http.problems import Problem
from tasklift.http.types import HttpRequest, HttpResponse, json_response, rfc3339
from tasklift.security.identity import current_identity
from tasklift.settings import get_settings
from tasklift.store import bulk as store
from tasklift.tasks.bulk import parse_request
from tasklift.tasks.service import InvalidInput, NotFound, decode_cursor, encode_cursor


def _admin() -> bool:
    identity = current_identity()
    return identity is not None and identity.admin


def bulk_resource(row: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON resource of a bulk operation."""
    processed = row["done"] + row["skipped"] + row["failed"]
    if row["status"] == "SUCCESS":
        percent = 100
    elif row["total"]:
        percent = min(99, processed * 100 // row["total"])
    else:
        percent = 0
    base = f"/bulk/{row['id']}"
    return {
        "bulk_id": str(row["id"]),
        "action": row["action"],
        "filter": row["filter"],
        "status": row["status"],
        "total": row["total"],
        "processed": processed,
        "done": row["done"],
        "skipped": row["skipped"],
        "failed": row["failed"],
        "progress": {"percent": percent},
        "error": row["error"],
        "created_at": rfc3339(row["created_at"]),
        "started_at": rfc3339(row["started_at"]),
        "updated_at": rfc3339(row["updated_at"]),
        "finished_at": rfc3339(row["finished_at"]),
        "links": {"self": base, "cancel": base},
    }


def _answer(status: int, row: Mapping[str, Any], headers: dict[str, str] | None = None) -> HttpResponse:
    more = {"Retry-After": "1"} if row["status"] in store.OPEN else {}
    return json_response(status, bulk_resource(row), {"Cache-Control": "no-store", **more, **(headers or {})})


async def create_bulk(req: HttpRequest) -> HttpResponse:
    """POST /bulk: a dry-run count (200), or the operation, made (202)."""
    request = parse_request(_json_body(req, get_settings().max_body_bytes))
    if _admin():
        scope_owner = request.owner  # None: every owner's tasks
    elif request.owner is not None and request.owner != req.principal:
        raise Problem(403, "only an admin may act on another principal's tasks", slug="forbidden")
    else:
        scope_owner = req.principal
    runtime = request_runtime(req)
    if request.dry_run:
        count = await store.count(runtime.store, request.action, request.filter, scope_owner)
        body = {"action": request.action, "filter": request.filter, "dry_run": True, "count": count}
        return json_response(200, body, {"Cache-Control": "no-store"})
    row = await store.create(runtime.store, req.principal, request.action, request.filter, scope_owner)
    return _answer(202, row, {"Location": f"/bulk/{row['id']}"})


def _bulk_id(req: HttpRequest) -> uuid.UUID:
    raw = req.path_params["bulk_id"]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"bulk operation {raw} does not exist") from None


def _viewer(req: HttpRequest) -> str | None:
    return None if _admin() else req.principal


async def get_bulk(req: HttpRequest) -> HttpResponse:
    """GET /bulk/{bulk_id}: the operation and its progress."""
    op_id = _bulk_id(req)
    row = await store.get(request_runtime(req).store, op_id, _viewer(req))
    if row is None:
        raise NotFound(f"bulk operation {op_id} does not exist")
    return _answer(200, row)


async def list_bulk(req: HttpRequest) -> HttpResponse:
    """GET /bulk: the caller's operations, newest first, keyset-paged."""
    limit = int_query(req, "limit", 20, 1, 100)
    status = req.query.get("status") or None
    if status is not None and status not in store.STATUSES:
        msg = f"one of {', '.join(store.STATUSES)}"
        raise InvalidInput(f"status must be {msg}", [{"loc": ["query", "status"], "msg": msg}])
    cursor = req.query.get("cursor") or None
    before = decode_cursor(cursor) if cursor else None
    rows = await store.list_(request_runtime(req).store, _viewer(req), status, before, limit + 1)
    page, more = rows[:limit], len(rows) > limit
    next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if more else None
    body = {"items": [bulk_resource(row) for row in page], "next_cursor": next_cursor}
    return json_response(200, body, {"Cache-Control": "no-store"})


async def cancel_bulk(req: HttpRequest) -> HttpResponse:
    """DELETE /bulk/{bulk_id}: stop an open operation (what it changed stays changed)."""
    op_id = _bulk_id(req)
    runtime = request_runtime(req)
    row = await store.cancel(runtime.store, op_id, _viewer(req))
    if row is None:
        row = await store.get(runtime.store, op_id, _viewer(req))
        if row is None:
            raise NotFound(f"bulk operation {op_id} does not exist")
        if row["status"] != "CANCELLED":
            raise Problem(409, f"bulk operation {op_id} already finished with {row['status']}", slug="conflict")
    return _answer(200, row)
