"""Bulk operations by filter (``POST /bulk``): their SQL text, and the API's statements on asyncpg.

A bulk operation is a row of ``bulk_operations``: who asked, the action (cancel, retry, purge), the
filter, the tasks' owner it is confined to (``scope_owner``; NULL for an admin without an owner
filter), the count the filter matched when it was made (``total``), and its progress: ``done``
(changed), ``skipped`` (matched, but no longer in a state the action changes when its batch came),
``failed`` (could not be changed: a retry of a type no longer registered), and ``cursor``, the last
task id handled. The API makes it (:func:`create`) and reads it (:func:`get`); the reaper works
through it in batches (:mod:`tasklift.tasks.bulk_worker`), keyset over task id, each batch one
transaction that also advances the row, so a crash loses at most the batch that did not commit.

The filter (:func:`filter_where`) is the same text for the dry-run count, the count stored with the
operation and the worker's batches; it selects only tasks created up to the operation's creation
(``created_at <= as_of``), so tasks submitted later are never touched, and only tasks in a state the
action changes (:data:`ACTION_STATUSES`), so the dry-run count is the effect.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg

from tasklift.store import aio

#: The task states each action changes: a filter's ``status`` must be among them.
ACTION_STATUSES: dict[str, tuple[str, ...]] = {
    "cancel": ("PENDING", "RUNNING", "WAITING"),  # as CANCEL_SQL: WAITING ends at once, like PENDING
    "retry": ("FAILED", "CANCELLED"),
    "purge": ("SUCCESS", "FAILED", "CANCELLED", "EXPIRED"),  # every terminal state (tasks/states.py)
}
#: Statuses of an operation (the task vocabulary: it is one too).
OPEN = ("PENDING", "RUNNING")
STATUSES = (*OPEN, "SUCCESS", "CANCELLED", "FAILED")
OP_COLUMNS = (
    "id, owner, scope_owner, action, filter, status, total, done, skipped, failed, cursor, error,"
    " created_at, started_at, updated_at, finished_at"
)

#: The conditions of a filter's fields (:func:`filter_where`); ``status`` is always there.
_CONDITIONS = {
    "status": "status = ANY(CAST(:statuses AS text[]))",
    "scope_owner": "owner = :scope_owner",
    "task_type": "task_type = ANY(CAST(:task_types AS text[]))",
    "task_id": "id = ANY(CAST(:task_ids AS uuid[]))",
    "created_after": "created_at > :created_after",
    "created_before": "created_at < :created_before",
    # The Idempotency-Keys the tasks were submitted with, while their records live (idempotency_ttl).
    "key_prefix": (
        "EXISTS (SELECT FROM idempotency_keys AS k"
        " WHERE k.task_id = tasks.id AND k.owner = tasks.owner AND starts_with(k.key, :key_prefix))"
    ),
}


def filter_where(
    action: str, filt: Mapping[str, Any], scope_owner: str | None, as_of: str = "now()"
) -> tuple[str, dict[str, Any]]:
    """The ``WHERE`` condition on ``tasks`` and its named parameters for a validated filter.

    ``filt`` is the stored form (:func:`tasklift.tasks.bulk.parse_filter`): ``status`` and
    ``task_type`` and ``task_id`` lists, ``created_after`` / ``created_before`` RFC 3339 text, ``key_prefix``.
    ``as_of`` is the SQL of the operation's instant: ``now()`` in the transaction that makes it, or
    ``:as_of`` (its ``created_at``, a parameter the caller adds) in the worker's batches.
    """
    params: dict[str, Any] = {"statuses": list(filt.get("status") or ACTION_STATUSES[action])}
    clauses = [_CONDITIONS["status"]]
    if scope_owner is not None:
        clauses.append(_CONDITIONS["scope_owner"])
        params["scope_owner"] = scope_owner
    if filt.get("task_type"):
        clauses.append(_CONDITIONS["task_type"])
        params["task_types"] = list(filt["task_type"])
    for name in ("created_after", "created_before"):
        if filt.get(name):
            clauses.append(_CONDITIONS[name])
            params[name] = datetime.fromisoformat(filt[name])
    if filt.get("task_id"):
        clauses.append(_CONDITIONS["task_id"])
        params["task_ids"] = list(filt["task_id"])
    if filt.get("key_prefix"):
        clauses.append(_CONDITIONS["key_prefix"])
        params["key_prefix"] = filt["key_prefix"]
    clauses.append(f"created_at <= {as_of}")
    return " AND ".join(clauses), params


def count_sql(where: str) -> str:
    """The dry run: how many tasks the filter selects now."""
    return f"SELECT count(*) FROM tasks WHERE {where}"


def create_sql(where: str) -> str:
    """Make the operation with the count its filter matches, in ONE statement (one instant: ``now()``)."""
    return f"""
WITH matched AS (SELECT count(*) AS n FROM tasks WHERE {where})
INSERT INTO bulk_operations (id, owner, scope_owner, action, filter, total)
SELECT :id, :owner, CAST(:scope_owner AS text), :action, CAST(:filter AS jsonb), matched.n FROM matched
RETURNING {OP_COLUMNS}"""


_OWNED_OP = "id = :id AND (CAST(:owner AS text) IS NULL OR owner = :owner)"
#: One operation, for whoever made it (``:owner`` NULL: an admin, any).
GET_SQL = f"SELECT {OP_COLUMNS} FROM bulk_operations WHERE {_OWNED_OP}"
#: The caller's operations (``:owner`` NULL: an admin, every one's), newest first, keyset-paged by
#: ``(created_at, id)`` below the cursor's; ix_bulk_operations_owner_created serves a caller's.
LIST_SQL = f"""
SELECT {OP_COLUMNS} FROM bulk_operations
WHERE (CAST(:owner AS text) IS NULL OR owner = :owner)
  AND (CAST(:status AS text) IS NULL OR status = :status)
  AND (CAST(:before_at AS timestamptz) IS NULL OR (created_at, id) < (:before_at, CAST(:before_id AS uuid)))
ORDER BY created_at DESC, id DESC LIMIT :limit"""
#: Stop an open operation: the batch being worked on commits, no other starts.
CANCEL_SQL = f"""
UPDATE bulk_operations SET status = 'CANCELLED', finished_at = now(), updated_at = now()
WHERE {_OWNED_OP} AND status IN ('PENDING', 'RUNNING')
RETURNING {OP_COLUMNS}"""

# --- the worker's statements (run by tasklift.tasks.bulk_worker, on SQLAlchemy) ------------------

#: The oldest open operation no other reaper is working on, locked for one batch.
CLAIM_SQL = (
    f"SELECT {OP_COLUMNS} FROM bulk_operations WHERE status IN ('PENDING', 'RUNNING')"
    " ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED"
)


def batch_sql(where: str, after: bool, skip_locked: bool) -> str:
    """The next batch's tasks after ``:after`` (keyset over id), locked until the batch commits.

    Cancel and retry wait for a row another transaction holds (a worker's claim, a single cancel:
    short), so that no selected task is passed over; the lock is then re-checked against the filter
    (a task claimed meanwhile is RUNNING now). A purge skips locked rows, as retention does.
    """
    keyset = " AND id > :after" if after else ""
    lock = "FOR UPDATE SKIP LOCKED" if skip_locked else "FOR UPDATE"
    return f"SELECT id, task_type FROM tasks WHERE {where}{keyset} ORDER BY id LIMIT :batch {lock}"


#: Record a batch: the counts grow, the cursor moves; ``:finished`` ends it (SUCCESS).
ADVANCE_SQL = """
UPDATE bulk_operations
SET status = CASE WHEN CAST(:finished AS boolean) THEN 'SUCCESS' ELSE 'RUNNING' END,
    cursor = coalesce(CAST(:cursor AS uuid), cursor), done = done + :done, skipped = skipped + :skipped,
    failed = failed + :failed, started_at = coalesce(started_at, now()), updated_at = now(),
    finished_at = CASE WHEN CAST(:finished AS boolean) THEN now() END
WHERE id = :id"""
#: An operation that cannot go on (its filter no longer reads, say): FAILED with the reason.
FAIL_SQL = (
    "UPDATE bulk_operations SET status = 'FAILED', error = :error, finished_at = now(), updated_at = now()"
    " WHERE id = :id"
)


# --- the API's statements (asyncpg) ----------------------------------------------------------------


async def count(store: aio.AsyncStore, action: str, filt: Mapping[str, Any], scope_owner: str | None) -> int:
    """The dry run: how many tasks the operation would change now."""
    where, params = filter_where(action, filt, scope_owner)
    row = await store.fetchrow(count_sql(where), params)
    return int(row[0]) if row is not None else 0


async def create(
    store: aio.AsyncStore, owner: str, action: str, filt: Mapping[str, Any], scope_owner: str | None
) -> asyncpg.Record:
    """Make the operation (PENDING, with its ``total``); the reaper starts it at its next round.

    A retry of the statement after a lost connection finds the row of the first try (same id).
    """
    where, params = filter_where(action, filt, scope_owner)
    op_id = uuid.uuid4()
    values = {**params, "id": op_id, "owner": owner, "scope_owner": scope_owner, "action": action, "filter": filt}
    try:
        row = await store.fetchrow(create_sql(where), values)
    except aio.DatabaseError as exc:
        if not isinstance(exc.__cause__, asyncpg.UniqueViolationError):
            raise
        row = await store.fetchrow(GET_SQL, {"id": op_id, "owner": owner})
    assert row is not None
    return row


async def get(store: aio.AsyncStore, op_id: uuid.UUID, owner: str | None) -> asyncpg.Record | None:
    """The operation, if ``owner`` made it (None: any)."""
    return await store.fetchrow(GET_SQL, {"id": op_id, "owner": owner})


async def list_(
    store: aio.AsyncStore,
    owner: str | None,
    status: str | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Up to ``limit`` operations of ``owner`` (None: any) below the ``before`` keyset position."""
    params = {
        "owner": owner,
        "status": status,
        "before_at": before[0] if before else None,
        "before_id": before[1] if before else None,
        "limit": limit,
    }
    return await store.fetch(LIST_SQL, params)


async def cancel(store: aio.AsyncStore, op_id: uuid.UUID, owner: str | None) -> asyncpg.Record | None:
    """Stop the operation if it is open; the changed row, or None (finished already, or not found)."""
    return await store.fetchrow(CANCEL_SQL, {"id": op_id, "owner": owner})
