"""How a task row is shown to clients (API.md "Resource: a task"): GET /tasks/{id}, and the body of
its webhooks (:mod:`tasklift.queue.webhooks`), so it lives below both."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasklift.blobs import claims
from tasklift.jsoncodec import rfc3339
from tasklift.security.stream_tokens import stream_link
from tasklift.tasks.flow import waiting_reason


def task_resource(row: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON resource of a task."""
    tid = str(row["id"])
    base = f"/tasks/{tid}"
    return {
        "task_id": tid,
        "task_type": row["task_type"],
        "status": row["status"],
        "progress": row["progress"] or {"percent": 0, "current": None, "total": None, "message": None},
        **claims.public_result(tid, row["result"]),  # "result", or null and "result_url" when it is in blob storage
        "error": row["error"],
        "attempts": row["attempts"],
        "cancel_requested": row["cancel_requested"],
        "metadata": row["metadata"],
        "created_at": rfc3339(row["created_at"]),
        "started_at": rfc3339(row["started_at"]),
        "updated_at": rfc3339(row["updated_at"]),
        "completed_at": rfc3339(row["completed_at"]),
        "trace_id": row["trace_id"],
        **_paused(row),
        # Flow control (docs/flow-control.md)
        "priority": row["priority"],
        "scheduled_for": rfc3339(row["scheduled_for"]),
        "expires_at": rfc3339(row["expires_at"]),
        "concurrency_key": row["concurrency_key"],
        "fairness_key": row["fairness_key"],
        "waiting_reason": waiting_reason(row),
        "links": {
            "self": base,
            "stream": stream_link(tid),  # with a short-lived access token: EventSource cannot send headers
            "logs": f"{base}/logs",
            "output": f"{base}/output",
            "cancel": base,
            "retry": f"{base}/retry",
            "operation": f"/operations/{tid}",  # the Azure status monitor (Azure-AsyncOperation)
            "google_operation": f"/v1/operations/{tid}",  # the AIP-151 google.longrunning.Operation
            "deliveries": f"{base}/deliveries",  # its webhooks (docs/webhooks.md)
        },
    }


def _paused(row: Mapping[str, Any]) -> dict[str, bool]:
    """``{"paused": …}`` where the row was read with its queue's state (GET /tasks/{id}: docs/queues.md)."""
    paused = row.get("paused")
    return {} if paused is None else {"paused": bool(paused)}
