"""The task type the chaos run submits: random duration, progress, one fenced effect."""

from __future__ import annotations

import time

from pydantic import Field
from sqlalchemy import text

from tasklift import TaskContext, task
from tasklift.tasks.registry import TaskInput


class ChaosInput(TaskInput):
    seconds: float = Field(1.0, ge=0, le=60)


@task("chaos_effect", input=ChaosInput, queue="io", timeout=300, retries=2)
def chaos_effect(ctx: TaskContext, inp: ChaosInput) -> dict[str, float]:
    """Work for a while, reporting progress, then write exactly one effect row."""
    steps = max(1, int(inp.seconds / 0.25))
    for step in range(steps):
        time.sleep(inp.seconds / steps)
        ctx.progress(current=step + 1, total=steps, message=f"step {step + 1}/{steps}")
    with ctx.transaction() as conn:
        seen = conn.execute(text("SELECT 1 FROM chaos_effects WHERE task_id = :t"), {"t": str(ctx.task_id)}).first()
        if seen is None:
            conn.execute(text("INSERT INTO chaos_effects (task_id, attempt) VALUES (:t, :a)"),
                         {"t": str(ctx.task_id), "a": ctx.attempt})  # fmt: skip
    return {"seconds": inp.seconds}
