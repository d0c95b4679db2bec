"""Signals and the steps listing, on the API's asyncpg store (``POST /tasks/{id}/signals/{name}``,
``GET /tasks/{id}/steps``).

A signal is one transaction of three statements: the task row is locked first (the lock order of
:mod:`tasklift.store.waits`: the worker beginning a wait and the dispatcher waking one lock it too),
then :data:`SIGNAL_SQL` resumes the task if it is WAITING on that name (the wait row deleted, the
payload recorded as the wait's step, WAITING → PENDING with its status event and a dispatch intent
due now, like :data:`~tasklift.store.repository.REOPEN_SQL`), or else keeps the signal for the
task's next wait on that name; then the changed row is read back. Because the later statements
read a snapshot taken after the lock, a wait that began just before is seen, and a wait that begins
just after finds the kept signal: none is lost. Of two signals racing for one wait, the first to
lock resumes the task and the second is kept for its next wait on that name.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from tasklift.store import aio
from tasklift.store import repository as repo
from tasklift.store.aio import positional
from tasklift.tasks.states import TERMINAL, TaskStatus

#: The task row, locked, if ``:owner`` may change it (NULL: any owner).
LOCK_SQL = (
    "SELECT status FROM tasks WHERE id = :task_id AND (CAST(:owner AS text) IS NULL OR owner = :owner) FOR UPDATE"
)
#: Resume the task WAITING on ``:name``, or keep the signal (at most ``:max_kept`` kept per task).
SIGNAL_SQL = f"""
WITH w AS (
    DELETE FROM task_waits AS w USING tasks AS t
    WHERE w.task_id = :task_id AND w.signal = :name AND t.id = w.task_id AND t.status = 'WAITING'
    RETURNING w.task_id, w.name, w.position, w.version, w.attempt, w.created_at
), step AS (
    INSERT INTO task_steps (task_id, name, position, version, attempt, result, duration_ms)
    SELECT w.task_id, w.name, w.position, w.version, w.attempt,
           jsonb_build_object('signal', CAST(:payload AS jsonb)), extract(epoch FROM now() - w.created_at) * 1000
    FROM w
    ON CONFLICT (task_id, name) DO NOTHING
), kept AS (
    INSERT INTO task_signals (task_id, name, payload)
    SELECT CAST(:task_id AS uuid), CAST(:name AS text), CAST(:payload AS jsonb)
    WHERE NOT EXISTS (SELECT FROM w)
      AND (SELECT count(*) FROM task_signals WHERE task_id = :task_id) < :max_kept
    RETURNING id
), r AS (
    UPDATE tasks SET status = 'PENDING', last_seq = last_seq + 1, updated_at = now()
    WHERE id = :task_id AND EXISTS (SELECT FROM w)
    RETURNING id, status, progress, attempts, cancel_requested, queue, last_seq
), resume_event AS (
    INSERT INTO task_events (task_id, seq, kind, data) SELECT r.id, r.last_seq, 'status', {repo.STATUS_DATA_SQL} FROM r
), {repo.REARM_INTENT_CTE}
SELECT EXISTS (SELECT FROM r) AS resumed, EXISTS (SELECT FROM kept) AS kept"""

#: The task's recorded steps (no results), in the order its runs reached them.
STEPS_SQL = """
SELECT name, position, attempt, duration_ms, created_at FROM task_steps WHERE task_id = :task_id ORDER BY position"""
#: What the task waits for now, if it is WAITING.
WAIT_SQL = "SELECT name, signal, deadline, created_at FROM task_waits WHERE task_id = :task_id"

#: Signals kept per task at most (sent while it was not waiting for them); one more is a 409.
MAX_KEPT = 100

_LOCK, _LOCK_ARGS = positional(LOCK_SQL)
_SIGNAL, _SIGNAL_ARGS = positional(SIGNAL_SQL)
_GET, _GET_ARGS = positional(repo.GET_TASK_SQL)


@dataclass(frozen=True)
class Delivery:
    """What a signal did: ``status`` is the task's before it (None: no such task for this caller)."""

    status: str | None
    resumed: bool = False
    kept: bool = False
    row: asyncpg.Record | None = None  #: the task after the signal, when it resumed it


async def send(store: aio.AsyncStore, task_id: uuid.UUID, owner: str | None, name: str, payload: Any) -> Delivery:
    """Deliver the signal ``name`` with ``payload`` to the task (see the module docstring)."""
    values = {"task_id": task_id, "owner": owner, "name": name, "payload": payload, "max_kept": MAX_KEPT, "id": task_id}

    async def run(conn: asyncpg.Connection) -> Delivery:
        async with conn.transaction():
            status = await conn.fetchval(_LOCK, *[values[n] for n in _LOCK_ARGS])
            if status is None or TaskStatus(status) in TERMINAL:
                return Delivery(status)
            done = await conn.fetchrow(_SIGNAL, *[values[n] for n in _SIGNAL_ARGS])
            row = await conn.fetchrow(_GET, *[values[n] for n in _GET_ARGS]) if done["resumed"] else None
            return Delivery(status, done["resumed"], done["kept"], row)

    return await store.run(run)


async def steps(store: aio.AsyncStore, task_id: uuid.UUID) -> tuple[list[asyncpg.Record], asyncpg.Record | None]:
    """The task's recorded steps, and its current wait (None unless WAITING)."""
    recorded = await store.fetch(STEPS_SQL, {"task_id": task_id})
    wait = await store.fetchrow(WAIT_SQL, {"task_id": task_id})
    return recorded, wait
