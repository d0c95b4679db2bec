"""The SQL text of the API's statements, and the task events they write. Plain text: no SQLAlchemy.

The statements of an API process's tasks are here (submit, reads, list, logs, cancel, manual retry,
the submit limit, Idempotency-Keys, the outbox marks; the API keys' are
:mod:`tasklift.security.api_keys`'s, the event hub's check of the latest sequences
:mod:`tasklift.events.hub`'s), as text with ``:name`` parameters, run by the API's asyncpg store
(:mod:`tasklift.store.aio`), so an API process (a Lambda function, an Azure Functions worker)
imports neither SQLAlchemy nor psycopg. Every state change is a compare-and-set that appends its
event in the same statement. The worker's and the reaper's statements are SQLAlchemy Core on
psycopg (:mod:`tasklift.store.leases`, :mod:`tasklift.store.outbox`). Time comes from the database's
``now()`` so that leases do not depend on the clocks of API and worker machines agreeing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from tasklift.tasks.states import TaskStatus


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


class Announcer(Protocol):
    """What announces committed events (a Redis PUBLISH on each task's channel):
    :class:`tasklift.events.bus.EventAnnouncer`, or the worker's deferred one."""

    def announce(self, events: Iterable[Event]) -> None: ...


def status_data(row: Mapping[str, Any]) -> dict[str, Any]:
    """The data of a ``status`` event for the task state in ``row``."""
    data: dict[str, Any] = {
        "status": row["status"],
        "progress": row["progress"],
        "attempts": row["attempts"],
        "cancel_requested": row["cancel_requested"],
    }
    if row["status"] == TaskStatus.SUCCESS:
        # A large result stays in blob storage: the event holds its reference (the claim check), never
        # the data; the HTTP edge shows it as ``result: null`` and a ``result_url`` (events/sse.py).
        data["result"] = row["result"]
    elif row["status"] in (TaskStatus.FAILED, TaskStatus.PENDING) and row["error"]:
        data["error"] = row["error"]
    return data


# --- submit and dispatch ------------------------------------------------------------------------


#: Every column of ``tasks``, in the table's order (tests/unit/test_store_sql.py holds it to tables.py).
TASK_COLUMN_NAMES = (
    "id",
    "owner",
    "task_type",
    "queue",
    "status",
    "input",
    "result",
    "error",
    "progress",
    "metadata",
    "attempts",
    "max_retries",
    "redispatches",
    "handbacks",
    "cancel_requested",
    "cancel_requested_at",
    "lease_expires_at",
    "worker",
    "last_seq",
    "trace_id",
    "traceparent",
    "created_at",
    "started_at",
    "updated_at",
    "completed_at",
    "priority",
    "scheduled_for",
    "expires_at",
    "concurrency_key",
    "concurrency_limit",
    "fairness_key",
)
TASK_COLUMNS = ", ".join(TASK_COLUMN_NAMES)

#: Submit in ONE statement, one round trip: the tasks, their first events and their dispatch
#: intents (outbox rows). The event and outbox rows are data-modifying CTEs; PostgreSQL runs each
#: exactly once and checks their foreign keys at the end of the statement. The API submits the
#: requests that arrive together in one such statement (:mod:`tasklift.store.aio`); a submit with
#: an Idempotency-Key runs it for its one task inside the key's transaction. The tasks come as ONE
#: JSON array of records (cheaper for the client to encode than nine parallel arrays).
#: Flow control (docs/flow-control.md): ``scheduled_for`` and ``deadline`` are computed on the
#: database's clock from ``run_at`` / ``delay`` and ``expires_at`` / ``ttl``; a task published at
#: submit (``inline``, the default) gets the grace period and intent 1, any other is due for the
#: dispatcher at its ``scheduled_for`` (or now) as intent 0: its ``available_at`` is its real due
#: time, so the autoscaler's count of submits (:mod:`tasklift.store.scaling`: every intent 1, due
#: or not) leaves it out until it is due.
INSERT_TASKS_SQL = f"""
WITH given AS (
    SELECT * FROM jsonb_to_recordset(CAST(:tasks AS jsonb)) AS t(
        id uuid, owner text, task_type text, queue text, input jsonb, metadata jsonb, max_retries integer,
        trace_id text, traceparent text, priority smallint, run_at timestamptz, delay double precision,
        expires_at timestamptz, ttl double precision, inline boolean, callback_url text, callback_events jsonb,
        concurrency_key text, concurrency_limit integer, fairness_key text
    )
), new AS (
    SELECT given.*,
        CASE WHEN run_at IS NOT NULL THEN run_at WHEN delay IS NOT NULL THEN now() + make_interval(secs => delay)
        END AS scheduled_for,
        coalesce(expires_at, now() + make_interval(secs => ttl)) AS deadline
    FROM given
), callback AS (  -- its webhook, else its owner's default (docs/webhooks.md); read by 0012_hooks' trigger
    INSERT INTO task_callbacks (task_id, url, events)
    SELECT new.id, COALESCE(new.callback_url, p.url), COALESCE(new.callback_events, p.events)
    FROM new LEFT JOIN principal_callbacks AS p ON p.principal = new.owner AND new.callback_url IS NULL
    WHERE COALESCE(new.callback_url, p.url) IS NOT NULL
), first_event AS (
    INSERT INTO task_events (task_id, seq, kind, data) SELECT id, 1, 'status', CAST(:first_event AS jsonb) FROM new
), dispatch_intent AS (
    INSERT INTO task_outbox (task_id, queue, available_at, intent_seq)
    SELECT id, queue, CASE WHEN inline IS NOT FALSE THEN now() + make_interval(secs => :dispatch_grace)
        ELSE greatest(coalesce(scheduled_for, now()), now()) END, CASE WHEN inline IS NOT FALSE THEN 1 ELSE 0 END
    FROM new
)
INSERT INTO tasks (id, owner, task_type, queue, status, input, metadata, max_retries, trace_id, traceparent, last_seq,
    priority, scheduled_for, expires_at, concurrency_key, concurrency_limit, fairness_key)
SELECT id, owner, task_type, queue, 'PENDING', input, metadata, max_retries, trace_id, traceparent, 1,
    coalesce(priority, 0), scheduled_for, deadline, concurrency_key, concurrency_limit, fairness_key FROM new
RETURNING {TASK_COLUMNS}
"""
#: One task by id (:data:`GET_OWNED_TASK_SQL`: and owner).
GET_TASK_SQL = f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = :id"
GET_OWNED_TASK_SQL = f"{GET_TASK_SQL} AND owner = :owner"
#: Many tasks by id (the API's gathered reads, :mod:`tasklift.store.aio`), with whether the queue is
#: paused, whether a PENDING task's concurrency key is at its limit (ix_tasks_concurrency_running), and
#: whether its rate limit's bucket is empty while its intent waits (docs/flow-control.md).
GET_TASKS_SQL = (
    f"SELECT {TASK_COLUMNS}, EXISTS (SELECT FROM paused_queues AS p WHERE p.queue = tasks.queue) AS paused,"
    " (status = 'PENDING' AND concurrency_limit IS NOT NULL AND concurrency_key IS NOT NULL AND"
    " (SELECT count(*) FROM tasks AS b WHERE b.status = 'RUNNING' AND b.concurrency_key = tasks.concurrency_key"
    " AND b.task_type = tasks.task_type) >= concurrency_limit) AS concurrency_limited,"
    " (status = 'PENDING' AND EXISTS (SELECT FROM rate_buckets AS r WHERE r.task_type = tasks.task_type"
    " AND r.bucket_key IN ('', coalesce(tasks.concurrency_key, '')) AND r.tokens + r.capacity"
    " * greatest(0, extract(epoch FROM now() - r.refilled_at)) / r.period_seconds < 1)"
    " AND EXISTS (SELECT FROM task_outbox AS o WHERE o.task_id = tasks.id AND o.published_at IS NULL)) AS rate_limited"
    " FROM tasks WHERE id = ANY(CAST(:ids AS uuid[]))"
)


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
    #: Flow control (:mod:`tasklift.tasks.flow`): see :data:`INSERT_TASKS_SQL`.
    priority: int = 0
    run_at: datetime | None = None
    delay: float | None = None
    expires_at: datetime | None = None
    ttl: float | None = None
    inline: bool = True  #: published at submit; False: the dispatcher admits it (delayed, or a window)
    callback_url: str | None = None  #: where its webhooks go (docs/webhooks.md)
    callback_events: tuple[str, ...] = ()
    concurrency_key: str | None = None
    concurrency_limit: int | None = None  #: the type's, when the task has a key (docs/flow-control.md)
    fairness_key: str | None = None  #: its turn under a window is this key's (None: the owner's)

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
                    "priority": t.priority,
                    "run_at": t.run_at.isoformat() if t.run_at else None,
                    "delay": t.delay,
                    "expires_at": t.expires_at.isoformat() if t.expires_at else None,
                    "ttl": t.ttl,
                    "inline": t.inline,
                    "callback_url": t.callback_url,
                    "callback_events": list(t.callback_events) if t.callback_url else None,
                    "concurrency_key": t.concurrency_key,
                    "concurrency_limit": t.concurrency_limit,
                    "fairness_key": t.fairness_key,
                }
                for t in tasks
            ],
            "first_event": first_event_data(),
            "dispatch_grace": float(max(t.dispatch_grace for t in tasks)),
        }


@dataclass(frozen=True)
class Dispatch:
    """What a message needs: the task, its queue and type (for its time limit), and its trace."""

    task_id: uuid.UUID
    queue: str
    task_type: str
    traceparent: str | None = None  #: the task's stored W3C traceparent; None = the current span
    intent_seq: int = 1  #: the outbox intent this message carries out (1: the submit's)

    @property
    def intent(self) -> tuple[uuid.UUID, int]:
        """What a mark of this message names: the task and its intent (:data:`MARK_PUBLISHED_SQL`)."""
        return self.task_id, self.intent_seq


@dataclass(frozen=True)
class RecordedStep:
    """A finished step as stored."""

    name: str
    position: int
    version: str
    attempt: int
    result: Any  #: the JSON result, or a claim-check reference to it


# --- reads --------------------------------------------------------------------------------------


#: The caller's tasks newest first, keyset-paged by ``(created_at, id)``: the filters that are given
#: (:func:`list_tasks_sql`). Each combination is its own statement, so each is planned on the index
#: that serves it (ix_tasks_owner_created for an owner) rather than on a catch-all ``IS NULL OR``.
_LIST_FILTERS = {
    "owner": "owner = :owner",
    "status": "status = :status",
    "task_type": "task_type = :task_type",
    "created_after": "created_at > :created_after",
    "before": "(created_at, id) < (:before_created, :before_id)",
}


def list_tasks_sql(filters: Sequence[str]) -> str:
    """The listing statement for the given filters (names of :data:`_LIST_FILTERS`), ``:limit`` rows."""
    where = " AND ".join(_LIST_FILTERS[name] for name in _LIST_FILTERS if name in filters) or "TRUE"
    return f"SELECT {TASK_COLUMNS} FROM tasks WHERE {where} ORDER BY created_at DESC, id DESC LIMIT :limit"


#: The task's events with ``seq > :after``, oldest first (stream replay; the worker's last event).
EVENTS_AFTER_SQL = (
    "SELECT seq, kind, data FROM task_events WHERE task_id = :task_id AND seq > :after ORDER BY seq LIMIT :limit"
)
#: Log lines (events of kind ``log``) after ``:after``, oldest first.
LOGS_AFTER_SQL = (
    "SELECT seq, created_at, data FROM task_events"
    " WHERE task_id = :task_id AND kind = 'log' AND seq > :after ORDER BY seq LIMIT :limit"
)
# --- the API's state changes: cancel and manual retry ---------------------------------------------
#
# Each is ONE statement: a compare-and-set on the task row (``r``), its status event, and its
# outbox change, as data-modifying CTEs (as the worker's lease, :mod:`tasklift.store.leases`).
# ``:owner`` NULL means any owner (an admin); another owner's task is simply not changed.

#: The ``status`` event data SQL builds from the updated row ``r``: :func:`status_data` for the
#: states these statements leave (no result, no error).
STATUS_DATA_SQL = (
    "jsonb_build_object('status', r.status, 'progress', r.progress, 'attempts', r.attempts,"
    " 'cancel_requested', r.cancel_requested)"
)
_OWNED = "id = :task_id AND (CAST(:owner AS text) IS NULL OR owner = :owner)"
_STATUS_EVENT = "INSERT INTO task_events (task_id, seq, kind, data) SELECT r.id, r.last_seq, 'status', {data} FROM r"

#: Cancel: PENDING or WAITING → CANCELLED at once (its outbox intent dropped: the queued message, if
#: any, finds it cancelled and is dropped; its wait row dropped); RUNNING → the durable cancel flag,
#: once (the first request wins the event; the worker stops at its next check). Returns the changed
#: rows, or none. ``{target}`` selects the tasks: one by id and owner (:data:`CANCEL_SQL`), or the
#: ids of a bulk cancel's batch (:data:`BULK_CANCEL_SQL`, :mod:`tasklift.tasks.bulk`); the rest is
#: the same text.
_CANCEL_TEMPLATE = f"""
WITH r AS (
    UPDATE tasks
    SET status = CASE WHEN status IN ('PENDING', 'WAITING') THEN 'CANCELLED' ELSE status END,
        completed_at = CASE WHEN status IN ('PENDING', 'WAITING') THEN now() ELSE completed_at END,
        cancel_requested = TRUE, cancel_requested_at = now(), last_seq = last_seq + 1, updated_at = now()
    WHERE {{target}} AND (status IN ('PENDING', 'WAITING') OR (status = 'RUNNING' AND cancel_requested IS FALSE))
    RETURNING {TASK_COLUMNS}
), cancel_event AS (
    {_STATUS_EVENT.format(data=STATUS_DATA_SQL)}
), no_dispatch AS (
    DELETE FROM task_outbox WHERE task_id IN (SELECT r.id FROM r WHERE r.status = 'CANCELLED')
), no_wait AS (
    DELETE FROM task_waits WHERE task_id IN (SELECT r.id FROM r WHERE r.status = 'CANCELLED')
)
SELECT {TASK_COLUMNS} FROM r"""
CANCEL_SQL = _CANCEL_TEMPLATE.format(target=_OWNED)
#: The tasks of a bulk operation's batch (``:ids``), as :data:`CANCEL_SQL` cancels one.
BULK_IDS = "id = ANY(CAST(:ids AS uuid[]))"
BULK_CANCEL_SQL = _CANCEL_TEMPLATE.format(target=BULK_IDS)

#: A new dispatch intent of the updated row ``r``, due now, replacing any earlier one (a manual
#: retry, a resumed wait, a woken sleep: every transition back to PENDING that is due at once).
REARM_INTENT_CTE = """dispatch_intent AS (
    INSERT INTO task_outbox (task_id, queue, available_at, intent_seq)
    SELECT r.id, r.queue, now(), r.last_seq FROM r
    ON CONFLICT (task_id) DO UPDATE
    SET available_at = EXCLUDED.available_at, published_at = NULL, broker_epoch = NULL,
        intent_seq = EXCLUDED.intent_seq
)"""

#: Manual retry: FAILED | CANCELLED → PENDING, same id, a fresh retry budget (automatic retries
#: count failures, see :func:`tasklift.store.leases.failures`), events go on; a new dispatch intent
#: for this transition, due at once. Returns the reopened rows, or none. ``{source}`` /
#: ``{target}`` / ``{retries}``: one task by id and owner with its type's ``:retries``
#: (:data:`REOPEN_SQL`), or a bulk retry's batch, each id with its type's retries (:data:`BULK_REOPEN_SQL`).
_REOPEN_TEMPLATE = f"""
WITH r AS (
    UPDATE tasks
    SET status = 'PENDING', cancel_requested = FALSE, cancel_requested_at = NULL, error = NULL, result = NULL,
        completed_at = NULL, max_retries = attempts - redispatches - handbacks + {{retries}},
        last_seq = last_seq + 1, updated_at = now(){{source}}
    WHERE {{target}} AND status IN ('FAILED', 'CANCELLED')
    RETURNING {", ".join(f"tasks.{name}" for name in TASK_COLUMN_NAMES)}
), reopen_event AS (
    {_STATUS_EVENT.format(data=STATUS_DATA_SQL)}
), {REARM_INTENT_CTE}
SELECT {TASK_COLUMNS} FROM r"""
REOPEN_SQL = _REOPEN_TEMPLATE.format(source="", target=_OWNED, retries=":retries")
BULK_REOPEN_SQL = _REOPEN_TEMPLATE.format(
    source="\n    FROM unnest(CAST(:ids AS uuid[]), CAST(:retries AS integer[])) AS b(bulk_id, bulk_retries)",
    target="tasks.id = b.bulk_id",
    retries="b.bulk_retries",
)

#: The condition of an unfinished task, literal so that it matches the partial index
#: ix_tasks_active_owner's predicate even in a prepared statement.
ACTIVE_PREDICATE = "status IN ('PENDING', 'RUNNING')"
#: PENDING + RUNNING tasks of ``:owner`` (the submit's limit, :mod:`tasklift.security.limits`).
ACTIVE_TASKS_SQL = f"SELECT count(*) FROM tasks WHERE owner = :owner AND {ACTIVE_PREDICATE}"


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


# --- the outbox marks ----------------------------------------------------------------------------

#: Record that the messages of the intents ``(:ids[i], :seqs[i])`` reached the broker (identified by
#: its run id, ``:epoch``). Only the intent that was sent is marked: an intent re-armed since (a
#: retry that failed before the mark arrived) keeps ``published_at`` NULL and is dispatched.
#: Run by the API's enqueuer (:meth:`tasklift.store.aio.AsyncStore.mark_published`) and the
#: dispatcher (:func:`tasklift.store.outbox.mark_published`).
MARK_PUBLISHED_SQL = """
UPDATE task_outbox AS o SET published_at = now(), broker_epoch = :epoch
FROM unnest(CAST(:ids AS uuid[]), CAST(:seqs AS bigint[])) AS sent(task_id, intent_seq)
WHERE o.task_id = sent.task_id AND o.intent_seq = sent.intent_seq
"""


# --- error classification ---------------------------------------------------------------------------


def refused_value(exc: BaseException) -> bool:
    """True when the store refused a *value* of the statement, not because it is unavailable.

    SQLSTATE class 22 (data exception: a time zone out of range, a string PostgreSQL cannot hold,
    a number too large) from asyncpg behind :class:`tasklift.store.aio.DatabaseError` (its
    ``__cause__``), and asyncpg's own client-side ``DataError`` (an argument it cannot encode);
    psycopg's errors (``sqlstate``, as ``orig`` of SQLAlchemy's) read the same. Such a request is
    the client's error (4xx); retrying it would fail the same way, so it must not be a 503.
    """
    import asyncpg

    for cause in (getattr(exc, "orig", None), exc.__cause__):
        if isinstance(cause, asyncpg.DataError):
            return True
        code = getattr(cause, "sqlstate", None)  # psycopg and asyncpg both name it so
        if isinstance(code, str) and code.startswith("22"):
            return True
    return False


# --- output (ctx.emit) -----------------------------------------------------------------------------

#: The ``output`` batches holding chunks after index ``:after``, oldest first (GET /tasks/{id}/output;
#: the partial index ``ix_task_events_output`` on ``(task_id, last)``, written by :mod:`tasklift.store.output`).
OUTPUT_AFTER_SQL = """
SELECT seq, data FROM task_events
WHERE task_id = :task_id AND kind = 'output' AND CAST(data ->> 'last' AS bigint) > :after
ORDER BY CAST(data ->> 'last' AS bigint)
LIMIT :limit"""
