"""Pydantic models that document the API in OpenAPI (the handlers build the same shapes)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Progress(BaseModel):
    percent: float | None = Field(None, ge=0, le=100)
    current: int | None = None
    total: int | None = None
    message: str | None = None


class TaskError(BaseModel):
    type: str
    message: str


class TaskLinks(BaseModel):
    self: str
    stream: str
    logs: str
    output: str
    cancel: str
    retry: str
    operation: str
    google_operation: str
    deliveries: str


class TaskResource(BaseModel):
    """A task as every endpoint returns it."""

    task_id: str
    task_type: str
    status: str = Field(description="PENDING | RUNNING | WAITING | SUCCESS | FAILED | CANCELLED | EXPIRED")
    progress: Progress
    result: Any = None
    result_url: str | None = None
    error: TaskError | None = None
    attempts: int
    cancel_requested: bool
    metadata: dict[str, Any]
    created_at: str
    started_at: str | None
    updated_at: str
    completed_at: str | None
    trace_id: str | None
    paused: bool | None = Field(None, description="GET /tasks/{id}: its queue is paused (it stays PENDING)")
    priority: int = Field(0, ge=0, le=9, description="0-9; within a queue, higher is admitted first")
    scheduled_for: str | None = Field(None, description="Not admitted to the queue before this (run_at / delay)")
    expires_at: str | None = Field(None, description="Ends EXPIRED if not started by then (expires_at / ttl)")
    concurrency_key: str | None = Field(None, description="At most its type's concurrency_limit run at once per key")
    fairness_key: str | None = Field(None, description="Whose turn it takes under an admission window (null: owner)")
    waiting_reason: str | None = Field(
        None,
        description="While PENDING: scheduled | paused | concurrency_limited | rate_limited | queued (due; admitted"
        " or about to be);"
        " else null",
    )
    links: TaskLinks


class TaskList(BaseModel):
    items: list[TaskResource]
    next_cursor: str | None


class LogLine(BaseModel):
    seq: int
    timestamp: str
    level: str
    message: str


class OutputChunk(BaseModel):
    index: int  #: 1-based, consecutive over the task's whole life
    seq: int  #: the id of the SSE ``output`` event that carried it
    attempt: int | None
    data: Any  #: text or a JSON value, as the task emitted it


class OutputPage(BaseModel):
    task_id: str
    status: str
    chunks: list[OutputChunk]
    next_after: int  #: pass as ``?after=`` for the next page
    complete: bool  #: the task ended and this page holds its last chunk


class SignalDelivery(BaseModel):
    """POST /tasks/{id}/signals/{name}: what the signal did."""

    signal: str
    delivered: str = Field(description="resumed (the task was WAITING on it) | kept (for its next wait on it)")
    task: TaskResource


class StepInfo(BaseModel):
    name: str = Field(description="The recorded name: fetch, fetch#2, wait#approval, sleep#1")
    position: int
    attempt: int
    duration_ms: float
    finished_at: str


class WaitInfo(BaseModel):
    step: str
    signal: str | None = Field(description="The signal it waits for; null for a sleep")
    deadline: str | None = Field(description="When its timeout (or the sleep) ends it; null: only a signal")
    since: str


class TaskSteps(BaseModel):
    task_id: str
    status: str
    steps: list[StepInfo]
    wait: WaitInfo | None = Field(description="What it waits for while WAITING, else null")


class TaskTypeInfo(BaseModel):
    name: str
    description: str
    queue: str
    timeout: float
    retries: int
    concurrency_limit: int | None = Field(None, description="At most this many RUNNING per concurrency_key")
    rate_limit: str | None = Field(None, description="At most N admitted per period (e.g. 10/s), in force")
    rate_limit_per_key: bool = Field(False, description="The rate limit holds per concurrency_key")
    input_schema: dict[str, Any]


class ProblemDetail(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    errors: list[dict[str, Any]] | None = None


class Health(BaseModel):
    status: str
    checks: dict[str, str] | None = None


class OperationError(BaseModel):
    code: str
    message: str


class OperationStatus(BaseModel):
    """The Azure REST API guidelines' status monitor of a task (``Azure-AsyncOperation``)."""

    id: str
    status: str = Field(description="NotStarted | Running | Succeeded | Failed | Canceled")
    percentComplete: float  # noqa: N815 - the guidelines' name
    createdDateTime: str  # noqa: N815
    lastUpdatedDateTime: str  # noqa: N815
    error: OperationError | None = Field(None, description="When Failed")
    result: Any = Field(None, description="When Succeeded: the task's result (null if it is in blob storage)")
    resultUrl: str | None = Field(None, description="When Succeeded with a result in blob storage")  # noqa: N815
    resourceLocation: str | None = Field(None, description="When Succeeded: the task's absolute URL")  # noqa: N815


class RpcStatus(BaseModel):
    """A ``google.rpc.Status``."""

    code: int
    message: str


class GoogleOperation(BaseModel):
    """A ``google.longrunning.Operation`` in proto3 JSON (AIP-151)."""

    name: str = Field(description="operations/{task_id}")
    done: bool
    metadata: dict[str, Any] = Field(description="A google.protobuf.Struct Any: the task's status and progress")
    response: dict[str, Any] | None = Field(None, description="When done with success: Struct Any of the task")
    error: RpcStatus | None = Field(
        None, description="When FAILED (code 2, 3, 4 or 12), CANCELLED (code 1) or EXPIRED (code 4)"
    )


class BatchItemResult(BaseModel):
    """One item of a batch: ``status`` 202 with ``task``, or 422 / 409 with ``problem``."""

    status: int = Field(description="202 accepted (task) · 422 invalid · 409 its idempotency_key is in flight")
    task: TaskResource | None = None
    replayed: bool | None = Field(None, description="True when the item's idempotency_key gave an earlier task back")
    problem: ProblemDetail | None = None


class BatchResult(BaseModel):
    """The answer to POST /tasks:batch: one result per item, in request order."""

    accepted: int
    rejected: int
    items: list[BatchItemResult]


class QueueState(BaseModel):
    """A queue after POST /queues/{queue}:pause or :resume."""

    queue: str
    paused: bool
    pending: int = Field(description="Its PENDING tasks")


class BulkProgress(BaseModel):
    percent: int = Field(ge=0, le=100)


class BulkLinks(BaseModel):
    self: str
    cancel: str


class BulkOperation(BaseModel):
    """A bulk cancel, retry or purge by filter (POST /bulk, GET /bulk/{bulk_id}; docs/bulk.md)."""

    bulk_id: str
    action: str = Field(description="cancel | retry | purge")
    filter: dict[str, Any] = Field(description="The filter, normalised (lists, UTC times)")
    status: str = Field(description="PENDING | RUNNING | SUCCESS | CANCELLED | FAILED")
    total: int = Field(description="Tasks the filter matched when the operation was made")
    processed: int = Field(description="done + skipped + failed")
    done: int = Field(description="Tasks changed")
    skipped: int = Field(description="Matched, but no longer in a state the action changes when reached")
    failed: int = Field(description="Could not be changed (a retry of a task type no longer registered)")
    progress: BulkProgress
    error: str | None = None
    created_at: str
    started_at: str | None = None
    updated_at: str
    finished_at: str | None = None
    links: BulkLinks


class BulkList(BaseModel):
    """GET /bulk: a page of the caller's bulk operations, newest first."""

    items: list[BulkOperation]
    next_cursor: str | None


class BulkCount(BaseModel):
    """A dry run of POST /bulk: how many tasks it would change now."""

    action: str
    filter: dict[str, Any]
    dry_run: bool
    count: int


class Delivery(BaseModel):
    """One webhook delivery of a task (docs/webhooks.md)."""

    id: str = Field(description="The webhook-id: the same on every retry and redelivery")
    task_id: str
    event_type: str = Field(description="task.succeeded | task.failed | task.cancelled | task.expired | task.progress")
    url: str
    state: str = Field(description="pending | delivered | failed (given up after webhook_retry_hours)")
    attempts: int
    next_attempt_at: str | None
    last_attempt_at: str | None
    last_status: int | None = Field(description="The receiver's last HTTP status; null: no answer")
    last_error: str | None = Field(description="Why the last attempt failed (at most a short excerpt of the answer)")
    delivered_at: str | None
    created_at: str
    links: dict[str, str]


class DeliveryList(BaseModel):
    items: list[Delivery]
