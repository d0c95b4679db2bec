"""The worker's and the dispatcher's statements of waits (``ctx.wait_for``, ``ctx.sleep``).

A wait's outcome is recorded as a step (``task_steps``) named ``wait#<signal>`` or ``sleep#<n>`` at
the wait's position, so a re-run of the task replays it like any step: ``{"signal": payload}``,
``{"timeout": true}`` or ``{"slept": true}``.

Lock order, everywhere: the task row first. The worker's :func:`begin_wait` runs in a transaction
that locked the row for its attempt (:func:`tasklift.store.leases.lock_for_attempt`); the API's
signal (:mod:`tasklift.store.signals`) locks it before it looks at the wait; the dispatcher's
:func:`wake_due` locks the due tasks' rows (SKIP LOCKED) before it changes them. Each later
statement of those transactions reads a fresh snapshot (READ COMMITTED), so a signal either finds
the task WAITING on it (and resumes it) or is kept and found by the wait: never lost.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Float, Integer, Text, bindparam, text
from sqlalchemy.dialects.postgresql import UUID

from tasklift.store import repository as repo
from tasklift.store.leases import transition
from tasklift.store.repository import Event, RecordedStep
from tasklift.store.steps import record_step
from tasklift.store.tables import tasks
from tasklift.tasks.states import TaskStatus

_TASK_ID = bindparam("task_id", type_=UUID(as_uuid=True))


@dataclass(frozen=True)
class Wait:
    """A wait about to begin: the step its outcome is recorded as, and what ends it."""

    name: str  #: the recorded step name (``wait#approval``, ``sleep#1``)
    position: int
    version: str
    signal: str | None  #: the signal it waits for; None for a sleep
    delay: float | None  #: seconds until its deadline (the timeout, the sleep); None: no deadline


#: The wait's outcome, if a try of this transaction whose reply was lost recorded it already.
_RECORDED = text("SELECT result FROM task_steps WHERE task_id = :task_id AND name = :name").bindparams(
    _TASK_ID, bindparam("name", type_=Text)
)

#: The oldest signal of this name kept for the task (sent while it was not waiting for it), taken.
_TAKE_KEPT = text(
    """
DELETE FROM task_signals WHERE id = (
    SELECT id FROM task_signals WHERE task_id = :task_id AND name = :name ORDER BY id LIMIT 1
) RETURNING payload"""
).bindparams(_TASK_ID, bindparam("name", type_=Text))

_INSERT_WAIT = text(
    """
INSERT INTO task_waits (task_id, name, signal, position, version, attempt, deadline)
VALUES (:task_id, :name, :signal, :position, :version, :attempt,
        CASE WHEN CAST(:delay AS double precision) IS NULL THEN NULL
             ELSE now() + make_interval(secs => :delay) END)
ON CONFLICT (task_id) DO UPDATE
SET name = EXCLUDED.name, signal = EXCLUDED.signal, position = EXCLUDED.position, version = EXCLUDED.version,
    attempt = EXCLUDED.attempt, deadline = EXCLUDED.deadline, created_at = now()"""
).bindparams(
    _TASK_ID,
    bindparam("name", type_=Text),
    bindparam("signal", type_=Text),
    bindparam("position", type_=Integer),
    bindparam("version", type_=Text),
    bindparam("attempt", type_=Integer),
    bindparam("delay", type_=Float),
)


def begin_wait(
    conn: Connection, task_id: uuid.UUID, attempt: int, wait: Wait, lease: float
) -> tuple[str, Any, Event | None]:
    """Begin ``wait`` for the attempt that holds the task (its row locked by the caller's transaction).

    A signal of its name kept for the task ends it at once: it is taken, recorded as the wait's
    step, and ``("signal", payload, step event)`` returned (the task stays RUNNING). Otherwise the
    task goes RUNNING → WAITING, its lease released, the wait row written: ``("waiting", None,
    status event)``. ``("lost", None, None)`` if the attempt no longer holds the task, and
    ``("recorded", outcome, None)`` if the wait's step is recorded already (a retried transaction
    whose first COMMIT went through, its reply lost).
    An attempt that ends by suspending is no failure: it widens the retry budget by one
    (``max_retries``; the budget counts ``attempts - redispatches - handbacks``).
    """
    recorded = conn.execute(_RECORDED, {"task_id": task_id, "name": wait.name}).first()
    if recorded is not None:  # taken by an earlier try of this transaction (its COMMIT went through)
        return "recorded", recorded.result, None
    if wait.signal is not None:
        kept = conn.execute(_TAKE_KEPT, {"task_id": task_id, "name": wait.signal}).first()
        if kept is not None:
            step = RecordedStep(wait.name, wait.position, wait.version, attempt, {"signal": kept.payload})
            done = record_step(conn, task_id, attempt, step, 0.0, lease)
            if done is None:
                return "lost", None, None
            seq, data, _ = done
            return "signal", kept.payload, Event(str(task_id), seq, "step", data)
    values = {
        "status": TaskStatus.WAITING.value,
        "lease_expires_at": None,
        "worker": None,
        "max_retries": tasks.c.max_retries + 1,
    }
    moved = transition(conn, task_id, [tasks.c.status == TaskStatus.RUNNING.value, tasks.c.attempts == attempt], values)
    if moved is None:
        return "lost", None, None
    params = {
        "task_id": task_id,
        "name": wait.name,
        "signal": wait.signal,
        "position": wait.position,
        "version": wait.version,
        "attempt": attempt,
        "delay": wait.delay,
    }
    conn.execute(_INSERT_WAIT, params)
    return "waiting", None, moved[1]


# --- the dispatcher's wake-up: timeouts and sleeps ----------------------------------------------

#: WAITING tasks whose wait's deadline passed, their rows locked (SKIP LOCKED: two dispatchers take
#: disjoint sets); the range scan is on ix_task_waits_deadline.
_DUE = text(
    """
SELECT t.id FROM task_waits AS w JOIN tasks AS t ON t.id = w.task_id
WHERE w.deadline IS NOT NULL AND w.deadline <= now() AND t.status = 'WAITING'
ORDER BY w.deadline
LIMIT :limit
FOR UPDATE OF t SKIP LOCKED"""
).bindparams(bindparam("limit", type_=Integer))

#: WAITING → PENDING for the locked due tasks: the wait's outcome recorded as its step (a timeout,
#: or the sleep's end), the status event, a dispatch intent due now; ONE statement.
WAKE_SQL = f"""
WITH w AS (
    DELETE FROM task_waits WHERE task_id = ANY(CAST(:ids AS uuid[])) AND deadline <= now()
    RETURNING task_id, name, signal, position, version, attempt, created_at
), r AS (
    UPDATE tasks AS t
    SET status = 'PENDING', last_seq = t.last_seq + 1, updated_at = now()
    FROM w WHERE t.id = w.task_id AND t.status = 'WAITING'
    RETURNING {", ".join(f"t.{name}" for name in repo.TASK_COLUMN_NAMES)},
              w.name AS wait_name, w.signal AS wait_signal, w.position AS wait_position,
              w.version AS wait_version, w.attempt AS wait_attempt, w.created_at AS wait_started
), step AS (
    INSERT INTO task_steps (task_id, name, position, version, attempt, result, duration_ms)
    SELECT r.id, r.wait_name, r.wait_position, r.wait_version, r.wait_attempt,
           CASE WHEN r.wait_signal IS NULL THEN '{{"slept": true}}'::jsonb ELSE '{{"timeout": true}}'::jsonb END,
           extract(epoch FROM now() - r.wait_started) * 1000
    FROM r
    ON CONFLICT (task_id, name) DO NOTHING
), wake_event AS (
    INSERT INTO task_events (task_id, seq, kind, data) SELECT r.id, r.last_seq, 'status', {repo.STATUS_DATA_SQL} FROM r
), {repo.REARM_INTENT_CTE}
SELECT {repo.TASK_COLUMNS} FROM r"""
_WAKE = text(WAKE_SQL)


def wake_due(conn: Connection, limit: int = 200) -> list[Event]:
    """Wake the WAITING tasks whose deadline passed (in the caller's transaction); their status events.

    The dispatcher publishes their intents (due now) in the same sweep.
    """
    ids = [str(row.id) for row in conn.execute(_DUE, {"limit": limit})]
    if not ids:
        return []
    rows = conn.execute(_WAKE, {"ids": ids}).mappings().all()
    return [Event(str(row["id"]), row["last_seq"], "status", repo.status_data(dict(row))) for row in rows]
