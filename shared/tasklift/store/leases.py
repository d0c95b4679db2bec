"""The worker's and the reaper's statements: reads, the lease writes and the recovery.

Every write of a task's run is fenced by the attempt that holds the lease.

A worker takes a task by a conditional update that records a lease (attempt + deadline,
:func:`take_lease`); its heartbeats, progress, log lines and outcome are refused once another
attempt holds the task. The reaper recovers tasks whose lease expired. ("Lease" here, never
"claim": the claim check is the blob reference of :mod:`tasklift.blobs.claims`.)

The worker's hot statements are written once as SQL and compiled once per process: taking a lease
and the outcome are ONE statement each (the compare-and-set UPDATE, the event INSERT and, for the
lease, the outbox DELETE as data-modifying CTEs, like
:data:`~tasklift.store.repository.INSERT_TASKS_SQL`), so a caller may run them in autocommit: one
round trip, atomic, no BEGIN/COMMIT. A CAS that loses changes nothing: the CTEs that append the
event and delete the outbox row read the UPDATE's RETURNING, which is empty.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Float,
    Integer,
    RowMapping,
    Text,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from tasklift.store import repository as repo
from tasklift.store.db import Statement, interval, run_statement
from tasklift.store.outbox import insert_intent
from tasklift.store.repository import Event
from tasklift.store.tables import idempotency_keys, task_events, tasks
from tasklift.tasks.states import TERMINAL, TaskStatus

# --- reads and the generic state change (worker, reaper) ---------------------------------------


def _append(conn: Connection, task_id: uuid.UUID, seq: int, kind: str, data: dict[str, Any]) -> repo.Event:
    conn.execute(insert(task_events).values(task_id=task_id, seq=seq, kind=kind, data=data))
    return repo.Event(str(task_id), seq, kind, data)


def transition(
    conn: Connection, task_id: uuid.UUID, where: Sequence[Any], values: dict[str, Any]
) -> tuple[RowMapping, repo.Event] | None:
    """Compare-and-set on one task row; on success append the status event in the same transaction."""
    row = (
        conn.execute(
            update(tasks)
            .where(tasks.c.id == task_id, *where)
            .values(last_seq=tasks.c.last_seq + 1, updated_at=func.now(), **values)
            .returning(*tasks.c)
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    return row, _append(conn, task_id, row["last_seq"], "status", repo.status_data(dict(row)))


_ID = bindparam("id", type_=UUID(as_uuid=True))
_GET_TASK = text(repo.GET_TASK_SQL).bindparams(_ID).columns(*tasks.c)
_GET_OWNED_TASK = text(repo.GET_OWNED_TASK_SQL).bindparams(_ID).columns(*tasks.c)


def get_task(conn: Connection, task_id: uuid.UUID, owner: str | None = None) -> RowMapping | None:
    """The task row, or None if it does not exist or ``owner`` may not see it."""
    if owner is None:
        return conn.execute(_GET_TASK, {"id": task_id}).mappings().first()
    return conn.execute(_GET_OWNED_TASK, {"id": task_id, "owner": owner}).mappings().first()


_EVENTS_AFTER = text(repo.EVENTS_AFTER_SQL).bindparams(bindparam("task_id", type_=UUID(as_uuid=True)))


def events_after(conn: Connection, task_id: uuid.UUID, after_seq: int, limit: int = 1000) -> list[repo.Event]:
    """The task's events with ``seq > after_seq``, oldest first (``repository.EVENTS_AFTER_SQL``)."""
    rows = conn.execute(_EVENTS_AFTER, {"task_id": task_id, "after": after_seq, "limit": limit})
    return [repo.Event(str(task_id), seq, kind, data) for seq, kind, data in rows]


def purge_expired_idempotency_keys(conn: Connection) -> int:
    """Delete expired Idempotency-Key records; returns how many."""
    return conn.execute(delete(idempotency_keys).where(idempotency_keys.c.expires_at < func.now())).rowcount or 0


def ping(conn: Connection) -> None:
    """Raise unless the database answers."""
    conn.execute(text("SELECT 1"))


# --- the lease ---------------------------------------------------------------------------------

_STATUS_DATA_SQL = repo.STATUS_DATA_SQL  #: the status event SQL builds from the updated row ``r``
_TASK_ID = bindparam("task_id", type_=UUID(as_uuid=True))
_ATTEMPT = bindparam("attempt", type_=Integer)
_LEASE = bindparam("lease", type_=Float)

#: Taking the lease: one statement (see above), a prepared statement on the worker's connection.
#: A task limited by a concurrency key is not taken here (:mod:`tasklift.store.concurrency` takes
#: it under its key's lock, with :data:`TAKE_KEYED_LEASE_SQL`).
_TAKE_LEASE_TEMPLATE = """
WITH r AS (
    UPDATE tasks
    SET status = 'RUNNING', attempts = attempts + 1, worker = :worker,
        lease_expires_at = now() + make_interval(secs => :lease),
        started_at = coalesce(started_at, now()), error = NULL,
        last_seq = last_seq + 1, updated_at = now()
    WHERE id = :task_id AND status = 'PENDING' AND cancel_requested IS FALSE
        AND NOT EXISTS (SELECT FROM paused_queues AS p WHERE p.queue = tasks.queue)  -- docs/queues.md
        AND (scheduled_for IS NULL OR scheduled_for <= now())  -- never early (docs/flow-control.md)
        AND (expires_at IS NULL OR started_at IS NOT NULL OR expires_at > now())  -- nor expired
        AND {limit}
    RETURNING {columns}
), lease_event AS (
    INSERT INTO task_events (task_id, seq, kind, data)
    SELECT r.id, r.last_seq, 'status', {status_data} FROM r
), dispatch_done AS (
    DELETE FROM task_outbox WHERE task_id = :task_id AND EXISTS (SELECT FROM r)
)
SELECT {columns} FROM r"""
_UNLIMITED = "(concurrency_limit IS NULL OR concurrency_key IS NULL)"
#: Fewer than the limit of the task's (type, key) RUNNING (ix_tasks_concurrency_running); only sound
#: under the key's advisory lock, taken by an earlier statement of the same transaction.
_UNDER_LIMIT = """(SELECT count(*) FROM tasks AS b WHERE b.status = 'RUNNING'
            AND b.task_type = tasks.task_type AND b.concurrency_key = tasks.concurrency_key) < concurrency_limit"""
TAKE_LEASE_SQL = _TAKE_LEASE_TEMPLATE.format(limit=_UNLIMITED, columns=repo.TASK_COLUMNS, status_data=_STATUS_DATA_SQL)
TAKE_KEYED_LEASE_SQL = _TAKE_LEASE_TEMPLATE.format(
    limit=_UNDER_LIMIT, columns=repo.TASK_COLUMNS, status_data=_STATUS_DATA_SQL
)
_TAKE_LEASE = Statement(TAKE_LEASE_SQL)


def take_lease(conn: Connection, task_id: uuid.UUID, worker: str, lease: float) -> tuple[dict[str, Any], Event] | None:
    """PENDING → RUNNING with a new attempt and lease; None if another delivery got there first.

    One statement: the status event is appended and the outbox row deleted only if the CAS won.
    On the worker's autocommit connection it is its own transaction, committed when this returns.
    """
    row = run_statement(conn, _TAKE_LEASE, {"task_id": task_id, "worker": worker, "lease": lease})
    if row is None:
        return None
    return row, Event(str(task_id), row["last_seq"], "status", repo.status_data(row))


def _fenced(attempt: int) -> list[Any]:
    return [tasks.c.status == TaskStatus.RUNNING.value, tasks.c.attempts == attempt]


_FENCE_SQL = "id = :task_id AND status = 'RUNNING' AND attempts = :attempt"

#: The first step of every event a running attempt writes (a step, an output batch): it takes the
#: next ``seq`` and renews the lease, fenced by the attempt, so the statement's INSERTs (which read
#: ``r``) write nothing once this attempt no longer holds the task. Bind ``task_id``, ``attempt``
#: and ``lease``; the statement ends with ``SELECT last_seq, cancel_requested FROM r``.
FENCED_EVENT_CTE = f"""
WITH r AS (
    UPDATE tasks
    SET last_seq = last_seq + 1, updated_at = now(), lease_expires_at = now() + make_interval(secs => :lease)
    WHERE {_FENCE_SQL}
    RETURNING id, last_seq, cancel_requested
)"""

_HEARTBEAT = (
    text(
        "UPDATE tasks SET lease_expires_at = now() + make_interval(secs => :lease)"
        f" WHERE {_FENCE_SQL} RETURNING cancel_requested"
    )
    .bindparams(_TASK_ID, _ATTEMPT, _LEASE)
    .columns(tasks.c.cancel_requested)
)


def heartbeat(conn: Connection, task_id: uuid.UUID, attempt: int, lease: float) -> bool | None:
    """Extend the lease; returns the cancel flag, or None if this attempt no longer holds the task."""
    return conn.execute(_HEARTBEAT, {"task_id": task_id, "attempt": attempt, "lease": lease}).scalar()


_PROGRESS = (
    text(
        f"""
WITH r AS (
    UPDATE tasks
    SET progress = CAST(:progress AS jsonb), last_seq = last_seq + 1, updated_at = now(),
        lease_expires_at = now() + make_interval(secs => :lease)
    WHERE {_FENCE_SQL}
    RETURNING id, last_seq, cancel_requested
), progress_event AS (
    INSERT INTO task_events (task_id, seq, kind, data)
    SELECT r.id, r.last_seq, 'progress', jsonb_build_object('status', 'RUNNING', 'progress', CAST(:progress AS jsonb))
    FROM r
)
SELECT last_seq, cancel_requested FROM r"""
    )
    .bindparams(_TASK_ID, _ATTEMPT, _LEASE, bindparam("progress", type_=JSONB))
    .columns(tasks.c.last_seq, tasks.c.cancel_requested)
)


def record_progress(
    conn: Connection, task_id: uuid.UUID, attempt: int, progress: dict[str, Any], lease: float
) -> tuple[Event, bool] | None:
    """Store progress (also a heartbeat) and append a ``progress`` event; None if fenced off."""
    row = conn.execute(
        _PROGRESS, {"task_id": task_id, "attempt": attempt, "lease": lease, "progress": progress}
    ).first()
    if row is None:
        return None
    data = {"status": TaskStatus.RUNNING.value, "progress": progress}
    return Event(str(task_id), row.last_seq, "progress", data), row.cancel_requested


def _log_statement(where: str, *params: Any) -> Any:
    return (
        text(
            f"""
WITH r AS (
    UPDATE tasks SET last_seq = last_seq + 1 WHERE {where} RETURNING id, last_seq, status
), log_event AS (
    INSERT INTO task_events (task_id, seq, kind, data)
    SELECT r.id, r.last_seq, 'log',
           jsonb_build_object('status', r.status, 'level', CAST(:level AS text), 'message', CAST(:message AS text))
    FROM r
)
SELECT last_seq, status FROM r"""
        )
        .bindparams(_TASK_ID, *params, bindparam("level", type_=Text), bindparam("message", type_=Text))
        .columns(tasks.c.last_seq, tasks.c.status)
    )


_LOG_FENCED = _log_statement(_FENCE_SQL, _ATTEMPT)
_LOG_ANY = _log_statement("id = :task_id")


def append_log(conn: Connection, task_id: uuid.UUID, attempt: int | None, level: str, message: str) -> Event | None:
    """Append a log line; fenced by ``attempt`` when a worker writes it."""
    params: dict[str, Any] = {"task_id": task_id, "level": level, "message": message}
    if attempt is None:
        row = conn.execute(_LOG_ANY, params).first()
    else:
        row = conn.execute(_LOG_FENCED, {**params, "attempt": attempt}).first()
    if row is None:
        return None
    data = {"status": row.status, "level": level, "message": message}
    return Event(str(task_id), row.last_seq, "log", data)


_FINISH_COLUMNS = (
    tasks.c.id, tasks.c.status, tasks.c.progress, tasks.c.attempts, tasks.c.cancel_requested,
    tasks.c.result, tasks.c.error, tasks.c.task_type, tasks.c.queue, tasks.c.last_seq,
)  # fmt: skip
_FINISH_NAMES = ", ".join(column.name for column in _FINISH_COLUMNS)
#: The outcome: one statement (see above), a prepared statement like the lease.
FINISH_SQL = f"""
WITH r AS (
    UPDATE tasks
    SET status = :status, result = CAST(:result AS jsonb), error = CAST(:error AS jsonb),
        progress = CASE WHEN :set_progress THEN CAST(:progress AS jsonb) ELSE progress END,
        completed_at = now(), lease_expires_at = NULL, last_seq = last_seq + 1, updated_at = now()
    WHERE {_FENCE_SQL}
    RETURNING {_FINISH_NAMES}
), finish_event AS (
    INSERT INTO task_events (task_id, seq, kind, data)
    SELECT r.id, r.last_seq, 'status',
           {_STATUS_DATA_SQL}
           || CASE WHEN r.status = 'SUCCESS' THEN jsonb_build_object('result', r.result) ELSE '{{}}'::jsonb END
           || CAST(:extra AS jsonb)
    FROM r
)
SELECT {_FINISH_NAMES} FROM r"""
_FINISH = Statement(FINISH_SQL, jsonb=frozenset({"result", "error", "progress", "extra"}))


def finish(
    conn: Connection,
    task_id: uuid.UUID,
    attempt: int,
    status: TaskStatus,
    *,
    result: Any = None,
    error: dict[str, Any] | None = None,
    progress: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], Event] | None:
    """RUNNING → SUCCESS | FAILED | CANCELLED for the attempt holding the lease.

    One statement; the returned row has the columns :func:`status_data` needs plus ``task_type``,
    ``queue`` and ``last_seq``. On the worker's autocommit connection it is committed, durably,
    when this returns; the reaper runs it inside its own transaction.
    """
    row = run_statement(conn, _FINISH, _finish_params(task_id, attempt, status, result, error, progress))
    if row is None:
        return None
    return row, Event(str(task_id), row["last_seq"], "status", repo.status_data(row))


def _finish_params(
    task_id: uuid.UUID,
    attempt: int,
    status: TaskStatus,
    result: Any,
    error: dict[str, Any] | None,
    progress: dict[str, Any] | None,
) -> dict[str, Any]:
    assert status in TERMINAL
    # What SQL does not decide: an error is shown when truthy. (A large result's reference is the
    # result the event holds, as status_data() has it.)
    extra: dict[str, Any] = {"error": error} if status == TaskStatus.FAILED and error else {}
    return {
        "task_id": task_id,
        "attempt": attempt,
        "status": status.value,
        "result": result,
        "error": error,
        "set_progress": progress is not None,
        "progress": progress,
        "extra": extra,
    }


def requeue(
    conn: Connection, task_id: uuid.UUID, attempt: int, *, error: dict[str, Any], delay: float
) -> tuple[RowMapping, Event] | None:
    """RUNNING → PENDING for a retry after ``delay`` seconds; the dispatcher publishes it then."""
    done = transition(
        conn,
        task_id,
        _fenced(attempt),
        {"status": TaskStatus.PENDING.value, "error": error, "lease_expires_at": None, "worker": None},
    )
    if done:
        insert_intent(conn, done[0]["id"], done[0]["queue"], done[1].seq, delay)
    return done


def hand_back(conn: Connection, task_id: uuid.UUID, attempt: int, *, window: float) -> tuple[RowMapping, Event] | None:
    """RUNNING → PENDING for an attempt still running when its worker's soft shutdown ended.

    Fenced like every worker write (the attempt must still hold the task), so a hand-back never
    overrides a newer owner. Not a failure and not a lost lease: ``handbacks`` counts it (the retry
    budget counts ``attempts - redispatches - handbacks``), and the intent is due at once.
    """
    error = {
        "type": "HandedBack",
        "message": f"the worker shut down; attempt {attempt} ran past its {window:g} s soft shutdown"
        " and was re-queued (not a failure)",
    }
    return _requeue_now(conn, task_id, attempt, {"handbacks": tasks.c.handbacks + 1, "error": error})


def _requeue_now(
    conn: Connection, task_id: uuid.UUID, attempt: int, values: dict[str, Any]
) -> tuple[RowMapping, Event] | None:
    """RUNNING ``attempt`` → PENDING with ``values``, lease and worker cleared, its intent due at once."""
    changes = {"status": TaskStatus.PENDING.value, "lease_expires_at": None, "worker": None, **values}
    done = transition(conn, task_id, _fenced(attempt), changes)
    if done:
        insert_intent(conn, done[0]["id"], done[0]["queue"], done[1].seq, 0)
    return done


def failures(row: Mapping[str, Any]) -> int:
    """Attempts that ended in an error: neither a re-dispatch (lost lease) nor a hand-back."""
    return int(row["attempts"] - row["redispatches"] - row["handbacks"])


def lock_for_attempt(conn: Connection, task_id: uuid.UUID, attempt: int) -> bool:
    """Lock the task row if ``attempt`` still holds its lease (fencing for task-side writes)."""
    found = conn.execute(select(tasks.c.id).where(tasks.c.id == task_id, *_fenced(attempt)).with_for_update()).first()
    return found is not None


# --- reaper -------------------------------------------------------------------------------------


def expired_leases(conn: Connection, limit: int = 200) -> list[RowMapping]:
    """RUNNING tasks whose lease ran out (the worker died or hangs), locked for this reaper."""
    return list(
        conn.execute(
            select(tasks.c.id, tasks.c.attempts, tasks.c.redispatches, tasks.c.queue, tasks.c.cancel_requested)
            .where(tasks.c.status == TaskStatus.RUNNING.value, tasks.c.lease_expires_at < func.now())
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).mappings()
    )


def recover_expired(
    conn: Connection, task_id: uuid.UUID, attempt: int, *, max_redispatches: int
) -> tuple[RowMapping | dict[str, Any], Event] | None:
    """Hand an expired task back to the queue, or fail it once its re-dispatch budget is spent."""
    row = get_task(conn, task_id)
    if row is None or row["status"] != TaskStatus.RUNNING or row["attempts"] != attempt:
        return None
    if row["cancel_requested"]:
        return finish(conn, task_id, attempt, TaskStatus.CANCELLED)
    if row["redispatches"] >= max_redispatches:
        error = {
            "type": "LeaseExpired",
            "message": f"the worker stopped heartbeating {row['redispatches'] + 1} times; giving up",
        }
        return finish(conn, task_id, attempt, TaskStatus.FAILED, error=error)
    error = {"type": "LeaseExpired", "message": "the worker stopped heartbeating; re-dispatched"}
    return _requeue_now(conn, task_id, attempt, {"redispatches": tasks.c.redispatches + 1, "error": error})


def overdue_cancels(conn: Connection, grace: float, limit: int = 200) -> list[RowMapping]:
    """RUNNING tasks whose cancel was requested more than ``grace`` seconds ago."""
    return list(
        conn.execute(
            select(tasks.c.id, tasks.c.attempts)
            .where(
                tasks.c.status == TaskStatus.RUNNING.value,
                tasks.c.cancel_requested.is_(True),
                tasks.c.cancel_requested_at < func.now() - interval(grace),
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).mappings()
    )
