"""Task types the tests submit. Workers import this module through TASKLIFT_TASK_MODULES."""

from __future__ import annotations

import time

from pydantic import Field
from sqlalchemy import text

from tasklift import RetryableError, TaskContext, task
from tasklift.tasks.registry import TaskInput


class Noop(TaskInput):
    pass


class Fail(TaskInput):
    message: str = "boom"


class Sleep(TaskInput):
    seconds: float = Field(1.0, ge=0)
    steps: int = Field(10, ge=1)
    check_cancel: bool = True


class Effect(TaskInput):
    key: str
    seconds: float = 0.0


class Flaky(TaskInput):
    fail_times: int = 1


@task("test_noop", input=Noop, queue="cpu")
def test_noop(ctx: TaskContext, inp: Noop) -> dict[str, bool]:
    """Does nothing (benchmarks and latency tests)."""
    return {"ok": True}


@task("test_fail", input=Fail, queue="cpu")
def test_fail(ctx: TaskContext, inp: Fail) -> None:
    """Always fails with a non-retryable error."""
    ctx.log("about to fail", level="WARNING")
    raise ValueError(inp.message)


@task("test_sleep", input=Sleep, queue="cpu", timeout=600)
def test_sleep(ctx: TaskContext, inp: Sleep) -> dict[str, int]:
    """Sleeps in steps, reporting progress (or ignoring cancellation when check_cancel is false)."""
    for step in range(inp.steps):
        time.sleep(inp.seconds / inp.steps)
        if inp.check_cancel:
            ctx.progress(current=step + 1, total=inp.steps, message=f"step {step + 1}")
    return {"steps": inp.steps}


@task("test_effect", input=Effect, queue="io", timeout=600)
def test_effect(ctx: TaskContext, inp: Effect) -> dict[str, str]:
    """Writes one row keyed by (task id, key): a duplicated effect shows up as a second attempt row."""
    ctx.progress(10, "working")
    time.sleep(inp.seconds)
    ctx.check_cancelled()
    # The documented pattern for exactly-once effects: a fenced transaction, keyed by the task id.
    with ctx.transaction() as conn:
        seen = conn.execute(
            text("SELECT 1 FROM test_effects WHERE task_id = :t AND key = :k"), {"t": str(ctx.task_id), "k": inp.key}
        ).first()
        if seen is None:
            conn.execute(
                text("INSERT INTO test_effects (task_id, key, attempt) VALUES (:t, :k, :a)"),
                {"t": str(ctx.task_id), "k": inp.key, "a": ctx.attempt},
            )
    return {"key": inp.key}


@task("test_flaky", input=Flaky, queue="cpu", retries=3, backoff_base=0.2, backoff_max=0.5)
def test_flaky(ctx: TaskContext, inp: Flaky) -> dict[str, int]:
    """Fails with a retryable error on its first ``fail_times`` attempts."""
    if ctx.attempt <= inp.fail_times:
        raise RetryableError(f"transient failure on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


class FlakyEffect(TaskInput):
    key: str
    fail_times: int = Field(1, ge=0)


@task("test_flaky_effect", input=FlakyEffect, queue="io", retries=5, backoff_base=0.01, backoff_max=0.05)
def test_flaky_effect(ctx: TaskContext, inp: FlakyEffect) -> dict[str, str]:
    """Fails at once, retryably, on its first ``fail_times`` attempts; then writes its effect like test_effect."""
    if ctx.attempt <= inp.fail_times:
        raise RetryableError(f"instant failure on attempt {ctx.attempt}")
    with ctx.transaction() as conn:
        conn.execute(
            text("INSERT INTO test_effects (task_id, key, attempt) VALUES (:t, :k, :a)"),
            {"t": str(ctx.task_id), "k": inp.key, "a": ctx.attempt},
        )
    return {"key": inp.key}


#: A public address (documentation range of IANA's example.com), never contacted by the tests that use it.
HOOKED_URL = "https://93.184.215.14/hook"


@task("test_hooked", input=Noop, queue="cpu", callback_url=HOOKED_URL, callback_events=("terminal", "progress"))
def test_hooked(ctx: TaskContext, inp: Noop) -> dict[str, bool]:
    """A type that declares a default webhook (docs/webhooks.md)."""
    return {"ok": True}


class Keyed(TaskInput):
    label: str = "k"  #: recorded with its start and end (the test's name for its concurrency key)
    seconds: float = Field(0.3, ge=0)


@task("test_keyed", input=Keyed, queue="cpu", timeout=600, concurrency_limit=2)
def test_keyed(ctx: TaskContext, inp: Keyed) -> dict[str, int]:
    """Sleeps between a start and an end row in test_effects (clock times); at most 2 run at once
    per concurrency_key (docs/flow-control.md)."""
    record = text("INSERT INTO test_effects (task_id, key, attempt, created_at) VALUES (:t, :k, :a, clock_timestamp())")
    with ctx.transaction() as conn:
        conn.execute(record, {"t": str(ctx.task_id), "k": f"start:{inp.label}", "a": ctx.attempt})
    time.sleep(inp.seconds)
    with ctx.transaction() as conn:
        conn.execute(record, {"t": str(ctx.task_id), "k": f"end:{inp.label}", "a": ctx.attempt})
    return {"attempt": ctx.attempt}


class Rated(TaskInput):
    label: str = "r"  #: recorded with its start (the test's name for its run)


def _record_start(ctx: TaskContext, label: str) -> None:
    record = text("INSERT INTO test_effects (task_id, key, attempt, created_at) VALUES (:t, :k, :a, clock_timestamp())")
    with ctx.transaction() as conn:
        conn.execute(record, {"t": str(ctx.task_id), "k": f"start:{label}", "a": ctx.attempt})


@task("test_rated", input=Rated, queue="cpu", rate_limit="5/s")
def test_rated(ctx: TaskContext, inp: Rated) -> dict[str, int]:
    """Records its start (clock time) and returns: at most 5 admitted per second, across all
    dispatchers (docs/flow-control.md, "Rate limits")."""
    _record_start(ctx, inp.label)
    return {"attempt": ctx.attempt}


@task("test_rated_keyed", input=Rated, queue="cpu", rate_limit="2/s", rate_limit_per_key=True)
def test_rated_keyed(ctx: TaskContext, inp: Rated) -> dict[str, int]:
    """As test_rated, 2 per second per concurrency_key (tasks without a key are not limited)."""
    _record_start(ctx, inp.label)
    return {"attempt": ctx.attempt}
