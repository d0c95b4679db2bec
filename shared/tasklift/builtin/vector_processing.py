"""``vector_processing``: the demo's default task, a simulated vector-indexing job.

It runs ``duration`` steps of about a second, reports progress on each, and at every 20 % calls
a flaky downstream service through retries and a circuit breaker (a failure there is logged and
the job goes on, as in the original demo).
"""

from __future__ import annotations

import time
from typing import Any

import pybreaker
from pydantic import BaseModel, Field

from tasklift.builtin.flaky_service import index_vectors
from tasklift.tasks.context import TaskContext
from tasklift.tasks.registry import TaskInput, task


class VectorInput(TaskInput):
    """Input of ``vector_processing`` (the original demo's request fields)."""

    vector_data: list[float] = Field(default_factory=list, max_length=100_000, description="The vectors to index")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Passed through to the result")
    duration: int = Field(10, ge=0, le=86_400, description="Number of ~1 s processing steps")
    step_seconds: float = Field(1.0, ge=0, le=60, description="Length of one step (the demo's 1 s)")


class VectorResult(BaseModel):
    """The original demo's result shape."""

    processed_vectors: int
    status: str = "indexed"
    metadata_processed: dict[str, Any]


@task("vector_processing", input=VectorInput, queue="cpu", timeout=86_400 + 600, retries=2)
def vector_processing(ctx: TaskContext, inp: VectorInput) -> VectorResult:
    """Simulated vector indexing: progress every step, resilient calls to a flaky service."""
    ctx.log(f"Task started processing {len(inp.vector_data)} vectors in {inp.duration} steps.")
    checkpoint = max(1, inp.duration // 5)
    for step in range(inp.duration):
        time.sleep(inp.step_seconds)
        ctx.progress(current=step + 1, total=inp.duration, message=f"Processing chunk {step + 1}/{inp.duration}")
        if step % checkpoint == 0:
            _call_downstream(ctx, inp)
    ctx.log("Task processing complete.")
    return VectorResult(processed_vectors=len(inp.vector_data), metadata_processed=inp.metadata)


def _call_downstream(ctx: TaskContext, inp: VectorInput) -> None:
    try:
        answer = index_vectors(len(inp.vector_data), inp.metadata)
        ctx.log(f"External service success: {answer['external_id']}")
    except pybreaker.CircuitBreakerError:
        ctx.log("External service skipped (circuit breaker open)", level="WARNING")
    except ConnectionError as exc:
        ctx.log(f"External service failed after retries: {exc}", level="ERROR")
