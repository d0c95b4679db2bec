"""Committed task rows for tests that set up a state without the API: through the store's own statements.

:func:`insert_tasks` runs :func:`tasklift.store.aio.insert_many` (the statement every submit runs)
and :func:`cancel` the API's cancel, each on a loop of its own, from synchronous test code, through
a store it closes again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

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


T = TypeVar("T")


def _on_a_store(operation: Callable[[aio.AsyncStore], Awaitable[T]]) -> T:
    async def run() -> T:
        store = aio.AsyncStore(get_settings())
        try:
            return await operation(store)
        finally:
            await store.close()

    return asyncio.run(run())


def insert_tasks(*tasks: repo.NewTask) -> list[uuid.UUID]:
    """Commit ``tasks`` (PENDING, first event, outbox row; nothing published); their ids."""
    _on_a_store(lambda store: store.run(lambda conn: aio.insert_many(conn, list(tasks))))
    return [task.task_id for task in tasks]


def cancel(task_id: uuid.UUID) -> tuple[Any, repo.Event] | None:
    """The API's cancel of ``task_id`` (:data:`~tasklift.store.repository.CANCEL_SQL`), committed."""
    return _on_a_store(lambda store: store.cancel(task_id, None))
