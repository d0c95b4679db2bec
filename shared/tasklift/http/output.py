"""GET /tasks/{id}/output: a task's output chunks (``ctx.emit``) after an index, read after the fact.

Owner-scoped like GET /tasks/{id} (another owner's task is 404). The SQL is the store's
(:data:`tasklift.store.output.OUTPUT_AFTER_SQL`), run on the API's asyncpg pool. The same chunks
come live on the SSE stream as ``output`` events (docs/steps-and-output.md).
"""

from __future__ import annotations

from typing import Any

from tasklift.http.handlers import _int_query, _runtime
from tasklift.http.types import HttpRequest, HttpResponse, json_response
from tasklift.security.identity import owner_scope
from tasklift.store import output
from tasklift.tasks.states import TERMINAL, TaskStatus


async def task_output(req: HttpRequest) -> HttpResponse:
    """GET /tasks/{id}/output: chunks with index > ``?after=`` (default 0), oldest first: at most ``?limit=``
    of them and about :data:`~tasklift.store.output.PAGE_BYTES` (at least one)."""
    after = _int_query(req, "after", 0, 0, 2**62)
    limit = _int_query(req, "limit", 100, 1, 1000)
    runtime = _runtime(req)
    row = await runtime.service.get(owner_scope(req), req.path_params["task_id"])
    page = output.Page(after, limit)
    while True:
        params: dict[str, Any] = {"task_id": row["id"], "after": page.after, "limit": output.BATCHES_PER_READ}
        batches = await runtime.store.fetch(output.OUTPUT_AFTER_SQL, params)
        page.take(batches)
        stored_all = len(batches) < output.BATCHES_PER_READ  # nothing is stored after these batches
        if page.full or stored_all or len(page.chunks) == limit:
            break
    chunks = page.chunks
    # The runner writes the last chunks before the outcome: once terminal, nothing more will come.
    complete = TaskStatus(row["status"]) in TERMINAL and stored_all and not page.full
    body = {
        "task_id": str(row["id"]),
        "status": row["status"],
        "chunks": chunks,
        "next_after": chunks[-1]["index"] if chunks else after,
        "complete": complete,
    }
    return json_response(200, body, {"Cache-Control": "no-store"})
