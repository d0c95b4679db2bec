"""Publishing tasks to Celery, and the outbox dispatcher that guarantees it happens.

A submit commits the task and its outbox row together, then publishes inline and marks the row
published. If the process dies or Redis is down in between, the row stays unpublished and the
dispatcher (``tasklift reaper``) publishes it once ``available_at`` passes. A message published
twice is harmless: the worker's claim is a compare-and-set and drops the second delivery.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

import redis
from sqlalchemy import Engine

from tasklift import telemetry
from tasklift.queue.app import celery_app, redis_url
from tasklift.store import repository as repo
from tasklift.tasks.registry import get_task_type

log = logging.getLogger(__name__)

_epoch_lock = threading.Lock()
_epoch: tuple[float, str | None] = (0.0, None)


@dataclass(frozen=True)
class Dispatch:
    """What a message needs: the task, its queue and type (for its time limit), and its trace."""

    task_id: uuid.UUID
    queue: str
    task_type: str
    traceparent: str | None = None  #: the task's stored W3C traceparent; None = the current span


def publish(item: Dispatch) -> None:
    """Send ``tasklift.run(task_id)`` with Celery's task id equal to ours. Raises on broker errors."""
    ttype = get_task_type(item.task_type)
    timeout = ttype.timeout if ttype else None
    with telemetry.publishing(item.task_id, item.queue, item.traceparent) as trace_headers:
        celery_app.send_task(
            "tasklift.run",
            args=[str(item.task_id)],
            task_id=str(item.task_id),
            queue=item.queue,
            routing_key=item.queue,
            soft_time_limit=timeout,
            time_limit=None if timeout is None else timeout + 30,
            retry=False,  # the outbox retries; a blocking retry here would stall the HTTP response
            headers=trace_headers,  # W3C traceparent: the worker's span continues the task's trace
        )


@cache
def _client_for(pid: int) -> redis.Redis:
    return redis.Redis.from_url(redis_url(), socket_timeout=2, socket_connect_timeout=2)


def _epoch_client() -> redis.Redis:
    return _client_for(os.getpid())


def broker_epoch(max_age: float = 2.0) -> str | None:
    """The Redis server's ``run_id``: it changes when Redis restarts (and may have lost messages)."""
    global _epoch
    now = time.monotonic()
    with _epoch_lock:
        if now - _epoch[0] < max_age and _epoch[1] is not None:
            return _epoch[1]
    try:
        # A plain redis-py client (it reconnects by itself); kombu's pooled connection can stay
        # broken after a Redis restart, which is exactly when the epoch matters.
        run_id = str(_epoch_client().info("server")["run_id"])
    except redis.RedisError as exc:
        log.debug("could not read the broker epoch: %s", exc)
        return None
    with _epoch_lock:
        _epoch = (now, run_id)
    return run_id


def publish_after_commit(engine: Engine, items: Iterable[Dispatch]) -> bool:
    """Publish freshly committed tasks and mark them; on failure leave them to the dispatcher."""
    items = list(items)
    try:
        for item in items:
            publish(item)
    except Exception as exc:  # noqa: BLE001 - the broker may be down; the outbox has the task
        log.warning("publish failed, the dispatcher will retry from the outbox: %s", exc)
        return False
    _marker_for(os.getpid()).add(engine, [i.task_id for i in items], broker_epoch())
    return True


class PublishedMarker(threading.Thread):
    """Marks outbox rows published in batches, off the request path.

    A lost or late mark only means the dispatcher publishes the task again after the grace period,
    and the worker's claim drops the duplicate. So the mark needs no synchronous commit and no
    round trip of its own per request: one UPDATE covers everything published in ~50 ms. (On hosts
    that freeze the process between invocations, the marks wait for the next invocation.)
    """

    def __init__(self) -> None:
        super().__init__(name="tasklift-outbox-marker", daemon=True)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: list[tuple[Engine, uuid.UUID, str | None]] = []
        self.start()
        atexit.register(self.flush)

    def add(self, engine: Engine, task_ids: list[uuid.UUID], epoch: str | None) -> None:
        with self._lock:
            self._pending.extend((engine, task_id, epoch) for task_id in task_ids)
        self._wake.set()

    def run(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(0.05)  # let a burst gather into one UPDATE
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        groups: dict[tuple[Engine, str | None], list[uuid.UUID]] = {}
        for engine, task_id, epoch in batch:
            groups.setdefault((engine, epoch), []).append(task_id)
        for (engine, epoch), ids in groups.items():
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                    repo.mark_published(conn, ids, epoch)
            except Exception as exc:  # noqa: BLE001 - harmless: the dispatcher re-sends, the claim dedupes
                log.warning("could not mark %d tasks published (they may be sent twice): %s", len(ids), exc)


@cache
def _marker_for(pid: int) -> PublishedMarker:
    return PublishedMarker()


def dispatch_due(engine: Engine, limit: int = 500) -> int:
    """Publish outbox rows whose time has come. Returns how many were published."""
    epoch = broker_epoch()
    with engine.begin() as conn:
        if epoch is not None:
            lost = repo.republish_lost_epochs(conn, epoch)
            if lost:
                log.warning("redis restarted (run_id %s): re-sending %d unclaimed tasks", epoch, lost)
    with engine.begin() as conn:
        rows = repo.take_due_outbox(conn, limit)
        sent: list[uuid.UUID] = []
        for row in rows:
            try:
                publish(Dispatch(row["task_id"], row["queue"], row["task_type"], row["traceparent"]))
            except Exception as exc:  # noqa: BLE001
                log.warning("dispatcher: broker unavailable, will retry: %s", exc)
                break
            sent.append(row["task_id"])
        if sent:
            # Marked in the same transaction that locked the rows: a crash before commit re-sends.
            repo.mark_published(conn, sent, epoch)
    return len(sent)
