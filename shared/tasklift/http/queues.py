"""``POST /queues/{queue}:pause`` and ``:resume``: hold a queue's PENDING work, then let it go.

Admin only (403 otherwise): a queue is shared by every principal. The queue is one of the task
types' queues (``GET /task-types`` shows each type's); any other name is 404. Both are
idempotent and answer 200 with the queue's state: ``{"queue", "paused", "pending"}``. Tasks
already RUNNING when a queue is paused run on; the others stay PENDING, with ``"paused": true``
in their resource, until it is resumed (store/queues.py says how nothing is lost).
"""

from __future__ import annotations

from typing import Any

from tasklift.http.handlers import request_runtime
from tasklift.http.problems import Problem
from tasklift.http.types import HttpRequest, HttpResponse, json_response
from tasklift.security.identity import current_identity
from tasklift.store import queues
from tasklift.tasks.registry import all_task_types


def _queue(req: HttpRequest) -> str:
    identity = current_identity()
    if identity is None or not identity.admin:
        raise Problem(403, "pausing and resuming a queue needs an admin credential", slug="forbidden")
    queue = req.path_params["queue"]
    if queue not in {t.queue for t in all_task_types()}:
        raise Problem(404, f"no task type uses a queue called {queue}", slug="not-found")
    return queue


def _state(queue: str, row: Any) -> HttpResponse:
    body = {"queue": queue, "paused": row["paused"], "pending": row["pending"]}
    return json_response(200, body, {"Cache-Control": "no-store"})


async def pause_queue(req: HttpRequest) -> HttpResponse:
    """POST /queues/{queue}:pause: its PENDING tasks stay PENDING (admin only)."""
    queue = _queue(req)
    return _state(queue, await queues.pause(request_runtime(req).store, queue, req.principal))


async def resume_queue(req: HttpRequest) -> HttpResponse:
    """POST /queues/{queue}:resume: its tasks are dispatched again, none lost (admin only)."""
    queue = _queue(req)
    return _state(queue, await queues.resume(request_runtime(req).store, queue))
