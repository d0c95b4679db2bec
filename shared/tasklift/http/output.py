"""GET /tasks/{id}/output: a task's output chunks (``ctx.emit``) after an index, read after the fact.

Owner-scoped like GET /tasks/{id} (another owner's task is 404). The SQL is the store's
(:data:`tasklift.store.repository.OUTPUT_AFTER_SQL`), run on the API's asyncpg pool. The same chunks
come live on the SSE stream as ``output`` events (docs/steps-and-output.md).
"""

from __future__ import annotations

import json
from typing import Any

from tasklift.http.guard import owner_scope
from tasklift.http.handlers import int_query, request_runtime
from tasklift.http.types import HttpRequest, HttpResponse, json_response
from tasklift.store import repository as repo
from tasklift.tasks.states import TERMINAL, TaskStatus

#: Batches GET /output reads per query: a batch holds up to TASKLIFT_OUTPUT_FLUSH_BYTES of chunks,
#: so a page is read in a few small queries, never ``limit`` batches at once.
BATCHES_PER_READ = 8
#: The most bytes (as JSON) of chunks one page of GET /output holds; it holds at least one chunk.
PAGE_BYTES = 4 * 1024 * 1024


class Page:
    """One page of GET /output: the chunks after index ``after``, at most ``limit`` and about ``max_bytes``."""

    def __init__(self, after: int, limit: int, max_bytes: int = PAGE_BYTES) -> None:
        self.after = after  #: the index of the last chunk taken (or looked past)
        self.limit = limit
        self.max_bytes = max_bytes
        self.chunks: list[dict[str, Any]] = []
        self.size = 0
        self.full = False  #: a chunk after the page's last one is known to exist

    def take(self, batches: list[Any]) -> None:
        """Add the chunks of ``batches`` (rows of ``OUTPUT_AFTER_SQL``, in order) until the page is full."""
        for batch in batches:
            data = batch["data"]
            for offset, chunk in enumerate(data["chunks"]):
                index = data["first"] + offset
                if index <= self.after:
                    continue
                size = len(json.dumps(chunk, ensure_ascii=False).encode())
                if self.chunks and (len(self.chunks) == self.limit or self.size + size > self.max_bytes):
                    self.full = True
                    return
                self.chunks.append({"index": index, "seq": batch["seq"], "attempt": data.get("attempt"), "data": chunk})
                self.size += size
                self.after = index


async def task_output(req: HttpRequest) -> HttpResponse:
    """GET /tasks/{id}/output: chunks with index > ``?after=`` (default 0), oldest first: at most ``?limit=``
    of them and about :data:`PAGE_BYTES` (at least one)."""
    after = int_query(req, "after", 0, 0, 2**62)
    limit = int_query(req, "limit", 100, 1, 1000)
    runtime = request_runtime(req)
    row = await runtime.service.get(owner_scope(req), req.path_params["task_id"])
    page = Page(after, limit)
    while True:
        params: dict[str, Any] = {"task_id": row["id"], "after": page.after, "limit": BATCHES_PER_READ}
        batches = await runtime.store.fetch(repo.OUTPUT_AFTER_SQL, params)
        page.take(batches)
        stored_all = len(batches) < BATCHES_PER_READ  # nothing is stored after these batches
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
