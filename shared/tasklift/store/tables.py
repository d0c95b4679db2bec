"""The tables: tasks, their event log, their durable steps, the dispatch outbox and idempotency records.

PostgreSQL is the source of truth. Log lines are events of kind ``log`` in ``task_events``, output
chunks batches of kind ``output``: one append-only, sequence-numbered log per task serves the
stream, replay, GET /logs and GET /output alike.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSONB, datetime: DateTime(timezone=True)}


class Task(Base):
    """One submitted task: its state, input, outcome and lease."""

    __tablename__ = "tasks"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    owner: Mapped[str] = mapped_column(Text, server_default="anonymous")
    task_type: Mapped[str] = mapped_column(Text)
    queue: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default="PENDING")
    input: Mapped[dict[str, Any]] = mapped_column(JSONB)
    result: Mapped[Any | None] = mapped_column(JSONB)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, server_default=text("'{}'::jsonb"))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    max_retries: Mapped[int] = mapped_column(Integer, server_default="0")
    redispatches: Mapped[int] = mapped_column(Integer, server_default="0")
    #: attempts handed back by a worker's soft shutdown (re-queued, neither a failure nor a lost lease)
    handbacks: Mapped[int] = mapped_column(Integer, server_default="0")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    cancel_requested_at: Mapped[datetime | None]
    lease_expires_at: Mapped[datetime | None]
    worker: Mapped[str | None] = mapped_column(Text)
    last_seq: Mapped[int] = mapped_column(BigInteger, server_default="0")
    trace_id: Mapped[str | None] = mapped_column(Text)
    #: W3C traceparent of the submit request, so the dispatcher and worker continue its trace.
    traceparent: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    started_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    completed_at: Mapped[datetime | None]
    #: Flow control (docs/flow-control.md): 0-9, higher is admitted first within a queue.
    priority: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    #: Not admitted to the Celery queue before this time (``run_at`` / ``delay_seconds``).
    scheduled_for: Mapped[datetime | None]
    #: A task not started by this time ends EXPIRED (``expires_at`` / ``ttl_seconds``).
    expires_at: Mapped[datetime | None]
    #: Concurrency keys (docs/flow-control.md): at most ``concurrency_limit`` RUNNING per (type, key);
    #: the limit is the type's, copied at submit (NULL: no limit).
    concurrency_key: Mapped[str | None] = mapped_column(Text)
    concurrency_limit: Mapped[int | None] = mapped_column(Integer)
    #: Fair shares (docs/flow-control.md): under a window, turns are taken per this key (NULL: the owner).
    fairness_key: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("priority BETWEEN 0 AND 9", name="priority_range"),
        CheckConstraint("concurrency_limit IS NULL OR concurrency_limit > 0", name="concurrency_limit_positive"),
        # A key's RUNNING tasks (the lease's count) and PENDING ones (admitted-unclaimed), migration 0013_fair.
        Index(
            "ix_tasks_concurrency_running",
            "task_type",
            "concurrency_key",
            postgresql_where=text("status = 'RUNNING' AND concurrency_key IS NOT NULL"),
        ),
        Index(
            "ix_tasks_concurrency_pending",
            "task_type",
            "concurrency_key",
            postgresql_where=text("status = 'PENDING' AND concurrency_key IS NOT NULL"),
        ),
        Index("ix_tasks_owner_created", "owner", text("created_at DESC"), text("id DESC")),
        # The reaper scans running tasks by lease; a partial index keeps that scan tiny.
        Index("ix_tasks_running_lease", "lease_expires_at", postgresql_where=text("status = 'RUNNING'")),
        # Submit counts a principal's unfinished tasks (max_active_tasks); only those rows are indexed.
        Index("ix_tasks_active_owner", "owner", postgresql_where=text("status IN ('PENDING', 'RUNNING')")),
        # The autoscaler counts each queue's running tasks (tasklift/store/scaling.py).
        Index("ix_tasks_running_queue", "queue", postgresql_where=text("status = 'RUNNING'")),
        # Listings walk one of these in ORDER BY created_at DESC, id DESC and stop after a page, at
        # any table size: an admin's (every owner) by status or type, a tenant's by status
        # (migration 0008_growth; local/bench/growth.py measures them).
        Index("ix_tasks_created", "created_at", "id"),
        Index("ix_tasks_status_created", "status", "created_at", "id"),
        Index("ix_tasks_task_type_created", "task_type", "created_at", "id"),
        Index("ix_tasks_owner_status_created", "owner", "status", "created_at", "id"),
        # Retention takes the tasks finished longest ago (tasklift/tasks/retention.py).
        Index("ix_tasks_completed", "completed_at", postgresql_where=text("completed_at IS NOT NULL")),
        # The expiry sweep (tasklift/store/flow.py): PENDING tasks never started that have a deadline.
        Index(
            "ix_tasks_pending_expiry",
            "expires_at",
            postgresql_where=text("status = 'PENDING' AND expires_at IS NOT NULL AND started_at IS NULL"),
        ),
    )


class TaskEvent(Base):
    """One entry of a task's append-only event log; ``seq`` is the SSE event id."""

    __tablename__ = "task_events"

    task_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(Text)  # status | progress | log | step | output
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        Index("ix_task_events_logs", "task_id", "seq", postgresql_where=text("kind = 'log'")),
        # GET /tasks/{id}/output?after= finds the batch holding chunk after + 1 (tasklift/store/steps.py).
        Index(
            "ix_task_events_output",
            "task_id",
            text("(CAST(data ->> 'last' AS bigint))"),
            postgresql_where=text("kind = 'output'"),
        ),
    )


class TaskStep(Base):
    """One finished durable step of a task (``ctx.step``): recorded once, replayed by every re-run."""

    __tablename__ = "task_steps"

    task_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(Text, primary_key=True)  #: the run-unique name (``fetch#2``)
    position: Mapped[int] = mapped_column(Integer)  #: 1 for the run's first ``ctx.step`` call, and so on
    version: Mapped[str] = mapped_column(Text)  #: the task type's version that recorded it
    attempt: Mapped[int] = mapped_column(Integer)
    result: Mapped[Any | None] = mapped_column(JSONB)  #: the JSON result, or its claim-check reference
    duration_ms: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class TaskWait(Base):
    """What a WAITING task waits for (``ctx.wait_for`` / ``ctx.sleep``): one row while it waits.

    ``name`` is the step the wait's outcome is recorded as (``wait#approval``, ``sleep#1``) at
    ``position``; ``signal`` the signal name it waits for (NULL for a sleep); ``deadline`` when
    the dispatcher wakes it (its timeout, the sleep's end; NULL: only a signal or a cancel ends it).
    """

    __tablename__ = "task_waits"

    task_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(Text)
    signal: Mapped[str | None] = mapped_column(Text)
    position: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer)
    deadline: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    # The dispatcher's wake-up: one indexed range scan on the deadline (tasklift/store/waits.py).
    __table_args__ = (Index("ix_task_waits_deadline", "deadline", postgresql_where=text("deadline IS NOT NULL")),)


class TaskSignal(Base):
    """A signal sent while its task was not waiting for it: kept, in order, for the task's next wait on it."""

    __tablename__ = "task_signals"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    task_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("tasks.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text)
    payload: Mapped[Any | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (Index("ix_task_signals_task_name", "task_id", "name", "id"),)


class Outbox(Base):
    """Dispatch intents (transactional outbox), committed in the same transaction as the task.

    ``available_at`` is when the dispatcher may publish the row if nobody has: a submit publishes
    inline right after commit and marks ``published_at``; the dispatcher only takes rows still
    unpublished after a grace period, or retries whose back-off has elapsed. ``broker_epoch`` is the
    Redis ``run_id`` the message went to, so messages lost with a Redis restart can be re-sent.
    ``intent_seq`` is the task's event sequence number when this intent was written (1 for the
    submit; 0 for a submit the dispatcher admits, delayed or under a window: docs/flow-control.md;
    a retry, re-dispatch or manual retry writes a new one): a mark of a sent message names its
    intent, so it never lands on a newer one. The worker deletes the row when it claims the task.
    """

    __tablename__ = "task_outbox"

    task_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    queue: Mapped[str] = mapped_column(Text)
    available_at: Mapped[datetime] = mapped_column(server_default=func.now())
    published_at: Mapped[datetime | None]
    broker_epoch: Mapped[str | None] = mapped_column(Text)
    intent_seq: Mapped[int] = mapped_column(BigInteger, server_default="1")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        Index("ix_task_outbox_unpublished", "available_at", postgresql_where=text("published_at IS NULL")),
        Index("ix_task_outbox_published", "published_at", postgresql_where=text("published_at IS NOT NULL")),
        # The autoscaler counts each queue's due intents (tasklift/store/scaling.py).
        Index("ix_task_outbox_queue_due", "queue", "available_at"),
        # The admission window counts each queue's messages sent and not yet claimed (tasklift/store/flow.py).
        Index("ix_task_outbox_queue_sent", "queue", postgresql_where=text("published_at IS NOT NULL")),
    )


class IdempotencyKey(Base):
    """An Idempotency-Key seen from one caller, with the request it stood for."""

    __tablename__ = "idempotency_keys"

    owner: Mapped[str] = mapped_column(Text, primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    request_hash: Mapped[str] = mapped_column(Text)
    task_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime]

    __table_args__ = (Index("ix_idempotency_keys_expires", "expires_at"),)


class PausedQueue(Base):
    """A paused queue: its PENDING tasks are not claimed or dispatched until it is resumed."""

    __tablename__ = "paused_queues"

    queue: Mapped[str] = mapped_column(Text, primary_key=True)
    paused_by: Mapped[str] = mapped_column(Text)
    paused_at: Mapped[datetime] = mapped_column(server_default=func.now())


class RateBucket(Base):
    """A rate limit's token bucket (docs/flow-control.md): a task type's ('' key) or a type and key's,
    its tokens at ``refilled_at``; written by the dispatcher when it spends (store/flow.py)."""

    __tablename__ = "rate_buckets"

    task_type: Mapped[str] = mapped_column(Text, primary_key=True)
    bucket_key: Mapped[str] = mapped_column(Text, primary_key=True)
    capacity: Mapped[float] = mapped_column(Float)
    period_seconds: Mapped[float] = mapped_column(Float)
    tokens: Mapped[float] = mapped_column(Float)
    refilled_at: Mapped[datetime]


class BulkOperation(Base):
    """A bulk cancel, retry or purge by filter (POST /bulk): its filter, progress and cursor."""

    __tablename__ = "bulk_operations"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    owner: Mapped[str] = mapped_column(Text)  #: who asked for it (it sees it at GET /bulk/{id})
    #: the tasks' owner it is confined to; None: every owner (an admin's, without an owner filter)
    scope_owner: Mapped[str | None] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)  #: cancel | retry | purge
    filter: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(Text, server_default="PENDING")
    total: Mapped[int] = mapped_column(BigInteger, server_default="0")
    done: Mapped[int] = mapped_column(BigInteger, server_default="0")
    skipped: Mapped[int] = mapped_column(BigInteger, server_default="0")
    failed: Mapped[int] = mapped_column(BigInteger, server_default="0")
    cursor: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))  #: the last task id handled
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    started_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_bulk_operations_open", "created_at", postgresql_where=text("status IN ('PENDING', 'RUNNING')")),
        Index("ix_bulk_operations_owner_created", "owner", "created_at"),
    )


class Schedule(Base):
    """A cron or interval schedule (POST /schedules): each firing is a normal task (docs/flow-control.md)."""

    __tablename__ = "schedules"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    owner: Mapped[str] = mapped_column(Text)  #: the principal its tasks are submitted as
    name: Mapped[str] = mapped_column(Text)  #: unique per owner
    task_type: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    flow: Mapped[dict[str, Any]] = mapped_column(JSONB)  #: priority, ttl_seconds, concurrency_key, fairness_key
    cron: Mapped[str | None] = mapped_column(Text)
    timezone: Mapped[str] = mapped_column(Text, server_default="UTC")
    interval_seconds: Mapped[float | None] = mapped_column(Float)
    catchup: Mapped[str] = mapped_column(Text, server_default="latest")
    paused: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    next_fire_at: Mapped[datetime]
    last_fired_at: Mapped[datetime | None]
    last_task_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    fired: Mapped[int] = mapped_column(BigInteger, server_default="0")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        CheckConstraint("(cron IS NULL) <> (interval_seconds IS NULL)", name="one_timing"),
        CheckConstraint("catchup IN ('latest', 'all')", name="catchup_policy"),
        UniqueConstraint("owner", "name", name="uq_schedules_owner_name"),
        Index("ix_schedules_due", "next_fire_at", postgresql_where=text("NOT paused")),
        Index("ix_schedules_owner_created", "owner", "created_at", "id"),
    )


class ScheduleRun(Base):
    """One firing of a schedule: its nominal time and the task it submitted (one per time, by the key)."""

    __tablename__ = "schedule_runs"

    schedule_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("schedules.id", ondelete="CASCADE"))
    fire_at: Mapped[datetime]
    task_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("tasks.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (PrimaryKeyConstraint("schedule_id", "fire_at"), Index("ix_schedule_runs_task", "task_id"))


class TaskCallback(Base):
    """Where a task's webhooks go (``callback_url``) and which events it wants (docs/webhooks.md)."""

    __tablename__ = "task_callbacks"

    task_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    url: Mapped[str] = mapped_column(Text)
    #: the events it wants: "terminal" and/or "progress"
    events: Mapped[Any] = mapped_column(JSONB, server_default=text("'[\"terminal\"]'::jsonb"))


class PrincipalCallback(Base):
    """A principal's default webhook, for its submits that name none and whose type declares none."""

    __tablename__ = "principal_callbacks"

    principal: Mapped[str] = mapped_column(Text, primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[Any] = mapped_column(JSONB, server_default=text("'[\"terminal\"]'::jsonb"))
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class WebhookDelivery(Base):
    """One webhook message (the outbox of webhooks): written by the trigger of migration 0012_hooks in
    the transaction of the transition it announces, sent by :mod:`tasklift.queue.webhooks`.

    ``id`` is the Standard Webhooks ``webhook-id``, the same on every retry and redelivery; ``task``
    the task row when the event happened (rendered as the task resource when sent).
    """

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    task_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("tasks.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(Text)  #: task.succeeded | task.failed | task.cancelled | task.progress
    url: Mapped[str] = mapped_column(Text)
    task: Mapped[dict[str, Any]] = mapped_column(JSONB)
    state: Mapped[str] = mapped_column(Text, server_default="pending")  #: pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(server_default=func.now())
    #: the retry window (``webhook_retry_hours``) counts from here: the event, or the last redelivery
    retry_from: Mapped[datetime] = mapped_column(server_default=func.now())
    last_attempt_at: Mapped[datetime | None]
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)  #: the error, or a short excerpt of the answer
    delivered_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        Index("ix_webhook_deliveries_due", "next_attempt_at", postgresql_where=text("state = 'pending'")),
        Index("ix_webhook_deliveries_task", "task_id", "created_at"),
    )


tasks = cast(Table, Task.__table__)
task_events = cast(Table, TaskEvent.__table__)
task_steps = cast(Table, TaskStep.__table__)
task_waits = cast(Table, TaskWait.__table__)
task_signals = cast(Table, TaskSignal.__table__)
outbox = cast(Table, Outbox.__table__)
idempotency_keys = cast(Table, IdempotencyKey.__table__)
paused_queues = cast(Table, PausedQueue.__table__)
bulk_operations = cast(Table, BulkOperation.__table__)
task_callbacks = cast(Table, TaskCallback.__table__)
principal_callbacks = cast(Table, PrincipalCallback.__table__)
webhook_deliveries = cast(Table, WebhookDelivery.__table__)


class ApiKey(Base):
    """An API key: only a hash of the secret is stored; ``name`` identifies the principal."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    #: the owner of the tasks submitted with this key; several keys may share one (rotation)
    principal: Mapped[str] = mapped_column(Text)
    prefix: Mapped[str] = mapped_column(Text)  #: first characters of the key, to recognise it in lists
    key_hash: Mapped[str] = mapped_column(Text, unique=True)
    admin: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


api_keys = cast(Table, ApiKey.__table__)
