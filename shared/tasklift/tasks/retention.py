"""Retention: finished tasks older than ``retention_days`` are purged with their events, log lines
and blobs; ``tasklift export`` writes them out first (docs/large-payloads.md).

A purge works in batches, one transaction each: lock a batch of expired rows (``FOR UPDATE SKIP
LOCKED``: several reapers never collide, and a retry request for one of them waits), delete every
blob under each task's prefix, then delete the rows (events, log lines and the outbox row go with
them by ``ON DELETE CASCADE``) and commit. Blobs go first, so no failure can leave a blob that no
row leads to: if a blob delete or the commit fails, the rows stay and the next round deletes again,
which is harmless (deleting a missing blob is not an error).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, RowMapping, delete, func, literal, select, tuple_

from tasklift.blobs import BlobStore, claims
from tasklift.settings import get_settings
from tasklift.store.tables import Task, task_events, tasks
from tasklift.tasks.states import TERMINAL

log = logging.getLogger(__name__)

#: Tasks per purge transaction.
BATCH = 200
#: A purge run stops after this long and goes on at the reaper's next retention round.
BUDGET_SECONDS = 10.0

_FINISHED = [status.value for status in TERMINAL]


def _expired(conn: Connection, days: float, limit: int) -> list[RowMapping]:
    cutoff = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, days * 86400)
    query = (
        select(tasks.c.id)
        .where(tasks.c.status.in_(_FINISHED), tasks.c.completed_at < cutoff)
        .order_by(tasks.c.completed_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(conn.execute(query).mappings())


def delete_task_blobs(task_id: Any, store: BlobStore) -> int:
    """Delete every blob a task stored (inputs, results of every attempt, crashed writers' leftovers)."""
    keys = list(store.keys(claims.task_prefix(task_id)))
    for key in keys:
        store.delete(key)
    return len(keys)


def delete_tasks(conn: Connection, ids: list[Any], store: BlobStore) -> tuple[int, int]:
    """Delete the tasks ``ids`` (locked by the caller's transaction) with their blobs, blobs first;
    returns (rows, blobs) deleted. Retention's purge and a bulk purge (``tasklift.tasks.bulk_worker``)."""
    blobs = sum(delete_task_blobs(task_id, store) for task_id in ids)
    deleted = conn.execute(delete(Task).where(Task.id.in_(ids))).rowcount or 0
    return deleted, blobs


def purge_batch(engine: Engine, days: float, store: BlobStore, limit: int = BATCH) -> int:
    """Purge up to ``limit`` expired tasks in one transaction; returns how many rows were deleted."""
    with engine.begin() as conn:
        ids = [row["id"] for row in _expired(conn, days, limit)]
        if not ids:
            return 0
        deleted, blobs = delete_tasks(conn, ids, store)
    log.info("retention: purged %d tasks and %d blobs finished over %g days ago", deleted, blobs, days)
    return deleted


def purge_expired(
    engine: Engine, store: BlobStore, days: float | None = None, budget_seconds: float = BUDGET_SECONDS
) -> int:
    """Purge expired finished tasks for up to ``budget_seconds``; ``retention_days`` = 0 keeps everything."""
    days = get_settings().retention_days if days is None else days
    if days <= 0:
        return 0
    total, deadline = 0, time.monotonic() + budget_seconds
    while time.monotonic() < deadline:
        purged = purge_batch(engine, days, store)
        total += purged
        if purged < BATCH:
            break
    return total


def export_finished(
    engine: Engine, store: BlobStore, before: datetime, *, events: bool = False, resolve_blobs: bool = True
) -> Iterator[dict[str, Any]]:
    """Finished tasks completed before ``before``, oldest first, as JSON-ready dicts (``tasklift export``).

    With ``resolve_blobs`` a large input or result is read back from blob storage and written inline,
    so the export stays complete after the purge has deleted the blobs.
    """
    after: tuple[datetime, Any] | None = None
    while True:
        with engine.connect() as conn:
            query = select(tasks).where(tasks.c.status.in_(_FINISHED), tasks.c.completed_at < before)
            if after is not None:
                query = query.where(tuple_(tasks.c.completed_at, tasks.c.id) > tuple_(*map(literal, after)))
            rows = list(conn.execute(query.order_by(tasks.c.completed_at, tasks.c.id).limit(BATCH)).mappings())
            for row in rows:
                record = {key: _jsonable(value) for key, value in row.items()}
                if resolve_blobs:
                    record["input"] = claims.check_out(row["input"], store)
                    record["result"] = claims.check_out(row["result"], store)
                if events:
                    found = conn.execute(
                        select(task_events.c.seq, task_events.c.kind, task_events.c.data, task_events.c.created_at)
                        .where(task_events.c.task_id == row["id"])
                        .order_by(task_events.c.seq)
                    ).mappings()
                    record["events"] = [{key: _jsonable(value) for key, value in event.items()} for event in found]
                yield record
        if len(rows) < BATCH:
            return
        after = (rows[-1]["completed_at"], rows[-1]["id"])


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value
