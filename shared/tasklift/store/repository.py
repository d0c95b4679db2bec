"""Typed queries over the tables. Every state change is a compare-and-set that appends its event.

All functions take an open :class:`~sqlalchemy.Connection` inside a transaction; callers decide
the transaction boundaries (``with engine.begin() as conn``). Time comes from the database's
``now()`` so that leases do not depend on the clocks of API and worker machines agreeing.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Float,
    Integer,
    RowMapping,
    Text,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert

from tasklift.blobs import claims
from tasklift.store.db import Prepared, run_prepared
from tasklift.store.tables import idempotency_keys, outbox, task_events, tasks
from tasklift.tasks.states import TERMINAL, TaskStatus


@dataclass(frozen=True)
class Event:
    """One appended event, as it is published and streamed."""

    task_id: str
    seq: int
    kind: str  # status | progress | log
    data: dict[str, Any]
    #: The encoded SSE bytes, filled on first use: the hub hands ONE Event object to every stream
    #: watching the task, so a thousand streams share one encoding.
    encoded: bytes | None = field(default=None, compare=False, repr=False)

    def payload(self) -> dict[str, Any]:
        """The SSE ``data`` object: every one carries ``task_id`` and ``status``."""
        return {"task_id": self.task_id, **self.data}


def _seconds(value: float) -> Any:
    return func.make_interval(0, 0, 0, 0, 0, 0, value)


def status_data(row: RowMapping | Mapping[str, Any]) -> dict[str, Any]:
    """The data of a ``status`` event for the task state in ``row``."""
    data: dict[str, Any] = {
        "status": row["status"],
        "progress": row["progress"],
        "attempts": row["attempts"],
        "cancel_requested": row["cancel_requested"],
    }
    if row["status"] == TaskStatus.SUCCESS:
        data["result"] = row["result"]
        if claims.is_ref(row["result"]):  # a large result stays in blob storage: events carry its URL, not the data
            data.update(result=None, result_url=claims.result_url(row["id"]))
    elif row["status"] in (TaskStatus.FAILED, TaskStatus.PENDING) and row["error"]:
        data["error"] = row["error"]
    return data


def _append(conn: Connection, task_id: uuid.UUID, seq: int, kind: str, data: dict[str, Any]) -> Event:
    conn.execute(insert(task_events).values(task_id=task_id, seq=seq, kind=kind, data=data))
    return Event(str(task_id), seq, kind, data)


def _transition(
    conn: Connection, task_id: uuid.UUID, where: Sequence[Any], values: dict[str, Any]
) -> tuple[RowMapping, Event] | None:
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
    return row, _append(conn, task_id, row["last_seq"], "status", status_data(row))


# --- submit and dispatch ------------------------------------------------------------------------


_TASK_COLUMNS = ", ".join(c.name for c in tasks.c)

#: Submit in ONE statement, one round trip: the tasks, their first events and their dispatch
#: intents (outbox rows). The event and outbox rows are data-modifying CTEs; PostgreSQL runs each
#: exactly once and checks their foreign keys at the end of the statement. The API submits the
#: requests that arrive together in one such statement (:mod:`tasklift.store.aio`); a submit with
#: an Idempotency-Key runs it for its one task inside the key's transaction. The tasks come as ONE
#: JSON array of records (cheaper for the client to encode than nine parallel arrays).
INSERT_TASKS_SQL = f"""
WITH new AS (
    SELECT * FROM jsonb_to_recordset(CAST(:tasks AS jsonb)) AS t(
        id uuid, owner text, task_type text, queue text, input jsonb, metadata jsonb, max_retries integer,
        trace_id text, traceparent text
    )
), first_event AS (
    INSERT INTO task_events (task_id, seq, kind, data) SELECT id, 1, 'status', CAST(:first_event AS jsonb) FROM new
), dispatch_intent AS (
    INSERT INTO task_outbox (task_id, queue, available_at)
    SELECT id, queue, now() + make_interval(secs => :dispatch_grace) FROM new
)
INSERT INTO tasks (id, owner, task_type, queue, status, input, metadata, max_retries, trace_id, traceparent, last_seq)
SELECT id, owner, task_type, queue, 'PENDING', input, metadata, max_retries, trace_id, traceparent, 1 FROM new
RETURNING {_TASK_COLUMNS}
"""
#: One task by id (:data:`GET_OWNED_TASK_SQL`: and owner).
GET_TASK_SQL = f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = :id"
GET_OWNED_TASK_SQL = f"{GET_TASK_SQL} AND owner = :owner"
#: Many tasks by id (the API's gathered reads, :mod:`tasklift.store.aio`).
GET_TASKS_SQL = f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = ANY(CAST(:ids AS uuid[]))"

_ID = bindparam("id", type_=UUID(as_uuid=True))
_GET_TASK = text(GET_TASK_SQL).bindparams(_ID).columns(*tasks.c)
_GET_OWNED_TASK = text(GET_OWNED_TASK_SQL).bindparams(_ID).columns(*tasks.c)


def positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """``sql`` with ``:name`` parameters as asyncpg's ``$n``, and the names in ``$n`` order."""
    names: list[str] = []

    def number(found: re.Match[str]) -> str:
        if found.group(1) not in names:
            names.append(found.group(1))
        return f"${names.index(found.group(1)) + 1}"

    return re.sub(r"(?<![:\w]):(\w+)", number, sql), tuple(names)


def first_event_data() -> dict[str, Any]:
    """The data of a new task's first event (``seq`` 1)."""
    return {"status": TaskStatus.PENDING.value, "progress": None, "attempts": 0, "cancel_requested": False}


@dataclass(frozen=True)
class NewTask:
    """A task about to be inserted by :data:`INSERT_TASKS_SQL`."""

    task_id: uuid.UUID
    owner: str
    task_type: str
    queue: str
    input: dict[str, Any]
    metadata: dict[str, Any]
    max_retries: int
    trace_id: str | None
    dispatch_grace: float  #: seconds before the outbox dispatcher may publish it
    traceparent: str | None = None

    @staticmethod
    def many_params(tasks: Sequence[NewTask]) -> dict[str, Any]:
        """The named parameters of :data:`INSERT_TASKS_SQL` for ``tasks`` (one grace period for all)."""
        return {
            "tasks": [
                {
                    "id": t.task_id,
                    "owner": t.owner,
                    "task_type": t.task_type,
                    "queue": t.queue,
                    "input": t.input,
                    "metadata": t.metadata,
                    "max_retries": t.max_retries,
                    "trace_id": t.trace_id,
                    "traceparent": t.traceparent,
                }
                for t in tasks
            ],
            "first_event": first_event_data(),
            "dispatch_grace": float(max(t.dispatch_grace for t in tasks)),
        }


#: Record that the messages of the intents ``(:ids[i], :seqs[i])`` reached the broker (identified by
#: its run id, ``:epoch``). Only the intent that was sent is marked: an intent re-armed since (a
#: retry that failed before the mark arrived) keeps ``published_at`` NULL and is dispatched.
#: Shared by the sync path below and the API's asyncpg path (:func:`tasklift.store.aio.mark_published`).
MARK_PUBLISHED_SQL = """
UPDATE task_outbox AS o SET published_at = now(), broker_epoch = :epoch
FROM unnest(CAST(:ids AS uuid[]), CAST(:seqs AS bigint[])) AS sent(task_id, intent_seq)
WHERE o.task_id = sent.task_id AND o.intent_seq = sent.intent_seq
"""
_MARK_PUBLISHED = text(MARK_PUBLISHED_SQL)


def mark_published(conn: Connection, sent: Sequence[tuple[uuid.UUID, int]], broker_epoch: str | None) -> None:
    """Record that the messages of the intents ``sent`` (task id, intent seq) reached the broker."""
    conn.execute(
        _MARK_PUBLISHED,
        {"ids": [str(task_id) for task_id, _ in sent], "seqs": [seq for _, seq in sent], "epoch": broker_epoch},
    )


def take_due_outbox(conn: Connection, limit: int = 500) -> list[RowMapping]:
    """Lock unpublished outbox rows whose time has come (SKIP LOCKED: dispatchers never collide)."""
    return list(
        conn.execute(
            select(outbox.c.task_id, outbox.c.intent_seq, outbox.c.queue, tasks.c.task_type, tasks.c.traceparent)
            .join(tasks, tasks.c.id == outbox.c.task_id)
            .where(outbox.c.published_at.is_(None), outbox.c.available_at <= func.now())
            .order_by(outbox.c.available_at)
            .limit(limit)
            .with_for_update(of=outbox, skip_locked=True)
        ).mappings()
    )


def sent_unclaimed(conn: Connection, epoch: str, older_than: float, limit: int = 10_000) -> list[RowMapping]:
    """Intents marked sent that no worker has claimed yet (the claim deletes the row), and that were
    sent to another Redis run (``epoch``) or more than ``older_than`` seconds ago: their messages
    should still be in Redis; :mod:`tasklift.queue.reconcile` looks."""
    return list(
        conn.execute(
            select(outbox.c.task_id, outbox.c.intent_seq, outbox.c.queue, outbox.c.published_at)
            .where(
                outbox.c.published_at.is_not(None),
                or_(
                    outbox.c.broker_epoch.is_distinct_from(epoch),
                    outbox.c.published_at < func.now() - _seconds(older_than),
                ),
            )
            .order_by(outbox.c.published_at)
            .limit(limit)
        ).mappings()
    )


#: The intents of :func:`sent_unclaimed` as (task id, intent seq, published_at): matched exactly, so
#: an intent that was claimed, re-armed or re-sent since it was read is left as it is.
_SENT_ROWS = """
FROM unnest(CAST(:ids AS uuid[]), CAST(:seqs AS bigint[]), CAST(:sent_at AS timestamptz[]))
    AS seen(task_id, intent_seq, published_at)
WHERE o.task_id = seen.task_id AND o.intent_seq = seen.intent_seq AND o.published_at = seen.published_at
"""
_CONFIRM_SENT = text(f"UPDATE task_outbox AS o SET published_at = now(), broker_epoch = :epoch {_SENT_ROWS}")
_REARM_SENT = text(
    f"UPDATE task_outbox AS o SET published_at = NULL, broker_epoch = NULL, available_at = now() {_SENT_ROWS}"
)


def _sent_params(rows: Sequence[RowMapping]) -> dict[str, Any]:
    return {
        "ids": [str(r["task_id"]) for r in rows],
        "seqs": [r["intent_seq"] for r in rows],
        "sent_at": [r["published_at"] for r in rows],
    }


def confirm_sent(conn: Connection, rows: Sequence[RowMapping], epoch: str) -> int:
    """These intents' messages are still in Redis (run ``epoch``): check them again later."""
    return conn.execute(_CONFIRM_SENT, {**_sent_params(rows), "epoch": epoch}).rowcount or 0


def rearm_sent(conn: Connection, rows: Sequence[RowMapping]) -> int:
    """These intents' messages are gone from Redis: due for the dispatcher now."""
    return conn.execute(_REARM_SENT, _sent_params(rows)).rowcount or 0


# --- reads --------------------------------------------------------------------------------------


def get_task(conn: Connection, task_id: uuid.UUID, owner: str | None = None) -> RowMapping | None:
    """The task row, or None if it does not exist or ``owner`` may not see it."""
    if owner is None:
        return conn.execute(_GET_TASK, {"id": task_id}).mappings().first()
    return conn.execute(_GET_OWNED_TASK, {"id": task_id, "owner": owner}).mappings().first()


def list_tasks(
    conn: Connection,
    *,
    owner: str | None,
    status: str | None,
    task_type: str | None,
    created_after: datetime | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[RowMapping]:
    """Tasks newest first, keyset-paged by ``(created_at, id)``."""
    query = select(tasks).order_by(tasks.c.created_at.desc(), tasks.c.id.desc()).limit(limit)
    if owner is not None:
        query = query.where(tasks.c.owner == owner)
    if status:
        query = query.where(tasks.c.status == status)
    if task_type:
        query = query.where(tasks.c.task_type == task_type)
    if created_after:
        query = query.where(tasks.c.created_at > created_after)
    if before:
        created, last_id = before
        query = query.where(
            or_(tasks.c.created_at < created, and_(tasks.c.created_at == created, tasks.c.id < last_id))
        )
    return list(conn.execute(query).mappings())


def events_after(conn: Connection, task_id: uuid.UUID, after_seq: int, limit: int = 1000) -> list[Event]:
    """The task's events with ``seq > after_seq``, oldest first."""
    rows = conn.execute(
        select(task_events.c.seq, task_events.c.kind, task_events.c.data)
        .where(task_events.c.task_id == task_id, task_events.c.seq > after_seq)
        .order_by(task_events.c.seq)
        .limit(limit)
    )
    return [Event(str(task_id), seq, kind, data) for seq, kind, data in rows]


def logs_after(conn: Connection, task_id: uuid.UUID, after_seq: int, limit: int) -> list[RowMapping]:
    """Log lines (events of kind ``log``) after ``after_seq``, oldest first."""
    return list(
        conn.execute(
            select(task_events.c.seq, task_events.c.created_at, task_events.c.data)
            .where(task_events.c.task_id == task_id, task_events.c.kind == "log", task_events.c.seq > after_seq)
            .order_by(task_events.c.seq)
            .limit(limit)
        ).mappings()
    )


# --- cancel -------------------------------------------------------------------------------------


def cancel_pending(conn: Connection, task_id: uuid.UUID) -> tuple[RowMapping, Event] | None:
    """PENDING → CANCELLED at once; the queued message will find it cancelled and be dropped."""
    done = _transition(
        conn,
        task_id,
        [tasks.c.status == TaskStatus.PENDING.value],
        {
            "status": TaskStatus.CANCELLED.value,
            "cancel_requested": True,
            "cancel_requested_at": func.now(),
            "completed_at": func.now(),
        },
    )
    if done:
        conn.execute(delete(outbox).where(outbox.c.task_id == task_id))
    return done


def request_cancel(conn: Connection, task_id: uuid.UUID) -> tuple[RowMapping, Event] | None:
    """Set the durable cancel flag of a RUNNING task (idempotent: the first request wins the event)."""
    return _transition(
        conn,
        task_id,
        [tasks.c.status == TaskStatus.RUNNING.value, tasks.c.cancel_requested.is_(False)],
        {"cancel_requested": True, "cancel_requested_at": func.now()},
    )


# --- worker side (every write is fenced by the attempt that holds the lease) ---------------------
#
# The worker's hot statements are written once as SQL and compiled once per process: a task's claim
# and its outcome are ONE statement each (the compare-and-set UPDATE, the event INSERT and, for the
# claim, the outbox DELETE as data-modifying CTEs, like INSERT_TASKS_SQL), so a caller may run them in
# autocommit: one round trip, atomic, no BEGIN/COMMIT. A CAS that loses changes nothing: the CTEs
# that append the event and delete the outbox row read the UPDATE's RETURNING, which is empty.

#: The part of :func:`status_data` that SQL builds from the updated row (``r``); the rest is added below.
_STATUS_DATA_SQL = (
    "jsonb_build_object('status', r.status, 'progress', r.progress, 'attempts', r.attempts,"
    " 'cancel_requested', r.cancel_requested)"
)
_TASK_ID = bindparam("task_id", type_=UUID(as_uuid=True))
_ATTEMPT = bindparam("attempt", type_=Integer)
_LEASE = bindparam("lease", type_=Float)

#: The claim: one statement (see above), a prepared statement on the worker's connection.
CLAIM_SQL = f"""
WITH r AS (
    UPDATE tasks
    SET status = 'RUNNING', attempts = attempts + 1, worker = :worker,
        lease_expires_at = now() + make_interval(secs => :lease),
        started_at = coalesce(started_at, now()), error = NULL,
        last_seq = last_seq + 1, updated_at = now()
    WHERE id = :task_id AND status = 'PENDING' AND cancel_requested IS FALSE
    RETURNING {_TASK_COLUMNS}
), claim_event AS (
    INSERT INTO task_events (task_id, seq, kind, data)
    SELECT r.id, r.last_seq, 'status', {_STATUS_DATA_SQL} FROM r
), dispatch_done AS (
    DELETE FROM task_outbox WHERE task_id = :task_id AND EXISTS (SELECT FROM r)
)
SELECT {_TASK_COLUMNS} FROM r"""
_CLAIM = Prepared("tasklift_claim", CLAIM_SQL, {"task_id": "uuid", "lease": "float8", "worker": "text"})


def claim(conn: Connection, task_id: uuid.UUID, worker: str, lease: float) -> tuple[dict[str, Any], Event] | None:
    """PENDING → RUNNING with a new attempt and lease; None if another delivery got there first.

    One statement: the status event is appended and the outbox row deleted only if the CAS won.
    On the worker's autocommit connection it is its own transaction, committed when this returns.
    """
    row = run_prepared(conn, _CLAIM, {"task_id": task_id, "worker": worker, "lease": lease})
    if row is None:
        return None
    return row, Event(str(task_id), row["last_seq"], "status", status_data(row))


def _fenced(attempt: int) -> list[Any]:
    return [tasks.c.status == TaskStatus.RUNNING.value, tasks.c.attempts == attempt]


_FENCE_SQL = "id = :task_id AND status = 'RUNNING' AND attempts = :attempt"

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
#: The outcome: one statement (see above), a prepared statement like the claim.
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
_FINISH = Prepared(
    "tasklift_finish",
    FINISH_SQL,
    {
        "task_id": "uuid",
        "attempt": "integer",
        "status": "text",
        "result": "jsonb",
        "error": "jsonb",
        "set_progress": "boolean",
        "progress": "jsonb",
        "extra": "jsonb",
    },
)


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
    row = run_prepared(conn, _FINISH, _finish_params(task_id, attempt, status, result, error, progress))
    if row is None:
        return None
    return row, Event(str(task_id), row["last_seq"], "status", status_data(row))


def _finish_params(
    task_id: uuid.UUID,
    attempt: int,
    status: TaskStatus,
    result: Any,
    error: dict[str, Any] | None,
    progress: dict[str, Any] | None,
) -> dict[str, Any]:
    assert status in TERMINAL
    # What SQL cannot know: a large result's URL stands in for it; an error is shown when truthy.
    extra: dict[str, Any] = {}
    if status == TaskStatus.SUCCESS and claims.is_ref(result):
        extra = {"result": None, "result_url": claims.result_url(task_id)}
    elif status == TaskStatus.FAILED and error:
        extra = {"error": error}
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
    done = _transition(
        conn,
        task_id,
        _fenced(attempt),
        {"status": TaskStatus.PENDING.value, "error": error, "lease_expires_at": None, "worker": None},
    )
    if done:
        _insert_outbox(conn, done, delay)
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
    done = _transition(conn, task_id, _fenced(attempt), changes)
    if done:
        _insert_outbox(conn, done, 0)
    return done


def failures(row: Mapping[str, Any]) -> int:
    """Attempts that ended in an error: neither a re-dispatch (lost lease) nor a hand-back."""
    return int(row["attempts"] - row["redispatches"] - row["handbacks"])


def _insert_outbox(conn: Connection, done: tuple[RowMapping, Event], delay: float) -> None:
    """A new dispatch intent for the transition ``done`` just made (named by its event's seq)."""
    row, event = done
    due = func.now() + _seconds(delay)
    conn.execute(
        pg_insert(outbox)
        .values(task_id=row["id"], queue=row["queue"], available_at=due, intent_seq=event.seq)
        .on_conflict_do_update(
            index_elements=[outbox.c.task_id],
            set_={"available_at": due, "published_at": None, "broker_epoch": None, "intent_seq": event.seq},
        )
    )


def reopen(conn: Connection, task_id: uuid.UUID, retries: int) -> tuple[RowMapping, Event] | None:
    """FAILED | CANCELLED → PENDING for a manual retry: same id, a fresh retry budget, events go on."""
    done = _transition(
        conn,
        task_id,
        [tasks.c.status.in_([TaskStatus.FAILED.value, TaskStatus.CANCELLED.value])],
        {
            "status": TaskStatus.PENDING.value,
            "cancel_requested": False,
            "cancel_requested_at": None,
            "error": None,
            "result": None,
            "completed_at": None,
            # Automatic retries count failures (see failures()); the budget restarts here.
            "max_retries": tasks.c.attempts - tasks.c.redispatches - tasks.c.handbacks + retries,
        },
    )
    if done:
        _insert_outbox(conn, done, 0)
    return done


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
) -> tuple[RowMapping, Event] | None:
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
                tasks.c.cancel_requested_at < func.now() - _seconds(grace),
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).mappings()
    )


# --- idempotency --------------------------------------------------------------------------------


#: Reserving an Idempotency-Key, in the submit's transaction (:func:`tasklift.store.aio.submit_with_key`):
#: an expired record of the key is deleted, then the key inserted unless a live record holds it
#: (a concurrent request with the same key waits here for the other's transaction); if nothing was
#: inserted, the live record is read (the statement after the INSERT sees what the other committed).
DELETE_EXPIRED_KEY_SQL = "DELETE FROM idempotency_keys WHERE owner = :owner AND key = :key AND expires_at < now()"
INSERT_KEY_SQL = """
INSERT INTO idempotency_keys (owner, key, request_hash, expires_at)
VALUES (:owner, :key, :request_hash, now() + make_interval(secs => :ttl))
ON CONFLICT DO NOTHING RETURNING key"""
GET_KEY_SQL = (
    "SELECT owner, key, request_hash, task_id, expires_at FROM idempotency_keys WHERE owner = :owner AND key = :key"
)
#: Bind the key to the task it created (same transaction as the INSERT).
COMPLETE_KEY_SQL = "UPDATE idempotency_keys SET task_id = :task_id WHERE owner = :owner AND key = :key"


def purge_expired_idempotency_keys(conn: Connection) -> int:
    """Delete expired Idempotency-Key records; returns how many."""
    return conn.execute(delete(idempotency_keys).where(idempotency_keys.c.expires_at < func.now())).rowcount or 0


def ping(conn: Connection) -> None:
    """Raise unless the database answers."""
    conn.execute(text("SELECT 1"))


# --- error classification ---------------------------------------------------------------------------


def refused_value(exc: BaseException) -> bool:
    """True when the store refused a *value* of the statement, not because it is unavailable.

    SQLSTATE class 22 (data exception: a time zone out of range, a string PostgreSQL cannot hold,
    a number too large) from psycopg2 through SQLAlchemy's ``DBAPIError``, or from asyncpg behind
    :class:`tasklift.store.aio.DatabaseError` (its ``__cause__``), and asyncpg's own client-side
    ``DataError`` (an argument it cannot encode). Such a request is the client's error (4xx);
    retrying it would fail the same way, so it must not be a 503.
    """
    import asyncpg
    from sqlalchemy.exc import DataError

    if isinstance(exc, DataError):
        return True
    for cause in (getattr(exc, "orig", None), exc.__cause__):
        if isinstance(cause, asyncpg.DataError):
            return True
        code = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
        if isinstance(code, str) and code.startswith("22"):
            return True
    return False
