"""The durable steps of a task (``ctx.step``): read them back, record one, fenced by the attempt.

A step is recorded once per task and name (the primary key), by ONE statement that also renews the
lease and appends a ``step`` event: the fence (``status = 'RUNNING' AND attempts = :attempt``) is
the UPDATE's WHERE, and the INSERTs read its RETURNING, so an attempt that lost its lease records
nothing (like :func:`tasklift.store.leases.record_progress`).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, Float, Integer, Text, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB, UUID

from tasklift.store.leases import FENCED_EVENT_CTE
from tasklift.store.repository import RecordedStep

_TASK_ID = bindparam("task_id", type_=UUID(as_uuid=True))


_LOAD = text(
    "SELECT name, position, version, attempt, result FROM task_steps WHERE task_id = :task_id ORDER BY position"
).bindparams(_TASK_ID)


def load_steps(conn: Connection, task_id: uuid.UUID) -> list[RecordedStep]:
    """Every recorded step of the task, in the order the run first reached them."""
    return [RecordedStep(*row) for row in conn.execute(_LOAD, {"task_id": task_id})]


_RECORD = text(
    FENCED_EVENT_CTE
    + """, step AS (
    INSERT INTO task_steps (task_id, name, position, version, attempt, result, duration_ms)
    SELECT r.id, :name, :position, :version, :attempt, CAST(:result AS jsonb), :duration_ms FROM r
    ON CONFLICT (task_id, name) DO NOTHING
), step_event AS (
    INSERT INTO task_events (task_id, seq, kind, data)
    SELECT r.id, r.last_seq, 'step', jsonb_build_object(
        'status', 'RUNNING', 'step', CAST(:name AS text), 'position', CAST(:position AS integer),
        'attempt', CAST(:attempt AS integer), 'duration_ms', CAST(:duration_ms AS double precision))
    FROM r
)
SELECT last_seq, cancel_requested FROM r"""
).bindparams(
    _TASK_ID,
    bindparam("attempt", type_=Integer),
    bindparam("lease", type_=Float),
    bindparam("name", type_=Text),
    bindparam("position", type_=Integer),
    bindparam("version", type_=Text),
    bindparam("result", type_=JSONB),
    bindparam("duration_ms", type_=Float),
)


def record_step(
    conn: Connection,
    task_id: uuid.UUID,
    attempt: int,
    step: RecordedStep,
    duration_ms: float,
    lease: float,
) -> tuple[int, dict[str, Any], bool] | None:
    """Record a finished step (also a heartbeat); ``(seq, event data, cancel flag)``, None if fenced off."""
    params = {
        "task_id": task_id,
        "attempt": attempt,
        "lease": lease,
        "name": step.name,
        "position": step.position,
        "version": step.version,
        "result": step.result,
        "duration_ms": round(duration_ms, 3),
    }
    row = conn.execute(_RECORD, params).first()
    if row is None:
        return None
    data = {
        "status": "RUNNING",
        "step": step.name,
        "position": step.position,
        "attempt": attempt,
        "duration_ms": params["duration_ms"],
    }
    return row.last_seq, data, row.cancel_requested
