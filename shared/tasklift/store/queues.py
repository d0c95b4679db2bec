"""Pausing and resuming a queue, on the API's asyncpg store (``POST /queues/{queue}:pause``).

A paused queue is a row of ``paused_queues``. While it is there, a worker's claim refuses the
queue's tasks (:data:`tasklift.store.leases.TAKE_LEASE_SQL`: the delivery is dropped, the task
stays PENDING with its outbox intent), and the dispatcher and the reconciler leave its intents
alone (:mod:`tasklift.store.outbox`). Resuming deletes the row and re-arms every intent of the
queue in the same transaction, so the dispatcher publishes them all again at once: a message
dropped while paused, or lost with a crashed worker, is sent anew, and a duplicate of one still
in Redis is dropped by the claim.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from tasklift.store import aio
from tasklift.store.aio import positional

PAUSE_SQL = """
INSERT INTO paused_queues (queue, paused_by) VALUES (:queue, :principal)
ON CONFLICT (queue) DO NOTHING"""
#: Resume: the row goes and the queue's intents are due now, unpublished, in ONE statement.
RESUME_SQL = """
WITH resumed AS (
    DELETE FROM paused_queues WHERE queue = :queue RETURNING queue
)
UPDATE task_outbox SET published_at = NULL, broker_epoch = NULL, available_at = now()
WHERE queue = :queue AND EXISTS (SELECT FROM resumed)"""
#: The queue's state: paused or not, and its PENDING tasks.
QUEUE_STATE_SQL = """
SELECT EXISTS (SELECT FROM paused_queues WHERE queue = :queue) AS paused,
       (SELECT count(*) FROM tasks WHERE queue = :queue AND status = 'PENDING') AS pending"""

_PAUSE, _PAUSE_ARGS = positional(PAUSE_SQL)
_RESUME, _RESUME_ARGS = positional(RESUME_SQL)
_STATE, _STATE_ARGS = positional(QUEUE_STATE_SQL)


def _args(names: tuple[str, ...], values: dict[str, Any]) -> list[Any]:
    return [values[name] for name in names]


async def pause(store: aio.AsyncStore, queue: str, principal: str) -> asyncpg.Record:
    """Pause ``queue`` (idempotent); its state after."""

    async def run(conn: asyncpg.Connection) -> asyncpg.Record:
        async with conn.transaction():
            await conn.execute(_PAUSE, *_args(_PAUSE_ARGS, {"queue": queue, "principal": principal}))
            row: asyncpg.Record = await conn.fetchrow(_STATE, *_args(_STATE_ARGS, {"queue": queue}))
            return row

    return await store.run(run)


async def resume(store: aio.AsyncStore, queue: str) -> asyncpg.Record:
    """Resume ``queue`` (idempotent) and re-arm its intents; its state after."""

    async def run(conn: asyncpg.Connection) -> asyncpg.Record:
        async with conn.transaction():
            await conn.execute(_RESUME, *_args(_RESUME_ARGS, {"queue": queue}))
            row: asyncpg.Record = await conn.fetchrow(_STATE, *_args(_STATE_ARGS, {"queue": queue}))
            return row

    return await store.run(run)
