"""Cron schedules (``/schedules``): their SQL text and the API's statements on asyncpg. The firer's
statements, on SQLAlchemy in the reaper, are :mod:`tasklift.store.schedule_firing` (an API process,
and so a function's layer, never imports SQLAlchemy).

A schedule is a row of ``schedules`` (migration 0014_schedules); each firing a row of
``schedule_runs`` (schedule, nominal fire time, task) whose primary key is (schedule, fire time).
The firer finds the due schedules with ONE statement on ``ix_schedules_due`` (``next_fire_at WHERE
NOT paused``), ``FOR UPDATE SKIP LOCKED`` — two reapers never take the same schedule, and a row the
other one advanced meanwhile is re-checked under its lock — and, in the same transaction, inserts
each firing's task (the submit's own :data:`~tasklift.store.repository.INSERT_TASKS_SQL`), its
Idempotency-Key ``schedule:<id>:<fire time>``, its run row, and advances ``next_fire_at``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg

from tasklift.store import aio

COLUMNS = (
    "id, owner, name, task_type, payload, flow, cron, timezone, interval_seconds, catchup, paused,"
    " next_fire_at, last_fired_at, last_task_id, last_error, fired, created_at, updated_at"
)
_OWNED = "id = :id AND (CAST(:owner AS text) IS NULL OR owner = :owner)"

# --- the API's statements (asyncpg) ----------------------------------------------------------------

#: Make a schedule; nothing when its owner has one of that name already (or the id exists: a retry).
CREATE_SQL = f"""
INSERT INTO schedules (id, owner, name, task_type, payload, flow, cron, timezone, interval_seconds, catchup,
    paused, next_fire_at)
VALUES (:id, :owner, :name, :task_type, CAST(:payload AS jsonb), CAST(:flow AS jsonb), :cron, :timezone,
    :interval_seconds, :catchup, :paused, :next_fire_at)
ON CONFLICT DO NOTHING
RETURNING {COLUMNS}"""
GET_SQL = f"SELECT {COLUMNS} FROM schedules WHERE {_OWNED}"
GET_BY_NAME_SQL = f"SELECT {COLUMNS} FROM schedules WHERE owner = :owner AND name = :name"
#: Newest first, keyset over (created_at, id) like GET /tasks (ix_schedules_owner_created).
LIST_SQL = f"""
SELECT {COLUMNS} FROM schedules
WHERE (CAST(:owner AS text) IS NULL OR owner = :owner)
  AND (CAST(:before_created AS timestamptz) IS NULL OR (created_at, id) < (:before_created, :before_id))
ORDER BY created_at DESC, id DESC LIMIT :limit"""
PAUSE_SQL = f"UPDATE schedules SET paused = true, updated_at = now() WHERE {_OWNED} RETURNING {COLUMNS}"
#: Resume: its next time counts from now (the paused period is not caught up); a running one is left as is.
RESUME_SQL = f"""
UPDATE schedules SET next_fire_at = CASE WHEN paused THEN :next_fire_at ELSE next_fire_at END,
    paused = false, updated_at = now()
WHERE {_OWNED} RETURNING {COLUMNS}"""
DELETE_SQL = f"DELETE FROM schedules WHERE {_OWNED} RETURNING id"
#: Its firings, latest first, with their tasks (a task purged by retention takes its run row along).
RUNS_SQL = """
SELECT r.fire_at, r.task_id, r.created_at, t.status FROM schedule_runs AS r JOIN tasks AS t ON t.id = r.task_id
WHERE r.schedule_id = :id AND (CAST(:before AS timestamptz) IS NULL OR r.fire_at < :before)
ORDER BY r.fire_at DESC LIMIT :limit"""


async def create(store: aio.AsyncStore, values: Mapping[str, Any]) -> asyncpg.Record | None:
    """Insert the schedule ``values`` (every :data:`CREATE_SQL` parameter); None if the name is taken.

    A retry of the statement after a lost connection finds the row of the first try (same id).
    """
    row = await store.fetchrow(CREATE_SQL, values)  # the JSONB codec encodes payload and flow
    if row is None:
        row = await store.fetchrow(GET_SQL, {"id": values["id"], "owner": values["owner"]})
        if row is not None and row["name"] != values["name"]:
            return None
    return row


async def get(store: aio.AsyncStore, schedule_id: uuid.UUID, owner: str | None) -> asyncpg.Record | None:
    """The schedule, if ``owner`` has it (None: an admin, any)."""
    return await store.fetchrow(GET_SQL, {"id": schedule_id, "owner": owner})


async def list_page(
    store: aio.AsyncStore, owner: str | None, limit: int, before: tuple[datetime, uuid.UUID] | None
) -> list[asyncpg.Record]:
    """Up to ``limit`` schedules of ``owner`` (None: all) before the keyset ``before``, newest first."""
    created, sid = before if before is not None else (None, None)
    return await store.fetch(LIST_SQL, {"owner": owner, "limit": limit, "before_created": created, "before_id": sid})


async def pause(store: aio.AsyncStore, schedule_id: uuid.UUID, owner: str | None) -> asyncpg.Record | None:
    return await store.fetchrow(PAUSE_SQL, {"id": schedule_id, "owner": owner})


async def resume(
    store: aio.AsyncStore, schedule_id: uuid.UUID, owner: str | None, next_fire_at: datetime
) -> asyncpg.Record | None:
    return await store.fetchrow(RESUME_SQL, {"id": schedule_id, "owner": owner, "next_fire_at": next_fire_at})


async def delete(store: aio.AsyncStore, schedule_id: uuid.UUID, owner: str | None) -> bool:
    """Delete it (its run rows go with it; its tasks stay); False if there is none."""
    return await store.fetchrow(DELETE_SQL, {"id": schedule_id, "owner": owner}) is not None


async def runs(
    store: aio.AsyncStore, schedule_id: uuid.UUID, limit: int, before: datetime | None
) -> list[asyncpg.Record]:
    return await store.fetch(RUNS_SQL, {"id": schedule_id, "limit": limit, "before": before})
