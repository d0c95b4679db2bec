"""Cron schedules: the firer's statements, on SQLAlchemy in the reaper (:mod:`tasklift.tasks.schedule_firer`).

The due schedules with ONE statement on ``ix_schedules_due`` (``next_fire_at WHERE NOT paused``),
``FOR UPDATE SKIP LOCKED``; in the same transaction each firing's task (the submit's own
:data:`~tasklift.store.repository.INSERT_TASKS_SQL`), its Idempotency-Key, its run row, and the
advanced ``next_fire_at``. The API's statements are :mod:`tasklift.store.schedules`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, RowMapping, text

from tasklift import jsoncodec
from tasklift.store import repository as repo
from tasklift.store.schedules import COLUMNS

# --- the firer's statements (SQLAlchemy, in the reaper) --------------------------------------------

#: The due schedules, oldest due first, locked for this round; ``db_now`` is the round's instant.
DUE_SQL = f"""
SELECT {COLUMNS}, now() AS db_now FROM schedules
WHERE NOT paused AND next_fire_at <= now()
ORDER BY next_fire_at LIMIT :limit
FOR UPDATE SKIP LOCKED"""
#: Seconds until the next schedule is due (None: none), for the reaper's sleep (ix_schedules_due).
NEXT_DUE_SQL = (
    "SELECT extract(epoch FROM min(next_fire_at) - now()) FROM schedules WHERE NOT paused AND next_fire_at > now()"
)
#: One firing's run row; nothing if this time was fired already (the primary key).
INSERT_RUN_SQL = """
INSERT INTO schedule_runs (schedule_id, fire_at, task_id) VALUES (:schedule_id, :fire_at, :task_id)
ON CONFLICT DO NOTHING RETURNING fire_at"""
#: After a round: its next time, what it fired (``:task_id`` NULL: nothing), or why it could not.
ADVANCE_SQL = """
UPDATE schedules SET next_fire_at = :next_fire_at,
    last_fired_at = coalesce(CAST(:fired_at AS timestamptz), last_fired_at),
    last_task_id = coalesce(CAST(:task_id AS uuid), last_task_id),
    last_error = CAST(:error AS text), fired = fired + :count, updated_at = now()
WHERE id = :id"""

_DUE, _NEXT_DUE = text(DUE_SQL), text(NEXT_DUE_SQL)
_INSERT_KEY, _COMPLETE_KEY = text(repo.INSERT_KEY_SQL), text(repo.COMPLETE_KEY_SQL)
_INSERT_TASKS, _INSERT_RUN, _ADVANCE = text(repo.INSERT_TASKS_SQL), text(INSERT_RUN_SQL), text(ADVANCE_SQL)


def due(conn: Connection, limit: int) -> Sequence[RowMapping]:
    """The due schedules, locked (:data:`DUE_SQL`)."""
    return conn.execute(_DUE, {"limit": limit}).mappings().all()


def seconds_to_next_due(conn: Connection) -> float | None:
    value = conn.execute(_NEXT_DUE).scalar_one()
    return None if value is None else float(value)


def reserve_key(conn: Connection, owner: str, key: str, request_hash: str, ttl: float) -> bool:
    """Reserve a firing's Idempotency-Key; False if it is there already (this firing happened)."""
    params = {"owner": owner, "key": key, "request_hash": request_hash, "ttl": float(ttl)}
    return conn.execute(_INSERT_KEY, params).first() is not None


def insert_tasks(conn: Connection, tasks: Sequence[repo.NewTask]) -> list[RowMapping]:
    """The firings' tasks, by the submit's statement (:data:`~tasklift.store.repository.INSERT_TASKS_SQL`)."""
    params = repo.NewTask.many_params(tasks)
    params = {
        **params,
        "tasks": jsoncodec.json_text(params["tasks"]),
        "first_event": jsoncodec.json_text(params["first_event"]),
    }
    return list(conn.execute(_INSERT_TASKS, params).mappings().all())


class AlreadyFired(Exception):  # noqa: N818
    """A firing's run row exists although its key was free (the key expired): the round rolls back."""


def record_run(
    conn: Connection, schedule_id: uuid.UUID, fire_at: datetime, task_id: uuid.UUID, owner: str, key: str
) -> None:
    """Bind the firing's key to its task and write its run row; :class:`AlreadyFired` if it existed."""
    conn.execute(_COMPLETE_KEY, {"owner": owner, "key": key, "task_id": task_id})
    run = {"schedule_id": schedule_id, "fire_at": fire_at, "task_id": task_id}
    if conn.execute(_INSERT_RUN, run).first() is None:
        raise AlreadyFired(f"schedule {schedule_id} fired {fire_at.isoformat()} already")


def advance(
    conn: Connection,
    schedule_id: uuid.UUID,
    next_fire_at: datetime,
    *,
    fired_at: datetime | None,
    task_id: uuid.UUID | None,
    count: int,
    error: str | None,
) -> None:
    conn.execute(
        _ADVANCE,
        {
            "id": schedule_id,
            "next_fire_at": next_fire_at,
            "fired_at": fired_at,
            "task_id": task_id,
            "count": count,
            "error": error,
        },
    )
