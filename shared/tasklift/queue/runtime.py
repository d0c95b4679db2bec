"""The worker runtime: every long-lived object a worker process runs tasks with, in ONE object.

Built in each Celery pool process at ``worker_process_init`` (and in the worker's own process at
``worker_init`` for the solo and threads pools, which run tasks there), closed at
``worker_process_shutdown`` / ``worker_shutdown`` (:mod:`tasklift.queue.app`); the reaper builds
one for its loop (``tasklift reaper``). It holds the SQLAlchemy engines, the Redis clients (event
PUBLISH, and the broker for the reaper's dispatcher), the deferred announcer's and the heartbeats'
threads (each started at first use), the blob store and the settings it was built from.

Celery hands a task nothing but its arguments, so a task reaches the runtime of its process
through :func:`current`: the ONE holder of per-process state on the worker side. A forked child
never sees its parent's (it is forgotten in the child at fork, its pooled sockets left to the
parent) and builds its own at ``worker_process_init``; a task in a process that built none is an
error (:class:`RuntimeMissing`), never a runtime made on the spot.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Engine

from tasklift.blobs import BlobStore, open_blob_store
from tasklift.events.bus import EventAnnouncer
from tasklift.queue.broker import Broker
from tasklift.settings import Settings, database_url, redis_url
from tasklift.store.db import make_engine
from tasklift.store.repository import Event
from tasklift.tasks.context import TaskContext

log = logging.getLogger(__name__)


class RuntimeMissing(RuntimeError):
    """A task ran in a process that built no worker runtime (see the module docstring)."""


class DeferredAnnouncer:
    """The worker's announcer for task events: :meth:`announce` queues them and returns at once.

    Publishing is a wake-up, not the record: every event is committed before it is queued, and a
    listener that misses one re-reads the database. So a task's end need not wait for the Redis
    round trip: the child hands the outcome back to Celery (which acks it) while one thread per
    process sends the events, in the order they were queued, whatever was queued meanwhile (the
    next task's, a heartbeat's) in the same round trip. :meth:`flush` waits until all is sent; a
    child calls it before it exits (``worker_process_shutdown``).
    """

    def __init__(self, announcer: EventAnnouncer) -> None:
        self.announcer = announcer
        self._lock = threading.Lock()
        self._queued = threading.Condition(self._lock)
        self._drained = threading.Condition(self._lock)
        self._events: list[Event] = []
        self._sending = False
        self._thread: threading.Thread | None = None

    def announce(self, events: Iterable[Event]) -> None:
        with self._lock:
            self._events.extend(events)
            if not self._events:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tasklift-publish", daemon=True)
                self._thread.start()
            self._queued.notify()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event was sent (or given up on); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._events or self._sending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._drained.wait(left)
        return True

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._events:
                    self._queued.wait()
                batch, self._events = self._events, []
                self._sending = True
            try:
                self.announcer.announce(batch)  # logs and swallows Redis errors
            except Exception:  # noqa: BLE001 - the thread must outlive anything
                log.exception("event announce failed")
            finally:
                with self._lock:
                    self._sending = False
                    self._drained.notify_all()


#: How long a claim's status event may wait to go out together with the next one (usually the
#: outcome, in one Redis round trip): only a task still running after this is announced alone.
ANNOUNCE_AFTER_SECONDS = 0.05


class Heartbeats:
    """One long-lived thread per process that keeps the leases of its running tasks alive.

    Every ``interval`` seconds after a task was registered (and then every ``interval`` after its
    previous beat) it calls ``ctx.heartbeat()``: flush coalesced progress or renew the lease, and
    refresh the cancel flag. ``announce_after`` seconds after registration it publishes the events
    the task holds back (its claim event), unless the task published them itself meanwhile. A task
    shorter than both costs no database write, no publish of its own and no thread start.
    :meth:`unwatch` returns only once no job of that task is in flight, so the outcome is always
    recorded after the last heartbeat write.

    While tasks come and go, the thread wakes every ``min(interval, announce_after)`` by itself,
    so registering a task never has to wake it (a job may run up to that much late); after
    ``IDLE_SECONDS`` without tasks it sleeps until the next one is registered.
    """

    IDLE_SECONDS = 1.0

    def __init__(self, interval: float, announce_after: float = ANNOUNCE_AFTER_SECONDS) -> None:
        self.interval = interval
        self.announce_after = announce_after
        self._cond = threading.Condition()
        self._beat_at: dict[TaskContext, float] = {}
        self._announce_at: dict[TaskContext, float] = {}
        self._busy: TaskContext | None = None
        self._thread: threading.Thread | None = None
        self._tick = min(interval, announce_after)
        self._last_watch = 0.0
        self._asleep = True  #: waiting until notified (no timeout)

    def watch(self, ctx: TaskContext) -> None:
        now = time.monotonic()
        with self._cond:
            self._beat_at[ctx] = now + self.interval
            if ctx.holds_events:
                self._announce_at[ctx] = now + self.announce_after
            self._last_watch = now
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tasklift-heartbeat", daemon=True)
                self._thread.start()
            if self._asleep:
                self._cond.notify_all()  # all: an unwatch() of another thread may be waiting too

    def unwatch(self, ctx: TaskContext, timeout: float = 5.0) -> None:
        """Stop the task's jobs; wait (at most ``timeout``: a hung database) for one in flight."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._beat_at.pop(ctx, None)
            self._announce_at.pop(ctx, None)
            while self._busy is ctx:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("heartbeat of %s still running after %g s; recording the outcome", ctx.task_id, timeout)
                    break
                self._cond.wait(left)

    def _next(self) -> tuple[float, TaskContext, bool] | None:
        """The earliest job: (when, task, is_announce)."""
        jobs = [(when, ctx, True) for ctx, when in self._announce_at.items()]
        jobs += [(when, ctx, False) for ctx, when in self._beat_at.items()]
        return min(jobs, key=lambda job: job[0], default=None)

    def _run(self) -> None:
        with self._cond:
            self._asleep = False
            while True:
                now = time.monotonic()
                job = self._next()
                if job is None or job[0] > now:
                    if job is None and now - self._last_watch > self.IDLE_SECONDS:
                        self._asleep = True
                        self._cond.wait()
                        self._asleep = False
                    else:
                        self._cond.wait(min(self._tick, (job[0] if job else now + self._tick) - now))
                    continue
                _, ctx, announce = job
                if announce:
                    del self._announce_at[ctx]
                else:  # not rescheduled yet: parks the task until this beat is done
                    self._beat_at[ctx] = float("inf")
                self._busy = ctx
                self._cond.release()
                try:
                    if announce:
                        ctx.announce()
                    else:
                        ctx.heartbeat()
                except Exception as exc:  # noqa: BLE001 - a database blip must not kill the task
                    log.warning("heartbeat for %s failed: %s", ctx.task_id, exc)
                finally:
                    self._cond.acquire()
                    self._busy = None
                    if not announce and ctx in self._beat_at:  # still watched
                        self._beat_at[ctx] = time.monotonic() + self.interval
                    self._cond.notify_all()


@dataclass(eq=False)
class WorkerRuntime:
    """What a worker process (or the reaper) holds: see the module docstring. Make it with :meth:`open`."""

    settings: Settings
    engine: Engine  #: transactions (a retry's requeue, a hand-back, ctx.transaction(), the reaper's sweeps)
    writer: Engine  #: autocommit, for the one-statement writes (claim, heartbeat, progress, log, outcome)
    announcer: EventAnnouncer  #: Redis PUBLISH, in the caller's thread (the reaper's events)
    events: DeferredAnnouncer  #: the tasks' events, sent by a thread of their own
    heartbeats: Heartbeats
    broker: Broker  #: sync Redis for the reaper's dispatcher (connects on first use)
    blobs: BlobStore

    @classmethod
    def open(cls, settings: Settings) -> WorkerRuntime:
        """Build the runtime; nothing connects until it is used, no thread starts until needed."""
        url = database_url(settings)
        engine = make_engine(url, settings.db_pool_size)
        writer = make_engine(url, settings.db_pool_size, autocommit=True)
        announcer = EventAnnouncer(redis_url())
        return cls(
            settings,
            engine,
            writer,
            announcer,
            DeferredAnnouncer(announcer),
            Heartbeats(settings.heartbeat_seconds),
            Broker(redis_url()),
            open_blob_store(settings),
        )

    def close(self, timeout: float = 5.0) -> None:
        """Send the task events still queued (at most ``timeout`` s), then close the clients and
        engines, in reverse order of building. The heartbeat thread is a daemon with nothing left
        to watch once no task runs."""
        if not self.events.flush(timeout):
            log.warning("task events still unsent after %g s; listeners will catch up from the database", timeout)
        self.broker.close()
        self.announcer.close()
        self.writer.dispose()
        self.engine.dispose()

    def forget_after_fork(self) -> None:
        """In a forked child: drop the pooled connections without closing them (they are the parent's)."""
        self.writer.dispose(close=False)
        self.engine.dispose(close=False)


#: THE per-process holder (see the module docstring): set by :func:`install`, read by :func:`current`.
_process: WorkerRuntime | None = None


def install(runtime: WorkerRuntime) -> None:
    """Make ``runtime`` this process's (the worker's process-init signal; the reaper at start)."""
    global _process
    _process = runtime


def current() -> WorkerRuntime:
    """This process's runtime; :class:`RuntimeMissing` if it built none."""
    if _process is None:
        raise RuntimeMissing("no worker runtime in this process: worker_process_init (or the reaper) builds it")
    return _process


def close(timeout: float = 5.0) -> None:
    """Close this process's runtime, if it has one, and forget it (process shutdown)."""
    global _process
    found, _process = _process, None
    if found is not None:
        found.close(timeout)


def _forget_in_child() -> None:
    global _process
    found, _process = _process, None
    if found is not None:
        found.forget_after_fork()


os.register_at_fork(after_in_child=_forget_in_child)
