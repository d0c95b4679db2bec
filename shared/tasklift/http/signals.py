"""``POST /tasks/{id}/signals/{name}`` (send a signal to a task's ``ctx.wait_for``) and
``GET /tasks/{id}/steps`` (its steps and current wait: the dashboard's timeline).

Both are owner-scoped like the task's other reads and writes (:func:`~tasklift.http.guard.owner_scope`:
another owner's task is 404). A signal answers 202 with ``{"signal", "delivered", "task"}``:
``delivered`` is ``"resumed"`` when the task was WAITING on that name (now PENDING, published
through the API's enqueuer like a manual retry) or ``"kept"`` when it was not (the task's next
``wait_for`` of that name takes it). A finished task is 409, as is a task holding
:data:`~tasklift.store.signals.MAX_KEPT` kept signals. The SQL is :mod:`tasklift.store.signals`'s.
"""

from __future__ import annotations

from typing import Any

import anyio

from tasklift.blobs import claims
from tasklift.http.guard import owner_scope
from tasklift.http.handlers import _json_body, request_runtime
from tasklift.http.problems import Problem
from tasklift.http.resources import task_resource
from tasklift.http.types import HttpRequest, HttpResponse, json_response, rfc3339
from tasklift.settings import get_settings
from tasklift.store import signals
from tasklift.store.repository import Dispatch
from tasklift.tasks.service import Conflict, InvalidInput, NotFound, parse_task_id
from tasklift.tasks.states import TaskStatus
from tasklift.tasks.waits import SIGNAL_NAME


async def send_signal(req: HttpRequest) -> HttpResponse:
    """POST /tasks/{id}/signals/{name}: the JSON body is the payload ``ctx.wait_for(name)`` returns."""
    task_id = req.path_params["task_id"]
    name = req.path_params["name"]
    tid = parse_task_id(task_id)
    if not SIGNAL_NAME.fullmatch(name):
        raise InvalidInput(
            "a signal name is 1 to 200 of A-Z a-z 0-9 . _ ~ : -",
            [{"loc": ["path", "name"], "msg": "1 to 200 of A-Z a-z 0-9 . _ ~ : -"}],
        )
    payload = _json_body(req)
    if not claims.fits_inline(payload):  # recorded inline as the wait's step: no blob store on this path
        limit = get_settings().blob_threshold_bytes
        raise Problem(413, f"a signal's payload is at most {limit} bytes of JSON", slug="payload-too-large")
    runtime = request_runtime(req)
    done = await signals.send(runtime.store, tid, owner_scope(req), name, payload)
    if done.status is None:
        raise NotFound(f"task {task_id} does not exist")
    if not done.resumed and not done.kept:
        if TaskStatus(done.status).terminal:
            raise Conflict(f"task {task_id} already finished with {done.status}; it takes no signals")
        raise Conflict(f"task {task_id} already holds {signals.MAX_KEPT} signals no wait has taken")
    if done.resumed:
        row = done.row
        assert row is not None
        event = (await runtime.service.events_after(row["id"], row["last_seq"] - 1, 1))[0]
        # Its outbox intent is committed with it: published now like a retry's, else by the dispatcher.
        await runtime.enqueuer.enqueue(
            [Dispatch(row["id"], row["queue"], row["task_type"], row["traceparent"], event.seq)]
        )
        await anyio.to_thread.run_sync(runtime.announcer.announce, [event])
    else:
        row = await runtime.service.get(owner_scope(req), task_id)
    body = {"signal": name, "delivered": "resumed" if done.resumed else "kept", "task": task_resource(row)}
    return json_response(202, body, {"Cache-Control": "no-store", "Location": f"/tasks/{row['id']}"})


async def task_steps(req: HttpRequest) -> HttpResponse:
    """GET /tasks/{id}/steps: its recorded steps (names, positions, durations; no results) and its wait."""
    runtime = request_runtime(req)
    row = await runtime.service.get(owner_scope(req), req.path_params["task_id"])
    recorded, wait = await signals.steps(runtime.store, row["id"])
    body: dict[str, Any] = {
        "task_id": str(row["id"]),
        "status": row["status"],
        "steps": [
            {
                "name": step["name"],
                "position": step["position"],
                "attempt": step["attempt"],
                "duration_ms": step["duration_ms"],
                "finished_at": rfc3339(step["created_at"]),
            }
            for step in recorded
        ],
        "wait": None
        if wait is None or row["status"] != TaskStatus.WAITING
        else {
            "step": wait["name"],
            "signal": wait["signal"],
            "deadline": rfc3339(wait["deadline"]),
            "since": rfc3339(wait["created_at"]),
        },
    }
    return json_response(200, body, {"Cache-Control": "no-store"})
