"""The :class:`TaskContext` a task function receives: progress, logs, steps, output and cancellation.

Progress is durable but coalesced: calls closer together than ``progress_interval_seconds`` only
remember the latest value, which the heartbeat flushes; transitions and log lines are never
coalesced. Every call checks the durable cancel flag and raises :class:`Cancelled` once it is set.
Durable steps (:meth:`TaskContext.step`) are in :mod:`tasklift.tasks.steps`, the coalescing of output
chunks (:meth:`TaskContext.emit`) in :mod:`tasklift.tasks.output`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from tasklift.blobs import claims
from tasklift.store.repository import Announcer, Event, RecordedStep
from tasklift.tasks.output import OutputBuffer
from tasklift.tasks.steps import StepJournal

T = TypeVar("T")

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from tasklift.blobs.store import BlobStore

# The worker's statements (tasklift.store.leases, .steps, .output, on SQLAlchemy) are imported by the methods that
# write, not with this module: task modules import TaskContext for their functions' signatures, and
# an API process imports the task modules to validate inputs, never to run them; a function package
# (the Lambda layer) has no SQLAlchemy at all (docs/deploy.md, "Package sizes").

log = logging.getLogger(__name__)


class Cancelled(Exception):  # noqa: N818 - reads as the state it reports
    """Raised inside a task when its cancellation was requested; the runner marks it CANCELLED."""


class LeaseLost(Exception):  # noqa: N818
    """This attempt no longer owns the task (its lease expired and it was handed to another)."""


class TaskContext:
    """Handed to every task function: report progress, write logs, notice cancellation."""

    def __init__(
        self,
        *,
        task_id: uuid.UUID,
        attempt: int,
        task_type: str,
        engine: Engine,
        announcer: Announcer,
        lease_seconds: float,
        progress_interval: float,
        writer: Engine | None = None,
        version: str = "1",
        blobs: BlobStore | None = None,
        output_interval: float = 0.05,
        output_bytes: int = 64 * 1024,
    ) -> None:
        """``writer`` runs the single-statement writes (progress, log, heartbeat, steps, output),
        typically an autocommit engine; ``engine`` the transactions of :meth:`transaction`.
        ``version`` is the task type's (recorded with each step), ``blobs`` keeps large step results."""
        self.task_id = task_id
        self.attempt = attempt
        self.task_type = task_type
        self._engine = engine
        self._writer = writer or engine
        self._announcer = announcer
        self._lease = lease_seconds
        self._interval = progress_interval
        self._lock = threading.Lock()
        self._pending: dict[str, Any] | None = None
        self._last_write = 0.0
        self._cancel_requested = False
        self._lease_lost = False
        self.last_progress: dict[str, Any] | None = None
        self._held: list[Event] = []
        self._announce_lock = threading.Lock()  # events go out in the order they are announced
        self._steps = StepJournal(task_id, task_type, version, blobs)
        self._output = OutputBuffer(self._write_output, output_interval, output_bytes)
        self._next_chunk: int | None = None  #: index of the next output chunk; read at the first flush
        self._in_step = False
        self._suspended = False
        self._in_transaction = False

    # --- the task author's API ---------------------------------------------------------------

    def progress(
        self,
        percent: float | None = None,
        message: str | None = None,
        *,
        current: int | None = None,
        total: int | None = None,
    ) -> None:
        """Report progress. Raises :class:`Cancelled` if the task was cancelled.

        ``percent`` defaults to ``current / total``; values are clamped to 0..100.
        """
        if percent is None and current is not None and total:
            percent = 100.0 * current / total
        value: dict[str, Any] = {
            "percent": None if percent is None else round(max(0.0, min(100.0, float(percent))), 2),
            "current": current,
            "total": total,
            "message": message,
        }
        with self._lock:
            self.last_progress = value
            self._pending = value
            due = time.monotonic() - self._last_write >= self._interval
        if due:
            self.flush()
        self.check_cancelled()

    def log(self, message: str, level: str = "INFO") -> None:
        """Append a log line to the task's durable log (never coalesced)."""

        from tasklift.store import leases
        from tasklift.store.db import retry_transient

        def write() -> Event | None:
            with self._writer.begin() as conn:
                return leases.append_log(conn, self.task_id, self.attempt, level.upper(), str(message))

        event = retry_transient(write)
        if event is None:
            self._lost()
        self.announce([event] if event else [])
        self.check_cancelled()

    def step(self, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` once per task and return its JSON result, recorded durably.

        A later run of the task (after a crash, a retry or a manual retry) returns the recorded
        result without calling ``fn``. The n-th call of one ``name`` in a run is the step ``name#n``;
        names and their order must be deterministic for the input. A step that raises records
        nothing. Raises :class:`~tasklift.tasks.steps.StepVersionChanged` at the first step when
        the task's steps were recorded by another ``version`` of the task type, and
        :class:`LeaseLost` when this attempt may no longer record (docs/steps-and-output.md).
        """
        self.check_cancelled()
        if self._in_step:  # a replayed outer step would skip the inner one and shift every position after it
            raise RuntimeError(f"ctx.step({name!r}) inside another step: steps do not nest")
        from tasklift.store import steps as steps_store
        from tasklift.store.db import retry_transient

        full_name, position = self._steps.name_call(name)
        self._load_steps()
        found, value = self._steps.replay(full_name, position)
        if found:
            return value  # type: ignore[no-any-return]
        started = time.perf_counter()
        self._in_step = True
        try:
            result = fn(*args, **kwargs)
        finally:
            self._in_step = False
        duration_ms = (time.perf_counter() - started) * 1000
        record, returned = self._steps.prepare(full_name, position, self.attempt, result)

        def write() -> Any:
            with self._writer.begin() as conn:
                return steps_store.record_step(conn, self.task_id, self.attempt, record, duration_ms, self._lease)

        done = retry_transient(write)
        if done is None:
            if self._steps.blobs is not None:  # nothing will point to this attempt's result blob
                claims.discard(record.result, self._steps.blobs)
            self._lost()
            raise LeaseLost(str(self.task_id))
        seq, data, self._cancel_requested = done
        self.announce([Event(str(self.task_id), seq, "step", data)])
        return returned  # type: ignore[no-any-return]

    def _load_steps(self) -> None:
        if self._steps.loaded:
            return
        from tasklift.store import steps as steps_store
        from tasklift.store.db import retry_transient

        def load() -> list[RecordedStep]:
            with self._writer.connect() as conn:
                return steps_store.load_steps(conn, self.task_id)

        self._steps.load(retry_transient(load))

    def wait_for(self, name: str, timeout: float | None = None) -> Any:
        """Wait for the signal ``name`` (``POST /tasks/{id}/signals/{name}``) and return its JSON payload.

        Without a worker: unless the signal already came (it is kept until a wait takes it), the
        task goes WAITING and this attempt ends; the signal (or the timeout) makes it PENDING, and
        its re-run on any worker replays the finished steps and gets the payload here. Raises
        :class:`~tasklift.tasks.waits.WaitTimeout` once ``timeout`` seconds passed without the
        signal (the task may handle it). Waits are named and ordered like steps
        (docs/steps-and-output.md, "Waits and signals").
        """
        from tasklift.tasks import waits

        waits.check_signal_name(name)
        delay = None if timeout is None else waits.check_seconds(timeout, "a wait's timeout")
        return self._wait(f"wait#{name}", name, delay)

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` without holding a worker: WAITING until then, then re-run (like :meth:`wait_for`)."""
        from tasklift.tasks import waits

        self._wait("sleep#", None, waits.check_seconds(seconds, "a sleep"))

    def _wait(self, base: str, signal: str | None, delay: float | None) -> Any:
        self.check_cancelled()
        if self._in_step:
            raise RuntimeError("a wait inside a step: steps do not nest, and a step cannot be suspended")
        if self._in_transaction:  # its lock on the task row would block the wait's own
            raise RuntimeError("a wait inside ctx.transaction(): end the transaction first")
        from tasklift.store import leases
        from tasklift.store import waits as waits_store
        from tasklift.store.db import retry_transient
        from tasklift.tasks import waits

        name, position = self._steps.name_wait(base)
        self._load_steps()
        found, value = self._steps.replay(name, position)
        if found:
            return waits.outcome(value)
        self._output.flush()  # every write of this attempt is fenced on RUNNING: before it waits
        self.flush()
        self.check_cancelled()
        wait = waits_store.Wait(name, position, self._steps.version, signal, delay)

        def write() -> Any:
            with self._engine.begin() as conn:
                if not leases.lock_for_attempt(conn, self.task_id, self.attempt):
                    return "lost", None, None
                return waits_store.begin_wait(conn, self.task_id, self.attempt, wait, self._lease)

        kind, payload, event = retry_transient(write)
        if kind == "lost":
            self._lost()
            raise LeaseLost(str(self.task_id))
        if kind == "signal":  # it came before the wait began: taken, recorded, no suspension
            self.announce([event])
            return payload
        if kind == "recorded":  # a try whose reply was lost took it: the same outcome
            return waits.outcome(payload)
        self._suspended = True  # the heartbeat stops renewing a lease this attempt gave up
        raise waits.Suspended(event)

    def emit(self, chunk: Any) -> None:
        """Append ``chunk`` (text or a JSON value) to the task's ordered output stream.

        Chunks are coalesced: written as one ``output`` event per ``TASKLIFT_OUTPUT_FLUSH_SECONDS``
        (or ``TASKLIFT_OUTPUT_FLUSH_BYTES``) and when the task ends, so emitting is cheap. Raises
        :class:`LeaseLost` once a write of this attempt was refused, :class:`Cancelled` once the
        task was cancelled.
        """
        self.check_cancelled()
        self._output.add(chunk)

    def close_output(self) -> None:
        """Write the output still buffered (the runner calls it when the task function returns)."""
        self._output.close()

    def _write_output(self, chunks: list[Any]) -> None:
        if self._lease_lost:
            return  # refused anyway: this attempt no longer holds the task
        from tasklift.store import output as output_store
        from tasklift.store.db import retry_transient

        tried: dict[str, Any] = {}

        def write() -> Any:
            with self._writer.begin() as conn:
                if self._next_chunk is None:
                    self._next_chunk = output_store.last_index(conn, self.task_id) + 1
                elif tried and output_store.last_index(conn, self.task_id) >= tried["last"]:
                    # A try whose COMMIT went through but whose reply was lost: stored once is enough
                    # (its event reaches the streams by the hub's database check).
                    return tried, "stored"
                data = output_store.batch_data(self.attempt, self._next_chunk, chunks)
                tried.update(data)
                return data, output_store.append_output(conn, self.task_id, self.attempt, data, self._lease)

        data, done = retry_transient(write)
        if done == "stored":
            self._next_chunk = data["last"] + 1
            return
        if done is None:
            log.warning("task %s attempt %s: %d output chunks refused", self.task_id, self.attempt, len(chunks))
            self._lost()
            return
        seq, self._cancel_requested = done
        self._next_chunk = data["last"] + 1
        self.announce([Event(str(self.task_id), seq, "output", data)])

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A database transaction that commits only while this attempt holds the task's lease.

        The task row is locked first, so a stale attempt (whose lease was taken over) gets
        :class:`LeaseLost` instead of writing, and two attempts never write concurrently. Write
        effects here, keyed by ``ctx.task_id``, to make them exactly-once::

            with ctx.transaction() as conn:
                if not conn.execute(select(done).where(done.c.task_id == ctx.task_id)).first():
                    conn.execute(insert(done).values(task_id=ctx.task_id, ...))
        """
        from tasklift.store import leases

        with self._engine.begin() as conn:
            if not leases.lock_for_attempt(conn, self.task_id, self.attempt):
                self._lost()
                raise LeaseLost(str(self.task_id))
            self._in_transaction = True
            try:
                yield conn
            finally:
                self._in_transaction = False

    @property
    def cancel_requested(self) -> bool:
        """True once cancellation was requested (as of the last progress write or heartbeat)."""
        return self._cancel_requested

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` if cancellation was requested, :class:`LeaseLost` if fenced off."""
        if self._lease_lost:
            raise LeaseLost(str(self.task_id))
        if self._cancel_requested:
            raise Cancelled(str(self.task_id))

    # --- used by the runner ------------------------------------------------------------------

    def flush(self) -> None:
        """Write the latest coalesced progress, if any (also renews the lease)."""
        from sqlalchemy.exc import DBAPIError

        from tasklift.store import leases
        from tasklift.store.db import is_transient

        with self._lock:
            value, self._pending = self._pending, None
            if value is None:
                return
            self._last_write = time.monotonic()
        try:
            with self._writer.begin() as conn:
                done = leases.record_progress(conn, self.task_id, self.attempt, value, self._lease)
        except DBAPIError as exc:
            if not is_transient(exc):
                raise
            # The database is away: keep the value (unless a newer one came) for the next heartbeat.
            with self._lock:
                self._pending = self._pending or value
            log.warning("progress of %s not recorded yet (database unavailable)", self.task_id)
            return
        if done is None:
            self._lost()
            return
        event, self._cancel_requested = done
        self.announce([event])

    def hold(self, event: Event) -> None:
        """Keep a committed ``event`` back, to be announced with the next :meth:`announce`."""
        with self._announce_lock:
            self._held.append(event)

    @property
    def holds_events(self) -> bool:
        return bool(self._held)

    def announce(self, events: Sequence[Event] = ()) -> None:
        """Publish the held events and then ``events`` (all committed), in one round trip."""
        with self._announce_lock:
            batch, self._held = [*self._held, *events], []
            self._announcer.announce(batch)

    def heartbeat(self) -> None:
        """Flush pending progress or renew the lease, and refresh the cancel flag."""
        if self._suspended:
            return
        if self._pending is not None:
            self.flush()
            return
        from tasklift.store import leases

        with self._writer.begin() as conn:
            flag = leases.heartbeat(conn, self.task_id, self.attempt, self._lease)
        if flag is None:
            self._lost()
        else:
            self._cancel_requested = flag

    def _lost(self) -> None:
        if not self._lease_lost:
            log.warning("task %s attempt %s lost its lease; its writes are refused", self.task_id, self.attempt)
        self._lease_lost = True
