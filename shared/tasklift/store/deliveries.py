"""A task's webhook deliveries on the API's asyncpg store: the log and manual redelivery.

``GET /tasks/{id}/deliveries`` and ``POST /tasks/{id}/deliveries/{delivery_id}:redeliver``
(:mod:`tasklift.http.deliveries`; docs/webhooks.md). Both statements are owner-scoped like every
read of a task (``:owner`` NULL: an admin): another principal's task has no deliveries to show.
Redelivery makes the row due at once with a fresh retry window; its ``webhook-id`` stays the same,
so a receiver that already processed it recognises it (Standard Webhooks: receivers dedupe by id).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from tasklift.store import aio
from tasklift.store.aio import positional

_COLUMNS = (
    "d.id, d.task_id, d.event_type, d.url, d.state, d.attempts, d.next_attempt_at, d.last_attempt_at,"
    " d.last_status, d.last_error, d.delivered_at, d.created_at"
)
_OWNED = "t.id = d.task_id AND (CAST(:owner AS text) IS NULL OR t.owner = :owner)"

LIST_SQL = f"""
SELECT {_COLUMNS} FROM webhook_deliveries AS d JOIN tasks AS t ON {_OWNED}
WHERE d.task_id = :task_id ORDER BY d.created_at, d.id LIMIT :limit"""

REDELIVER_SQL = f"""
UPDATE webhook_deliveries AS d
SET state = 'pending', next_attempt_at = now(), retry_from = now()
FROM tasks AS t
WHERE d.id = :id AND d.task_id = :task_id AND {_OWNED}
RETURNING {_COLUMNS}"""

_LIST, _LIST_ARGS = positional(LIST_SQL)
_REDELIVER, _REDELIVER_ARGS = positional(REDELIVER_SQL)


def _args(names: tuple[str, ...], values: dict[str, Any]) -> list[Any]:
    return [values[name] for name in names]


async def list_deliveries(store: aio.AsyncStore, task_id: Any, owner: str | None, limit: int) -> list[asyncpg.Record]:
    """The deliveries of ``task_id`` (oldest first), if ``owner`` may see it."""
    args = _args(_LIST_ARGS, {"task_id": task_id, "owner": owner, "limit": limit})
    rows: list[asyncpg.Record] = await store.run(lambda conn: conn.fetch(_LIST, *args))
    return rows


async def redeliver(store: aio.AsyncStore, task_id: Any, delivery_id: str, owner: str | None) -> asyncpg.Record | None:
    """Make the delivery due again now; the row after, or None (no such delivery of a visible task)."""
    args = _args(_REDELIVER_ARGS, {"id": delivery_id, "task_id": task_id, "owner": owner})
    row: asyncpg.Record | None = await store.run(lambda conn: conn.fetchrow(_REDELIVER, *args))
    return row
