"""Task types of local/bench/steps.py (loaded with TASKLIFT_TASK_MODULES='["bench_tasks", "bench_steps_tasks"]').

Each reports the time its own loop took, measured inside the worker's pool process, so what is
compared is the cost of ``ctx.step`` / ``ctx.emit`` and nothing of the queue or the API.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from tasklift import TaskContext, task
from tasklift.tasks.registry import TaskInput


class Steps(TaskInput):
    steps: int = Field(500, ge=1)
    durable: bool = True  #: False: the same calls without ctx.step (the baseline)
    log_each: bool = False  #: with durable False: a ctx.log line per call (one fenced commit, as a step)
    fail_marker: str = ""  #: while this file exists the run fails at the end, its time in the error
    slow_marker: str = ""  #: the middle step sleeps once (a kill lands in it), writing its pid here


def _work(number: int, slow_marker: str, middle: bool) -> dict[str, int]:
    if middle and slow_marker and not Path(slow_marker).exists():
        Path(slow_marker).write_text(str(os.getpid()))
        time.sleep(120)
    return {"n": number}


@task("bench_steps", input=Steps, queue="cpu", timeout=900)
def bench_steps(ctx: TaskContext, inp: Steps) -> dict[str, Any]:
    """``steps`` tiny steps, durable or plain; reports the loop's seconds."""
    started = time.perf_counter()
    for number in range(inp.steps):
        middle = number == inp.steps // 2
        if inp.durable:
            ctx.step("work", _work, number, inp.slow_marker, middle)
        else:
            _work(number, inp.slow_marker, middle)
            if inp.log_each:
                ctx.log(f"call {number}")
    elapsed = time.perf_counter() - started
    if inp.fail_marker and Path(inp.fail_marker).exists():
        raise ValueError(f"elapsed={elapsed!r}")
    return {"elapsed": elapsed, "steps": inp.steps}


class Emit(TaskInput):
    count: int = Field(100_000, ge=1)
    rate: float = 0.0  #: chunks per second; 0 = as fast as possible


@task("bench_emit", input=Emit, queue="cpu", timeout=900)
def bench_emit(ctx: TaskContext, inp: Emit) -> dict[str, Any]:
    """Emits ``count`` short text chunks (LLM-token sized) at ``rate``, or flat out."""
    started = time.perf_counter()
    for i in range(inp.count):
        if inp.rate and (wait := started + i / inp.rate - time.perf_counter()) > 0:
            time.sleep(wait)
        ctx.emit(f"tok{i} ")
    return {"elapsed": time.perf_counter() - started, "count": inp.count}
