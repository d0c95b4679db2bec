"""Task types of local/bench/waits.py (loaded with TASKLIFT_TASK_MODULES='["bench_tasks", "bench_wait_tasks"]')."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tasklift import TaskContext, WaitTimeout, task
from tasklift.tasks.registry import TaskInput


class Wait(TaskInput):
    timeout: float | None = Field(None, gt=0)


@task("bench_wait", input=Wait, queue="cpu", timeout=600)
def bench_wait(ctx: TaskContext, inp: Wait) -> dict[str, Any]:
    """One step, a wait for the signal "go", one step."""
    ctx.step("before", lambda: 1)
    try:
        payload = ctx.wait_for("go", timeout=inp.timeout)
    except WaitTimeout:
        payload = "timeout"
    ctx.step("after", lambda: 2)
    return {"payload": payload}
