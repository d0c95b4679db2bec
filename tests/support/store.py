"""Committed task rows for tests that set up a state without the API: through the store's one insert.

:func:`insert_tasks` runs :func:`tasklift.store.aio.insert_many` (the statement every submit runs)
on a loop of its own, from synchronous test code, through a store it closes again.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from tasklift.settings import get_settings
from tasklift.store import aio
from tasklift.store import repository as repo


def new_task(task_type: str, queue: str, **fields: Any) -> repo.NewTask:
    """A :class:`~tasklift.store.repository.NewTask` with test defaults (``fields`` override them)."""
    values: dict[str, Any] = {
        "task_id": uuid.uuid4(),
        "owner": "anonymous",
        "task_type": task_type,
        "queue": queue,
        "input": {},
        "metadata": {},
        "max_retries": 0,
        "trace_id": None,
        "dispatch_grace": 60,
        **fields,
    }
    return repo.NewTask(**values)


def insert_tasks(*tasks: repo.NewTask) -> list[uuid.UUID]:
    """Commit ``tasks`` (PENDING, first event, outbox row; nothing published); their ids."""

    async def insert() -> None:
        store = aio.AsyncStore(get_settings())
        try:
            await store.run(lambda conn: aio.insert_many(conn, list(tasks)))
        finally:
            await store.close()

    asyncio.run(insert())
    return [task.task_id for task in tasks]
