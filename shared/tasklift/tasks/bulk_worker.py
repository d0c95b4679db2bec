"""The reaper's bulk job: work through open bulk operations (``POST /bulk``) in batches.

Each batch is ONE transaction: lock the oldest open operation no other reaper holds (``SKIP
LOCKED``: several reapers share the work, never the same operation at once), lock its next
:data:`BATCH` matching tasks after its cursor (keyset over task id), change them with the same
statement text a single request uses (:data:`~tasklift.store.repository.BULK_CANCEL_SQL` is
``CANCEL_SQL``'s, :data:`~tasklift.store.repository.BULK_REOPEN_SQL` is ``REOPEN_SQL``'s; a purge
is retention's :func:`~tasklift.tasks.retention.delete_tasks`), advance the operation's cursor and
counts, commit, then announce the tasks' events. A crash loses only the batch that did not commit;
the next round goes on from the cursor. A RUNNING task gets the durable cancel flag, as from
``DELETE /tasks/{id}``: its worker stops at its next check, the reaper's cancel enforcer ends it
after ``cancel_grace_seconds``. A retried task's dispatch intent is due at once: the dispatcher
publishes it at its next round. An operation cancelled (``DELETE /bulk/{id}``) is not claimed again.

The operation is not a task: it takes no worker slot and does not count against the caller's limit
of unfinished tasks, and its own changes (cancel, purge) can never select it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection, Engine, RowMapping, text

from tasklift.blobs import BlobStore
from tasklift.store import bulk
from tasklift.store import repository as repo
from tasklift.tasks import retention
from tasklift.tasks.registry import get_task_type

log = logging.getLogger(__name__)

#: Tasks per batch (one transaction; their rows are locked until it commits).
BATCH = 500
#: One reaper round works this long at most, so its other jobs (dispatch, leases) keep their pace.
BUDGET_SECONDS = 2.0

Announce = Callable[[list[repo.Event]], None]


def _event(row: Mapping[str, Any]) -> repo.Event:
    return repo.Event(str(row["id"]), row["last_seq"], "status", repo.status_data(row))


def _apply(conn: Connection, op: RowMapping, picked: list[Any], blobs: BlobStore) -> tuple[int, int, list[Any]]:
    """Apply the operation's action to the locked tasks ``picked``; (done, failed, changed rows)."""
    ids = [row["id"] for row in picked]
    if op["action"] == "cancel":
        rows = list(conn.execute(text(repo.BULK_CANCEL_SQL), {"ids": ids}).mappings())
        return len(rows), 0, rows
    if op["action"] == "retry":
        budget = {row["id"]: ttype.retries for row in picked if (ttype := get_task_type(row["task_type"]))}
        failed = len(ids) - len(budget)
        if not budget:
            return 0, failed, []
        params = {"ids": list(budget), "retries": list(budget.values())}
        rows = list(conn.execute(text(repo.BULK_REOPEN_SQL), params).mappings())
        return len(rows), failed, rows
    deleted, _ = retention.delete_tasks(conn, ids, blobs)
    return deleted, 0, []


def step(engine: Engine, blobs: BlobStore, announce: Announce) -> int | None:
    """One batch of the oldest open operation; the tasks it looked at, or None when none is open."""
    with engine.begin() as conn:
        op = conn.execute(text(bulk.CLAIM_SQL)).mappings().first()
        if op is None:
            return None
        try:
            where, params = bulk.filter_where(op["action"], op["filter"], op["scope_owner"], as_of=":as_of")
        except (KeyError, TypeError, ValueError) as exc:  # a stored filter this version cannot read
            conn.execute(text(bulk.FAIL_SQL), {"id": op["id"], "error": f"the filter cannot be read: {exc}"})
            return 0
        params.update(as_of=op["created_at"], batch=BATCH, after=op["cursor"])
        sql = bulk.batch_sql(where, after=op["cursor"] is not None, skip_locked=op["action"] == "purge")
        picked = list(conn.execute(text(sql), params).mappings())
        done, failed, rows = _apply(conn, op, picked, blobs) if picked else (0, 0, [])
        conn.execute(
            text(bulk.ADVANCE_SQL),
            {
                "id": op["id"],
                "finished": not picked,
                "cursor": picked[-1]["id"] if picked else None,
                "done": done,
                "skipped": len(picked) - done - failed,
                "failed": failed,
            },
        )
    announce([_event(row) for row in rows])
    if not picked:
        log.info("bulk %s %s finished", op["action"], op["id"])
    return len(picked)


def work(engine: Engine, blobs: BlobStore, announce: Announce, budget_seconds: float = BUDGET_SECONDS) -> int:
    """Batches of open operations for up to ``budget_seconds``; the tasks looked at."""
    total, deadline = 0, time.monotonic() + budget_seconds
    while time.monotonic() < deadline:
        handled = step(engine, blobs, announce)
        if handled is None:
            break
        total += handled
    return total
