"""A task's output stream (``ctx.emit``): batches of chunks stored as ``output`` events.

A flushed batch is ONE event of kind ``output`` in ``task_events`` with data
``{"status": "RUNNING", "attempt": n, "first": i, "last": j, "chunks": [...]}``: the chunks with
indexes ``first`` … ``last`` (1-based, consecutive over the task's whole life). Its ``seq`` is its
SSE id, so a stream resumes with ``Last-Event-ID`` like every other event; ``GET /tasks/{id}/output``
pages by chunk index through the partial index on ``(task_id, last)`` (migration 0006_steps).
The write is fenced by the attempt in the same statement, like progress. (The API's read of the
batches is plain text in :mod:`tasklift.store.repository`: an API process imports no SQLAlchemy.)
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, Float, Integer, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB, UUID

from tasklift.store.leases import FENCED_EVENT_CTE

_TASK_ID = bindparam("task_id", type_=UUID(as_uuid=True))

_LAST_INDEX = text(
    "SELECT coalesce(max(CAST(data ->> 'last' AS bigint)), 0) FROM task_events"
    " WHERE task_id = :task_id AND kind = 'output'"
).bindparams(_TASK_ID)


def last_index(conn: Connection, task_id: uuid.UUID) -> int:
    """The index of the task's last stored chunk (0 before the first): an attempt goes on after it."""
    return int(conn.execute(_LAST_INDEX, {"task_id": task_id}).scalar() or 0)


_APPEND = text(
    FENCED_EVENT_CTE
    + """, output_event AS (
    INSERT INTO task_events (task_id, seq, kind, data)
    SELECT r.id, r.last_seq, 'output', CAST(:data AS jsonb) FROM r
)
SELECT last_seq, cancel_requested FROM r"""
).bindparams(
    _TASK_ID, bindparam("attempt", type_=Integer), bindparam("lease", type_=Float), bindparam("data", type_=JSONB)
)


def batch_data(attempt: int, first: int, chunks: list[Any]) -> dict[str, Any]:
    """The data of the ``output`` event holding ``chunks``, the first of which has index ``first``."""
    return {"status": "RUNNING", "attempt": attempt, "first": first, "last": first + len(chunks) - 1, "chunks": chunks}


def append_output(
    conn: Connection, task_id: uuid.UUID, attempt: int, data: dict[str, Any], lease: float
) -> tuple[int, bool] | None:
    """Store one batch (also a heartbeat): ``(seq, cancel flag)``, or None if this attempt was fenced off."""
    row = conn.execute(_APPEND, {"task_id": task_id, "attempt": attempt, "lease": lease, "data": data}).first()
    return None if row is None else (row.last_seq, row.cancel_requested)
