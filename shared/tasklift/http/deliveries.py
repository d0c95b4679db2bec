"""A task's webhook deliveries: ``GET /tasks/{id}/deliveries`` and ``POST …/deliveries/{id}:redeliver``.

Under the same authorisation as ``GET /tasks/{id}`` (another tenant's task is 404). The log shows
each delivery's ``webhook-id``, event type, state (pending | delivered | failed), attempts and the
last answer (a short excerpt at most); redelivery makes one due again at once, with the same
``webhook-id`` and a fresh retry window (docs/webhooks.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasklift.http.guard import owner_scope
from tasklift.http.handlers import int_query, request_runtime
from tasklift.http.types import HttpRequest, HttpResponse, json_response, rfc3339
from tasklift.store import deliveries
from tasklift.tasks.service import NotFound

MAX_DELIVERIES = 1000


def delivery_resource(row: Mapping[str, Any]) -> dict[str, Any]:
    """One delivery as the API shows it."""
    task_id = str(row["task_id"])
    return {
        "id": row["id"],
        "task_id": task_id,
        "event_type": row["event_type"],
        "url": row["url"],
        "state": row["state"],
        "attempts": row["attempts"],
        "next_attempt_at": rfc3339(row["next_attempt_at"]) if row["state"] == "pending" else None,
        "last_attempt_at": rfc3339(row["last_attempt_at"]),
        "last_status": row["last_status"],
        "last_error": row["last_error"],
        "delivered_at": rfc3339(row["delivered_at"]),
        "created_at": rfc3339(row["created_at"]),
        "links": {"redeliver": f"/tasks/{task_id}/deliveries/{row['id']}:redeliver"},
    }


async def list_deliveries(req: HttpRequest) -> HttpResponse:
    """GET /tasks/{id}/deliveries: the task's webhook deliveries, oldest first."""
    runtime = request_runtime(req)
    owner = owner_scope(req)
    row = await runtime.service.get(owner, req.path_params["task_id"])  # NotFound for another tenant's
    limit = int_query(req, "limit", 100, 1, MAX_DELIVERIES)
    rows = await deliveries.list_deliveries(runtime.store, row["id"], owner, limit)
    body = {"items": [delivery_resource(r) for r in rows]}
    return json_response(200, body, {"Cache-Control": "no-store"})


async def redeliver(req: HttpRequest) -> HttpResponse:
    """POST /tasks/{id}/deliveries/{delivery_id}:redeliver: send it again now (202 + the delivery)."""
    runtime = request_runtime(req)
    owner = owner_scope(req)
    row = await runtime.service.get(owner, req.path_params["task_id"])
    delivery_id = req.path_params["delivery_id"]
    changed = await deliveries.redeliver(runtime.store, row["id"], delivery_id, owner)
    if changed is None:
        raise NotFound(f"task {row['id']} has no delivery {delivery_id}")
    return json_response(202, delivery_resource(changed), {"Cache-Control": "no-store"})
