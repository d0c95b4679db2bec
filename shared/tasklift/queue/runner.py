"""Execute one task attempt: take its lease (a compare-and-set), run with a TaskContext, record the end.

The runner holds no state between calls. Every write it makes is fenced by the attempt number the
lease recorded, so a worker whose lease was taken over cannot overwrite the new attempt's work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import uuid
from typing import Any

from billiard.common import TERM_SIGNAL
from billiard.exceptions import SoftTimeLimitExceeded
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError

from tasklift import telemetry
from tasklift.blobs import claims
from tasklift.queue import runtime
from tasklift.store import concurrency, leases
from tasklift.store.db import retry_transient
from tasklift.tasks.context import Cancelled, LeaseLost, TaskContext
from tasklift.tasks.registry import TaskType, get_task_type
from tasklift.tasks.states import TaskStatus
from tasklift.tasks.waits import Suspended

log = logging.getLogger(__name__)

# --- soft shutdown: hand a still-running attempt back --------------------------------------------
#
# `tasklift worker` maps SIGTERM to Celery's cold shutdown (REMAP_SIGTERM=SIGQUIT, cli/server.py):
# the worker stops taking tasks, lets running ones go on for worker_soft_shutdown_timeout
# (TASKLIFT_SOFT_SHUTDOWN_SECONDS), then cancels each one by sending its pool process billiard's
# TERM_SIGNAL (SIGQUIT under the remap), whose handler there exits the process (SystemExit).
# tasklift's handler, put in front of billiard's, turns it into HandBack inside the task function
# instead, and the runner records the hand-back; outside a task it defers to billiard's handler.


class HandBack(BaseException):  # noqa: N818 - like KeyboardInterrupt: task code must not swallow it
    """The worker's soft shutdown is over while this attempt runs: hand the task back to the queue."""


class ShutdownCancel:
    """This process's handling of the cancel signal (one per prefork pool process)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """The state of a new process (also a forked child's: os.register_at_fork)."""
        self.pool_process = False  #: set in a prefork pool process (worker_process_init)
        self.installed = False
        self.previous: Any = None  #: billiard's handler, installed after worker_process_init
        self.in_execute = False  #: between claim and recorded outcome
        self.in_task = False  #: inside the task function: only then is HandBack raised
        self.requested = False  #: the signal came outside the task function: hand back before it starts

    def install(self) -> None:
        """Put the handler in front of billiard's: at the first task of a pool process, after billiard
        set its own. Only when SIGTERM is remapped: otherwise Celery cancels with SIGTERM, which must
        go on killing at once (the reaper's cancel enforcement revokes with SIGTERM)."""
        self.installed = True
        if self.pool_process and TERM_SIGNAL != signal.SIGTERM:
            self.previous = signal.signal(TERM_SIGNAL, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.in_task:
            raise HandBack()
        if self.in_execute:  # claiming, or recording the outcome: let that finish
            self.requested = True
            return
        if callable(self.previous):
            self.previous(signum, frame)
        elif self.previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def call(self, ttype: TaskType, ctx: TaskContext, inp: Any) -> Any:
        """Run the task function, where the cancel signal raises :class:`HandBack`."""
        self.in_task = True
        try:
            if self.requested:
                raise HandBack()
            return ttype.func(ctx, inp)
        finally:
            self.in_task = False


shutdown_cancel = ShutdownCancel()
os.register_at_fork(after_in_child=shutdown_cancel.reset)


class LeaseNotRecorded(Exception):  # noqa: N818
    """The database could not record the lease; the delivery must be requeued, not acked."""


def error_of(exc: BaseException) -> dict[str, Any]:
    """The client-facing error: a type and a message, never a stack trace."""
    return {"type": type(exc).__name__, "message": str(exc) or type(exc).__name__}


def retry_delay(ttype: TaskType, failures: int) -> float:
    """Exponential back-off with 'equal jitter': half fixed, half random (AWS architecture blog)."""
    cap: float = min(ttype.backoff_max, ttype.backoff_base * 2 ** max(0, failures - 1))
    return cap / 2 + random.uniform(0, cap / 2)


def to_jsonable(value: Any) -> Any:
    """Task return values may be pydantic models, dicts or plain JSON values."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


@telemetry.traced_run  # the consumer span: its parent travels in the message headers
def execute(task_id_str: str, worker: str) -> None:
    """Claim and run one delivery of ``tasklift.run``."""
    if not shutdown_cancel.installed:
        shutdown_cancel.install()
    shutdown_cancel.in_execute = True
    try:
        _execute(task_id_str, worker)
    finally:
        shutdown_cancel.in_execute = False


def _execute(task_id_str: str, worker: str) -> None:
    rt = runtime.current()
    settings = rt.settings
    # Claim, heartbeat, progress, log lines and the outcome are one statement each (autocommit);
    # ctx.transaction() and a retry's requeue need real transactions (the default engine).
    writer = rt.writer
    try:
        task_id = uuid.UUID(task_id_str)
    except ValueError:
        log.error("dropping a message with a malformed task id %r", task_id_str)
        return

    def take_lease() -> Any:
        # The span keeps its name "tasklift.claim": it is part of the trace contract.
        with telemetry.span("tasklift.claim"), writer.connect() as conn:
            return leases.take_lease(conn, task_id, f"{worker}:{os.getpid()}", settings.lease_seconds)

    def take_keyed_lease() -> tuple[Any, bool]:
        # A task limited by a concurrency key: its key's lock, the counted lease, or a re-arm.
        with telemetry.span("tasklift.claim"), rt.engine.begin() as conn:
            return concurrency.take_keyed_lease(conn, task_id, f"{worker}:{os.getpid()}", settings.lease_seconds)

    try:
        claimed = retry_transient(take_lease)
        if claimed is None:
            claimed, rearmed = retry_transient(take_keyed_lease)
            if rearmed:
                log.info("task %s: refused, its concurrency key is at its limit (or it is not due); re-armed", task_id)
                return
    except DBAPIError as exc:
        # Never ack a delivery we could not record: the message goes back to the queue.
        raise LeaseNotRecorded(f"task {task_id}: the lease could not be recorded ({type(exc).__name__})") from exc
    if claimed is None:
        # Already running elsewhere (live lease), finished, cancelled, unknown, its queue paused, not
        # due yet or past its expires_at (docs/flow-control.md): drop the delivery.
        log.info("task %s: delivery dropped, it is not PENDING (or not due, or expired)", task_id)
        return
    row, event = claimed
    attempt = row["attempts"]
    telemetry.task_started(row)  # attempt and type on the span and log lines; queue-wait metric
    ttype = get_task_type(row["task_type"])
    ctx = TaskContext(
        task_id=task_id,
        attempt=attempt,
        task_type=row["task_type"],
        engine=rt.engine,
        writer=writer,
        announcer=rt.events,
        lease_seconds=settings.lease_seconds,
        progress_interval=settings.progress_interval_seconds,
        version=ttype.version if ttype is not None else "1",
        blobs=rt.blobs,
        output_interval=settings.output_flush_seconds,
        output_bytes=settings.output_flush_bytes,
    )
    # The claim event goes out with the task's next event (its outcome, for a short task: one
    # PUBLISH round trip instead of two), or after ANNOUNCE_AFTER_SECONDS by the heartbeat thread.
    ctx.hold(event)
    if ttype is None:
        _finish(rt, ctx, TaskStatus.FAILED, error={"type": "UnknownTaskType", "message": row["task_type"]})
        return
    rt.heartbeats.watch(ctx)
    try:
        outcome = _run(rt, ctx, ttype, row)
    finally:
        ctx.close_output()  # the last chunks before the outcome: a stream sees them before its end
        rt.heartbeats.unwatch(ctx)
    outcome()


def _run(rt: runtime.WorkerRuntime, ctx: TaskContext, ttype: TaskType, row: Any) -> Any:
    """Run the task function; returns a thunk that records the outcome after the heartbeat stops."""
    try:
        # Claim check: a large input comes back from blob storage before validation, so the task
        # function sees the same input either way; a large result goes there before it is recorded.
        inp = ttype.input_model.model_validate(claims.check_out(row["input"], rt.blobs))
        value = to_jsonable(shutdown_cancel.call(ttype, ctx, inp))
        result = claims.check_in(value, claims.result_key(ctx.task_id, ctx.attempt), rt.blobs)
    except HandBack:
        return lambda: _hand_back(rt, ctx)
    except Suspended as suspended:  # WAITING is recorded (ctx.wait_for / ctx.sleep): announce it, nothing more
        event = suspended.event
        return lambda: _suspended(ctx, event)
    except Cancelled:
        return lambda: _finish(rt, ctx, TaskStatus.CANCELLED)
    except LeaseLost:
        return lambda: None
    except SoftTimeLimitExceeded:
        error = {"type": "TimeLimitExceeded", "message": f"the task ran longer than {ttype.timeout:g} s"}
        return lambda: _finish(rt, ctx, TaskStatus.FAILED, error=error)
    except ValidationError as exc:
        error = {"type": "InvalidInput", "message": str(exc)}
        return lambda: _finish(rt, ctx, TaskStatus.FAILED, error=error)
    except Exception as exc:  # noqa: BLE001 - any task error is recorded, not raised to Celery
        log.exception("task %s attempt %s failed", ctx.task_id, ctx.attempt)
        failure = exc  # `exc` is unbound once the except block ends
        return lambda: _fail_or_retry(rt, ctx, ttype, row, failure)
    return lambda: _finish(rt, ctx, TaskStatus.SUCCESS, result=result)


def _finish(
    rt: runtime.WorkerRuntime,
    ctx: TaskContext,
    status: TaskStatus,
    *,
    result: Any = None,
    error: dict[str, Any] | None = None,
) -> None:
    ctx.flush()
    progress = ctx.last_progress
    if status == TaskStatus.SUCCESS:
        progress = {**(progress or {"current": None, "total": None, "message": None}), "percent": 100.0}

    def record() -> Any:
        with telemetry.span("tasklift.finish", outcome=status.value), rt.writer.connect() as conn:
            return leases.finish(conn, ctx.task_id, ctx.attempt, status, result=result, error=error, progress=progress)

    done = retry_transient(record)
    if done is None:
        done = _recorded_outcome(rt, ctx, status, result, error)
        if done is None:
            log.warning("task %s attempt %s: outcome %s refused (lease lost)", ctx.task_id, ctx.attempt, status)
            claims.discard(result, rt.blobs)  # nothing will ever point to this attempt's result blob
            return
        log.info("task %s attempt %s: %s stored by a try whose reply was lost", ctx.task_id, ctx.attempt, status)
    ctx.announce([done[1]])
    telemetry.task_finished(ctx.task_type, status.value)


def _suspended(ctx: TaskContext, event: Any) -> None:
    log.info("task %s attempt %s is WAITING; its worker is free", ctx.task_id, ctx.attempt)
    ctx.announce([event])
    telemetry.task_finished(ctx.task_type, TaskStatus.WAITING.value)


def _recorded_outcome(rt: runtime.WorkerRuntime, ctx: TaskContext, status: TaskStatus, result: Any, error: Any) -> Any:
    """(row, its last event) if the stored outcome is exactly this attempt's own, else None.

    A try whose COMMIT went through but whose reply was lost (PostgreSQL restarting, a dropped
    connection) is retried, and the retry is refused: the task is no longer RUNNING. That refusal
    must not discard the result blob the committed row points to.
    """

    def read() -> Any:
        with rt.engine.connect() as conn:
            row = leases.get_task(conn, ctx.task_id)
            if row is None or (row["status"], row["attempts"], row["result"], row["error"]) != (
                status.value,
                ctx.attempt,
                result,
                error,
            ):
                return None
            events = leases.events_after(conn, ctx.task_id, row["last_seq"] - 1, 1)
            return (row, events[0]) if events else None

    return retry_transient(read)


def _hand_back(rt: runtime.WorkerRuntime, ctx: TaskContext) -> None:
    """RUNNING → PENDING, due at once (fenced by the attempt): another worker finishes the task."""
    window = rt.settings.soft_shutdown_seconds
    note = f"attempt {ctx.attempt} handed back: its worker shut down after a {window} s soft shutdown"
    with contextlib.suppress(LeaseLost):
        ctx.flush()

    def record() -> Any:
        with telemetry.span("tasklift.finish", outcome="HANDBACK"), rt.engine.begin() as conn:
            done = leases.hand_back(conn, ctx.task_id, ctx.attempt, window=window)
            return done, leases.append_log(conn, ctx.task_id, None, "WARNING", note) if done else None

    done, log_event = retry_transient(record)
    if done is None:
        log.warning("task %s attempt %s: hand-back refused (lease lost)", ctx.task_id, ctx.attempt)
        return
    log.warning("task %s attempt %s handed back (soft shutdown over)", ctx.task_id, ctx.attempt)
    ctx.announce([done[1], *([log_event] if log_event else [])])
    telemetry.task_handed_back(ctx.task_type)
    telemetry.task_finished(ctx.task_type, "HANDBACK")


def _fail_or_retry(rt: runtime.WorkerRuntime, ctx: TaskContext, ttype: TaskType, row: Any, exc: BaseException) -> None:
    failures = leases.failures(row)
    if isinstance(exc, ttype.retry_on) and failures <= row["max_retries"]:
        delay = retry_delay(ttype, failures)
        ctx.flush()
        error = {**error_of(exc), "retry_in_seconds": round(delay, 2)}
        note = f"attempt {ctx.attempt} failed ({error['type']}); retry in {delay:.1f} s"

        def record() -> Any:
            with telemetry.span("tasklift.finish", outcome="RETRY"), rt.engine.begin() as conn:
                requeued = leases.requeue(conn, ctx.task_id, ctx.attempt, error=error, delay=delay)
                return requeued, leases.append_log(conn, ctx.task_id, None, "WARNING", note) if requeued else None

        done, log_event = retry_transient(record)
        if done is not None:
            ctx.announce([done[1], *([log_event] if log_event else [])])
            telemetry.task_finished(ctx.task_type, "RETRY")
        return
    _finish(rt, ctx, TaskStatus.FAILED, error=error_of(exc))
