"""Task types of the large-payload tests. Workers import this module through TASKLIFT_TASK_MODULES."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict

from tasklift import TaskContext, task
from tasklift.tasks.registry import TaskInput


class Payload(TaskInput):
    data: str
    result_bytes: int = 0


class Open(BaseModel):
    """An input model that accepts any field (plain BaseModel, not TaskInput)."""

    model_config = ConfigDict(extra="allow")


@task("blob_echo", input=Payload, queue="cpu", timeout=120)
def blob_echo(ctx: TaskContext, inp: Payload) -> dict[str, object]:
    """Proves what the task saw (length and hash of its input) and returns ``result_bytes`` of data."""
    ctx.progress(50, "hashing")
    digest = hashlib.sha256(inp.data.encode()).hexdigest()
    return {
        "input_length": len(inp.data),
        "input_sha256": digest,
        "data": (digest * (inp.result_bytes // 64 + 1))[: inp.result_bytes],
    }


@task("blob_open", input=Open, queue="cpu")
def blob_open(ctx: TaskContext, inp: Open) -> dict[str, object]:
    """Echoes whatever it was given."""
    return inp.model_dump()
