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
    status: str = Field(description="PENDING | RUNNING | SUCCESS | FAILED | CANCELLED")
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


class TaskTypeInfo(BaseModel):
    name: str
    description: str
    queue: str
    timeout: float
    retries: int
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
    error: RpcStatus | None = Field(None, description="When FAILED (code 2, 3, 4 or 12) or CANCELLED (code 1)")


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


class Delivery(BaseModel):
    """One webhook delivery of a task (docs/webhooks.md)."""

    id: str = Field(description="The webhook-id: the same on every retry and redelivery")
    task_id: str
    event_type: str = Field(description="task.succeeded | task.failed | task.cancelled | task.progress")
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
