"""Task types only the browser tests submit (imported by their API and worker processes)."""

from __future__ import annotations

import time

from pydantic import Field

from tasklift import TaskContext, task
from tasklift.tasks.registry import TaskInput


class Chatty(TaskInput):
    lines: int = Field(20, ge=1, le=1000, description="Numbered log lines to write")
    seconds: float = Field(2.0, ge=0, le=600, description="Total run time, spread over the lines")


@task("test_chatty", input=Chatty, queue="cpu", timeout=900)
def test_chatty(ctx: TaskContext, inp: Chatty) -> dict[str, int]:
    """Writes numbered log lines at a steady pace with progress after each (gap/duplicate detection)."""
    for n in range(1, inp.lines + 1):
        time.sleep(inp.seconds / inp.lines)
        ctx.log(f"line {n} of {inp.lines}")
        ctx.progress(current=n, total=inp.lines, message=f"line {n}")
    return {"lines": inp.lines}


@task("test_rated_slowly", input=Chatty, queue="cpu", rate_limit="2/m")
def test_rated_slowly(ctx: TaskContext, inp: Chatty) -> dict[str, int]:
    """Admitted two a minute (docs/flow-control.md, "Rate limits"): after the first two, the bucket
    holds under one token for 30 s, so a waiting task's page says why it waits."""
    return {"lines": 0}
