"""Publishing tasks to Celery from the API's event loop: :class:`Enqueuer`.

A submit commits the task and its outbox row together, then publishes inline and marks the row
published. If the process dies or Redis is down in between, the row stays unpublished and the
dispatcher (``tasklift reaper``, :mod:`tasklift.queue.broker`) publishes it once ``available_at``
passes. A message published twice is harmless: the worker's lease is a compare-and-set and drops
the second delivery.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from tasklift import telemetry
from tasklift.queue import _compat
from tasklift.store import aio
from tasklift.store import repository as repo
from tasklift.store.repository import Dispatch

log = logging.getLogger(__name__)


class BrokerEpoch:
    """The Redis server's ``run_id`` as last read, for ``max_age`` seconds: it changes when Redis
    restarts (and may have lost messages). One per runtime, shared by its sync :class:`Broker`
    and its :class:`Enqueuer`, so either's reading serves both."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read: tuple[float, str | None] = (0.0, None)

    def cached(self, now: float, max_age: float) -> str | None:
        with self._lock:
            return self._read[1] if now - self._read[0] < max_age else None

    def remember(self, now: float, info: dict[str, object]) -> str:
        run_id = str(info["run_id"])
        with self._lock:
            self._read = (now, run_id)
        return run_id


@dataclass(frozen=True)
class _Submit:
    task: repo.NewTask
    item: Dispatch
    message: bytes


async def _insert_submits(conn: Any, submits: list[_Submit]) -> list[Any]:
    return await aio.insert_many(conn, [submit.task for submit in submits])


def _message(item: Dispatch) -> bytes:
    """The message Celery would send for ``item``, with its producer span (under the caller's)."""
    with telemetry.publishing(item.task_id, item.queue, item.traceparent) as trace_headers:
        return _compat.task_message(item.task_id, item.queue, item.task_type, trace_headers)


class Enqueuer:
    """Commits the API's submits, sends their messages and marks their outbox rows published.

    One per API runtime, on its event loop: its Redis client (redis.asyncio connections are bound
    to their loop) and the submits' gatherer of its :class:`~tasklift.store.aio.AsyncStore`.


    A batch goes out as one LPUSH per queue: ``LPUSH q m1 m2 m3`` leaves the list as three
    separate LPUSHes would, so workers (popping from the other end) still take the messages in
    submit order. :meth:`send` returns once the commands are written to Redis's socket; Redis's
    replies are read by a task of their own (:meth:`_confirm`), so the submits that wait for
    :meth:`send` do not also wait a round trip and a turn of the busy event loop for an answer
    that changes nothing for them: their tasks are committed with their outbox rows, and a
    message that never arrives is sent again by the dispatcher. Once Redis has confirmed a
    batch, its outbox rows are marked published by one UPDATE, on the loop, after a short pause
    that lets further batches join it (:data:`MARK_DELAY`): a lost mark only means a duplicate
    delivery later, which the claim drops, so nobody waits for it.
    """

    MARK_DELAY = 0.05
    #: Seconds to write a batch to Redis, and again for Redis to confirm it.
    TIMEOUT = 2.0

    def __init__(self, url: str, store: aio.AsyncStore, epochs: BrokerEpoch) -> None:
        # No socket timeout: with one, redis-py writes every command through asyncio.wait_for, a
        # task and a turn of the loop each. The callers bound their waits with asyncio.timeout.
        self.client = aioredis.Redis.from_url(url, socket_timeout=None, socket_connect_timeout=2)
        self.store = store
        self.epochs = epochs
        self._submits = aio.Gathered(store, _insert_submits, self._enqueue_submits)
        self._marks: dict[str | None, list[tuple[uuid.UUID, int]]] = {}  # broker epoch → intents to mark
        self._marker: asyncio.Task[None] | None = None  # held: the loop keeps only weak references
        self._confirming: set[asyncio.Task[None]] = set()  # held, as above

    async def submit(self, task: repo.NewTask, item: Dispatch) -> Any:
        """Commit a new task, then publish it and mark it published (:meth:`enqueue`'s path).

        The submits in flight together share one INSERT (one commit), and the moment it commits,
        one LPUSH per queue carrying all of their messages is written to Redis; only then do their
        callers resume. So a 202 means "durable, and (normally) on its way to the broker", with one
        round trip to PostgreSQL per batch, none to Redis (its answer is read afterwards, see
        :meth:`send`) and none of the callers' turns in between. The message (and its producer
        span) is made before the INSERT, under the caller's span. Returns the task's row.
        """
        return await self._submits.call(_Submit(task, item, _message(item)))

    async def enqueue(self, items: Iterable[Dispatch]) -> None:
        """Publish tasks committed on the event loop, and have them marked.

        The same sending as :meth:`submit`'s batches; on a broker failure the tasks stay in the
        outbox for the dispatcher. Never raises for the broker.
        """
        batch = [(item, _message(item)) for item in items]
        if batch:
            await self.send(batch)

    async def turn(self) -> None:
        """Before a submit's work: let a submit statement that has enough callers start first."""
        await self._submits.turn()

    async def _enqueue_submits(self, submits: list[_Submit], _rows: list[Any]) -> None:
        # A delayed task (or any, under an admission window) waits for the dispatcher: docs/flow-control.md.
        await self.send([(submit.item, submit.message) for submit in submits if submit.task.inline])

    async def epoch(self, max_age: float = 2.0) -> str | None:
        """:meth:`Broker.epoch` on the event loop (the same :class:`BrokerEpoch`)."""
        now = time.monotonic()
        if (cached := self.epochs.cached(now, max_age)) is not None:
            return cached
        try:
            async with asyncio.timeout(2):
                return self.epochs.remember(now, await self.client.info("server"))
        except (redis.RedisError, TimeoutError) as exc:
            log.debug("could not read the broker epoch: %s", exc)
            return None

    async def aclose(self) -> None:
        """Write the pending outbox marks, then close the Redis client (the runtime's shutdown,
        before the store closes: the marks go through it)."""
        await self.mark_now()
        await self.client.aclose()

    async def send(self, batch: list[tuple[Dispatch, bytes]]) -> None:
        """Write one LPUSH per queue for ``batch`` now; its confirmation and outbox marks follow."""
        queues: dict[str, list[bytes]] = {}
        for item, message in batch:
            queues.setdefault(item.queue, []).append(message)
        pool = self.client.connection_pool
        try:
            async with asyncio.timeout(self.TIMEOUT):
                conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        except Exception as exc:  # noqa: BLE001 - the broker may be down; the outbox has the tasks
            log.warning("publish failed, the dispatcher will retry from the outbox: %s", exc)
            return
        try:
            async with asyncio.timeout(self.TIMEOUT):  # (the client has no socket timeout: no task per write)
                commands = [("LPUSH", queue, *messages) for queue, messages in queues.items()]
                await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
        except BaseException as exc:
            await self._drop(pool, conn, exc, "publish failed")
            return
        confirm = asyncio.get_running_loop().create_task(
            self._confirm(pool, conn, len(commands), [item.intent for item, _ in batch])
        )
        self._confirming.add(confirm)
        confirm.add_done_callback(self._confirming.discard)

    async def _confirm(self, pool: Any, conn: Any, replies: int, sent: list[tuple[uuid.UUID, int]]) -> None:
        """Read Redis's answers to one :meth:`send`, then have its outbox rows marked."""
        try:
            for _ in range(replies):
                if await conn.read_response(timeout=self.TIMEOUT) is None:
                    raise TimeoutError(f"no answer from Redis within {self.TIMEOUT:g} s")
        except BaseException as exc:
            await self._drop(pool, conn, exc, "publish not confirmed")
            return
        await pool.release(conn)
        self._mark_later(sent, await self.epoch())

    @staticmethod
    async def _drop(pool: Any, conn: Any, exc: BaseException, what: str) -> None:
        """Close ``conn`` (never reuse a connection whose exchange broke off) and give it back; log
        ``exc``, or raise it again if it is not an error (a cancellation)."""
        await conn.disconnect(nowait=True)
        await pool.release(conn)
        if not isinstance(exc, Exception):
            raise exc
        log.warning("%s, the dispatcher will send the tasks from the outbox: %s", what, exc)

    async def mark_now(self) -> None:
        """Wait for the pending confirmations and marks (shutdown: before the pools close)."""
        while self._confirming or self._marker is not None:
            if self._confirming:
                await asyncio.wait(set(self._confirming))
            elif self._marker is not None:
                await self._marker

    def _mark_later(self, sent: list[tuple[uuid.UUID, int]], epoch: str | None) -> None:
        self._marks.setdefault(epoch, []).extend(sent)
        if self._marker is None:
            self._marker = asyncio.get_running_loop().create_task(self._mark())

    async def _mark(self) -> None:
        try:
            await asyncio.sleep(self.MARK_DELAY)  # let the next batches join this UPDATE
            marks, self._marks = self._marks, {}
            for epoch, sent in marks.items():
                try:
                    await self.store.mark_published(sent, epoch)
                except Exception as exc:  # noqa: BLE001 - harmless: the dispatcher re-sends, the claim dedupes
                    log.warning("could not mark %d tasks published (they may be sent twice): %s", len(sent), exc)
        finally:
            self._marker = None
            if self._marks:  # marks that arrived while this UPDATE ran
                self._marker = asyncio.get_running_loop().create_task(self._mark())
