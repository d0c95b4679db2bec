"""Task types the benchmarks submit (loaded with TASKLIFT_TASK_MODULES='["bench_tasks"]').

``local/bench`` goes on PYTHONPATH for the API and worker processes; this module is not part of
the installed package.
"""

from __future__ import annotations

import time

from pydantic import Field

from tasklift import TaskContext, task
from tasklift.tasks.registry import TaskInput


class Noop(TaskInput):
    pass


class Ticker(TaskInput):
    seconds: float = Field(10.0, gt=0, le=120)
    hz: float = Field(10.0, gt=0, le=100)


@task("bench_noop", input=Noop, queue="cpu")
def bench_noop(ctx: TaskContext, inp: Noop) -> dict[str, bool]:
    """Zero work: what is measured is tasklift's own cost per task."""
    return {"ok": True}


@task("bench_ticker", input=Ticker, queue="cpu", timeout=300)
def bench_ticker(ctx: TaskContext, inp: Ticker) -> dict[str, int]:
    """Emits ``hz`` progress events per second for ``seconds``; each message is its emit time.

    The message is ``time.time()`` just before ``ctx.progress`` (so the measured latency includes
    the database write and the Redis publish). Ticks stay on a fixed schedule, not sleep-after.
    """
    ticks = max(1, int(inp.seconds * inp.hz))
    period = 1.0 / inp.hz
    start = time.monotonic()
    for i in range(ticks):
        delay = start + i * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        ctx.progress(current=i + 1, total=ticks, message=f"{time.time():.6f}")
    return {"ticks": ticks}


@task("bench_idle", input=Noop, queue="io")
def bench_idle(ctx: TaskContext, inp: Noop) -> dict[str, bool]:
    """Never runs in the benchmarks (no worker consumes the io queue there): its streams stay idle."""
    return {"ok": True}


class PeerWork(TaskInput):
    kind: str = Field("noop", pattern="^(noop|sleep)$")


@task("peer_work", input=PeerWork, queue="cpu")
def peer_work(ctx: TaskContext, inp: PeerWork) -> dict[str, bool]:
    """local/bench/peers/run.py's task, the same on every peer: note the start, then no work or 100 ms."""
    from peers.apps.stamp import stamp

    stamp(ctx.task_id)
    if inp.kind == "sleep":
        time.sleep(0.1)
    return {"ok": True}


@task("bench_ruled", input=Noop, queue="cpu", concurrency_limit=1000, rate_limit="100000/s")
def bench_ruled(ctx: TaskContext, inp: Noop) -> dict[str, bool]:
    """Zero work under every flow rule (local/bench/flow_drain.py): a concurrency limit per key and
    a rate limit, both too wide to bind, so what is measured is what the rules cost."""
    return {"ok": True}
