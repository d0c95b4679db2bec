"""Task types of the wait and signal tests (tests/faults/test_waits.py, tests/browser/test_dashboard_waits.py).

Workers import this module through TASKLIFT_TASK_MODULES. Every step appends a line to a file named
in the input, and so does the code right after a wait: the side effects that count what really ran.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from tasklift import TaskContext, WaitTimeout, task
from tasklift.tasks.registry import TaskInput


def effect(path: str, name: str) -> str:
    with open(path, "a") as out:
        out.write(name + "\n")
        out.flush()
        os.fsync(out.fileno())
    return name


def _gated(path: str, name: str) -> str:
    """A step that waits (in the worker) until the file ``<path>.go`` exists: a test sends a signal meanwhile."""
    Path(path + ".gate").write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while not Path(path + ".go").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return effect(path, name)


class Approval(TaskInput):
    path: str
    timeout: float | None = Field(None, gt=0)
    handle_timeout: bool = False  #: catch WaitTimeout and return "timed out"
    second_wait: bool = False  #: wait for a second "approval" after the first
    gate: bool = False  #: the step before the wait holds until ``<path>.go`` exists
    emit: int = Field(0, ge=0)  #: output chunks emitted before the wait
    in_transaction: bool = False  #: wait inside ctx.transaction() (refused)


@task("test_wait", input=Approval, queue="cpu", timeout=600)
def test_wait(ctx: TaskContext, inp: Approval) -> dict[str, Any]:
    """A step, a wait for the signal "approval", a step; optionally a second wait."""
    ctx.step("before", _gated if inp.gate else effect, inp.path, "before")
    for i in range(inp.emit):
        ctx.emit(f"line {i}\n")
    if inp.in_transaction:
        with ctx.transaction():
            ctx.wait_for("approval")
    try:
        payload = ctx.wait_for("approval", timeout=inp.timeout)
    except WaitTimeout as exc:
        if not inp.handle_timeout:
            raise
        payload = f"timed out: {exc}"
    effect(inp.path, "resumed")  # not a step: runs on every run that gets past the wait
    ctx.step("after", effect, inp.path, "after")
    second = ctx.wait_for("approval", timeout=inp.timeout) if inp.second_wait else None
    return {"payload": payload, "second": second}


class Nap(TaskInput):
    path: str
    seconds: float = Field(1.0, gt=0)


@task("test_nap", input=Nap, queue="cpu", timeout=600)
def test_nap(ctx: TaskContext, inp: Nap) -> dict[str, Any]:
    """A step, ``ctx.sleep(seconds)``, a step: the sleep holds no worker."""
    started = ctx.step("start", time.time)
    ctx.sleep(inp.seconds)
    ended = ctx.step("end", time.time)
    effect(inp.path, "woke")
    return {"slept": ended - started}
