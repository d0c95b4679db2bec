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
