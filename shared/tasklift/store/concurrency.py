"""Concurrency keys at lease time (issue 21 part 3, docs/flow-control.md).

A task whose type has a ``concurrency_limit`` and that was submitted with a ``concurrency_key``
runs only while fewer than the limit of its (type, key) are RUNNING. The dispatcher admits it under
that count (:data:`tasklift.store.flow.ADMIT_SQL`); the worker's lease re-checks it, so two
workers (or two dispatchers' deliveries) can never both exceed it:

1. the plain lease (:data:`~tasklift.store.leases.TAKE_LEASE_SQL`) leaves limited tasks alone;
2. :func:`take_keyed_lease` then, in ONE transaction, takes the key's advisory transaction lock
   (:data:`LOCK_KEY_SQL`; it waits for another worker taking a task of the same key to commit),
   and, in a new statement (so a new snapshot that sees the other's RUNNING row), the lease with
   the count as a condition (:data:`~tasklift.store.leases.TAKE_KEYED_LEASE_SQL`);
3. a task refused while still PENDING gets its intent re-armed (:data:`REARM_SQL`): it goes back
   to waiting in the outbox, and the dispatcher admits it again once the key has room. Never lost.

A lease that expires (a killed worker) frees its slot when the reaper recovers the task: it is no
longer RUNNING, so neither count sees it.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, text

from tasklift.store import leases
from tasklift.store import repository as repo
from tasklift.store.db import Statement, run_statement
from tasklift.store.repository import Event

#: The key's advisory lock, held to the end of the transaction; no row (no lock) for a task that
#: is not PENDING or not limited. The (type, key) is hashed to the lock's 64-bit id (a collision
#: only serialises two keys' lease takes, it never lets one exceed its limit).
LOCK_KEY_SQL = """
SELECT pg_advisory_xact_lock(hashtextextended(task_type || chr(31) || concurrency_key, 21))::text
FROM tasks
WHERE id = :task_id AND status = 'PENDING' AND concurrency_limit IS NOT NULL AND concurrency_key IS NOT NULL"""

#: A refused delivery's intent back to unpublished, due when the task is (the dispatcher decides
#: when the key has room); only while the task is still PENDING.
REARM_SQL = """
UPDATE task_outbox AS o
SET published_at = NULL, broker_epoch = NULL, available_at = greatest(now(), coalesce(t.scheduled_for, now()))
FROM tasks AS t
WHERE o.task_id = :task_id AND t.id = o.task_id AND t.status = 'PENDING' AND o.published_at IS NOT NULL"""

_LOCK_KEY, _REARM = text(LOCK_KEY_SQL), text(REARM_SQL)
_TAKE_KEYED = Statement(leases.TAKE_KEYED_LEASE_SQL)


def take_keyed_lease(
    conn: Connection, task_id: uuid.UUID, worker: str, lease: float
) -> tuple[tuple[dict[str, Any], Event] | None, bool]:
    """The lease of a task limited by its concurrency key, inside the caller's transaction.

    Returns (the row and its status event, or None) and whether a refused delivery's intent was
    re-armed. A task that is not limited (or not PENDING) is neither taken nor re-armed here.
    """
    if conn.execute(_LOCK_KEY, {"task_id": task_id}).first() is None:
        return None, False
    row = run_statement(conn, _TAKE_KEYED, {"task_id": task_id, "worker": worker, "lease": lease})
    if row is not None:
        return (row, Event(str(task_id), row["last_seq"], "status", repo.status_data(row))), False
    return None, bool(conn.execute(_REARM, {"task_id": task_id}).rowcount)
