"""Task types of the durable-step and output tests (tests/integration/test_steps_output.py, local/bench/steps.py).

Workers import this module through TASKLIFT_TASK_MODULES. Every step appends a line to a file
named in the input: the side effect that counts how often each step really ran.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from tasklift import TaskContext, task
from tasklift.tasks.registry import TaskInput

#: The version the worker registers: a test restarts its worker with another to change the code.
STEP_VERSION = os.environ.get("TEST_STEP_VERSION", "1")


class Steps(TaskInput):
    path: str  #: each step appends "<name>\n" here
    steps: int = Field(5, ge=1)
    slow_step: int = 0  #: this step sleeps ``slow_seconds`` (a kill lands in it)
    slow_seconds: float = 0.0
    fail_after: int = 0  #: raise after this step while the file ``<path>.fail`` exists
    big: bool = False  #: the steps return results over the claim-check threshold


def _side_effect(path: str, name: str) -> None:
    with open(path, "a") as out:
        out.write(name + "\n")
        out.flush()
        os.fsync(out.fileno())


def _one_step(inp: Steps, number: int) -> dict[str, Any]:
    _side_effect(inp.path, f"step{number}")
    marker = Path(inp.path + ".in-slow-step")  # holds the pid of the process in the slow step
    if number == inp.slow_step and not marker.exists():  # slow once: the re-run goes straight through
        marker.write_text(str(os.getpid()))
        time.sleep(inp.slow_seconds)
    return {"n": number, "pad": "x" * (300_000 if inp.big else 0), "tuple": (number, number)}


@task("test_steps", input=Steps, queue="cpu", timeout=600, version=STEP_VERSION)
def test_steps(ctx: TaskContext, inp: Steps) -> dict[str, Any]:
    """Runs ``steps`` durable steps, each appending to a file; may fail after one of them."""
    results = []
    for number in range(1, inp.steps + 1):
        results.append(ctx.step("work", _one_step, inp, number))
        if number == inp.fail_after and Path(inp.path + ".fail").exists():
            raise ValueError(f"failing after step {number}")
    return {
        "ns": [r["n"] for r in results],
        "tuples": [r["tuple"] for r in results],
        "pads": [len(r["pad"]) for r in results],
    }


class Emit(TaskInput):
    count: int = Field(1000, ge=0)
    rate: float = Field(1000.0, gt=0)  #: chunks per second
    json_chunks: bool = False
    pad: int = Field(0, ge=0)  #: bytes of padding after each text chunk


@task("test_emit", input=Emit, queue="cpu", timeout=600)
def test_emit(ctx: TaskContext, inp: Emit) -> dict[str, int]:
    """Emits ``count`` numbered chunks at ``rate`` per second."""
    started = time.monotonic()
    for i in range(inp.count):
        due = started + i / inp.rate
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        ctx.emit({"i": i} if inp.json_chunks else f"tok{i} " + "x" * inp.pad)
    return {"emitted": inp.count}
