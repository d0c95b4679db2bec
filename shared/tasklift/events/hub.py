"""The per-process fan-out hub: ONE Redis pub/sub connection, however many streams it serves.

::

    worker ──commit──▶ PostgreSQL            (the record: every event, sequence-numbered)
       └────publish──▶ Redis channel tasklift:task:<id>
                          │  one connection per API process, SUBSCRIBE per watched task
                          ▼
                       EventHub ──deliver──▶ Subscription buffer (bounded) ──▶ SSE stream / long poll

Cost per event is O(watchers of that task in this process): an append and at most one wake-up
each. An idle stream costs nothing here but one timer (its pings). A stream that falls behind
(queue full) or a Redis outage never blocks anyone: the subscription receives :data:`RESYNC` and the stream re-reads the
database from its last sequence number, so nothing is lost and nothing is sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tasklift.events.bus import CHANNEL_PREFIX, channel
from tasklift.store.aio import AsyncStore, DatabaseError
from tasklift.store.repository import Event

log = logging.getLogger(__name__)


class _Marker:
    """A control item in a subscription queue."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: Events may have been missed: re-read the log from the database.
RESYNC: Final = _Marker("RESYNC")
#: The server is shutting down: end the stream cleanly so the client reconnects elsewhere.
STOP: Final = _Marker("STOP")
#: The API key the stream was opened with has been revoked: end the stream (a reconnect is 401).
REVOKED: Final = _Marker("REVOKED")
#: Markers a full buffer keeps as they are (anything else becomes RESYNC): each ends the stream.
_FINAL = (STOP, REVOKED)


class Subscription:
    """One watcher of one task's events: a bounded buffer the hub fills and one stream drains.

    Deliberately not an :class:`asyncio.Queue` read with :func:`asyncio.wait_for`: that costs a
    Task, two futures and a timer handle per event per stream, and those short-lived objects are
    promoted by the garbage collector, whose full collections then stall every stream. Here a
    delivery appends to a deque and resolves at most one future; the timeout of :meth:`wait` is one
    timer per stream that is re-armed lazily (at most once per timeout), not one per event.
    """

    __slots__ = ("hub", "task_id", "maxsize", "key_id", "seen", "_items", "_waiter", "_deadline", "_timer", "_timer_at")

    def __init__(self, hub: EventHub, task_id: str, maxsize: int, key_id: str | None = None) -> None:
        self.hub = hub
        self.task_id = task_id
        self.maxsize = maxsize
        #: The API key its reader was admitted with: the hub's key check ends the stream once it is revoked.
        self.key_id = key_id
        #: The last sequence number its reader has (set before it waits): the hub's database check
        #: resyncs a subscription still behind the stored log a whole check period later.
        self.seen = -1
        self._items: deque[Event | _Marker] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = 0.0  #: loop time at which the current wait() times out
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  #: loop time the timer fires at

    def deliver(self, item: Event | _Marker) -> None:
        """Hand over an event without ever blocking the hub; on overflow, ask for a resync."""
        items = self._items
        if len(items) >= self.maxsize:
            # Latest-wins is not enough for logs, so drop what is queued and re-read the database
            # (STOP and REVOKED are kept as such: the stream ends either way).
            items.clear()
            item = item if item in _FINAL else RESYNC
        items.append(item)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def qsize(self) -> int:
        return len(self._items)

    def take_all(self) -> list[Event | _Marker]:
        """Everything queued now, oldest first (at most ``maxsize`` items)."""
        items = list(self._items)
        self._items.clear()
        return items

    async def wait(self, timeout: float | None) -> bool:
        """Until something is queued (True), or ``timeout`` seconds passed without anything (False)."""
        if self._items:
            return True
        loop = self.hub.loop
        waiter = self._waiter = loop.create_future()
        if timeout is None:
            self._deadline = math.inf
        else:
            self._deadline = deadline = loop.time() + timeout
            if self._timer is None or self._timer_at > deadline:
                self._arm(deadline)
        try:
            await waiter
        finally:
            if self._waiter is waiter:
                self._waiter = None
        return bool(self._items)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.hub.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._waiter is None:
            return  # not waiting: the next wait() arms the timer again
        if self.hub.loop.time() + 0.001 >= self._deadline:
            self._wake()  # timed out
        elif self._deadline != math.inf:
            self._arm(self._deadline)  # events came meanwhile: the current wait started later

    async def get(self, timeout: float | None) -> Event | _Marker | None:
        """The next event or RESYNC, or None after ``timeout`` seconds."""
        if not self._items and not await self.wait(timeout):
            return None
        return self._items.popleft()

    def close(self) -> None:
        """Stop receiving. Synchronous on purpose: it runs in ``finally`` blocks of cancelled streams,
        where any ``await`` would raise again (anyio cancellation is level-triggered) and leak."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.hub.unsubscribe(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class EventHub:
    """Fans Redis pub/sub messages out to this process's subscriptions."""

    def __init__(
        self,
        redis_url: str,
        store: AsyncStore,
        *,
        queue_size: int = 256,
        check_seconds: float | None = None,
        active_keys: Callable[[list[str]], Awaitable[set[str]]] | None = None,
        key_check_seconds: float = 10,
    ) -> None:
        """Args:
        redis_url: the Redis of the event channels.
        store: the API's asyncpg store, on this hub's loop (the database check reads through it).
        queue_size: each subscription's buffer; beyond it the subscription resyncs from the database.
        check_seconds: the period of the database check (missed events and, with ``active_keys``,
            revoked keys); None: no check.
        active_keys: those of the given API key ids still active (one query for all, on this loop).
        key_check_seconds: the least time between two key checks (they run on the check's rounds).
        """
        self._url = redis_url
        self._store = store
        self._queue_size = queue_size
        self._check_seconds = check_seconds
        self._active_keys = active_keys
        self._key_check_seconds = key_check_seconds
        self._checker: asyncio.Task[None] | None = None
        self._watchers: dict[str, set[Subscription]] = {}
        self._client: aioredis.Redis | None = None
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._connected = asyncio.Event()
        self._closed = False
        self._draining = False
        self._pending: set[asyncio.Task[None]] = set()
        self.loop = asyncio.get_running_loop()

    @property
    def subscriptions(self) -> int:
        return sum(len(s) for s in self._watchers.values())

    async def subscribe(self, task_id: str, *, key_id: str | None = None) -> Subscription:
        """Start receiving ``task_id``'s events (subscribe before reading the database: no gap); with
        ``key_id``, the API key the reader was admitted with, until that key is revoked."""
        sub = Subscription(self, task_id, self._queue_size, key_id)
        if self._draining:
            sub.deliver(STOP)
        async with self._lock:
            self._ensure_reader()
            watchers = self._watchers.setdefault(task_id, set())
            watchers.add(sub)
            if len(watchers) == 1 and self._connected.is_set():
                await self._send("subscribe", channel(task_id))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop delivering to ``sub``; the last watcher of a task has its channel unsubscribed."""
        watchers = self._watchers.get(sub.task_id)
        if not watchers or sub not in watchers:
            return
        watchers.discard(sub)
        if not watchers:
            del self._watchers[sub.task_id]
            task = self.loop.create_task(self._unsubscribe_channel(sub.task_id))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _unsubscribe_channel(self, task_id: str) -> None:
        async with self._lock:
            # A new watcher may have arrived meanwhile: then the channel stays subscribed.
            if task_id not in self._watchers and self._connected.is_set():
                await self._send("unsubscribe", channel(task_id))

    async def _send(self, command: str, name: str) -> None:
        try:
            await getattr(self._pubsub, command)(name)
        except (RedisError, OSError) as exc:  # the reader notices the broken connection and resyncs
            log.debug("pubsub %s %s failed: %s", command, name, exc)

    def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._run(), name="tasklift-event-hub")
        if self._check_seconds is not None and (self._checker is None or self._checker.done()):
            self._checker = asyncio.get_running_loop().create_task(self._check(), name="tasklift-event-hub-check")

    async def _check(self) -> None:
        """Every ``check_seconds``: ONE query for the latest sequence number of every watched task;
        a subscription still behind what was stored one period earlier is sent :data:`RESYNC`.

        Redis pub/sub is a wake-up that can be lost without anyone noticing (a frozen Redis times
        the worker's PUBLISH out while the API's subscription stays open, so no reconnect-resync
        ever happens). This check does not depend on Redis: a missed event, the terminal one
        included, reaches its streams within two periods (plus one replay read). Comparing with
        the previous round's numbers leaves an event one period to arrive live, so a publish
        still in flight causes no replay.
        """
        assert self._check_seconds is not None
        previous: dict[str, int] = {}
        keys_checked = self.loop.time()
        while not self._closed:
            await asyncio.sleep(self._check_seconds)
            if not self._watchers:
                previous = {}
                continue
            if self._active_keys is not None and self.loop.time() - keys_checked >= self._key_check_seconds:
                keys_checked = self.loop.time()
                await self._end_revoked()
            try:
                latest = await self._store.run(lambda conn: _last_seqs(conn, list(self._watchers)))
            except DatabaseError as exc:  # the store is down: streams stall; the next round tries again
                log.debug("event hub check failed: %s", exc)
                continue
            for task_id, seq in previous.items():
                for sub in tuple(self._watchers.get(task_id, ())):
                    if 0 <= sub.seen < seq and not sub.qsize():  # -1: still reading its start
                        sub.deliver(RESYNC)
            previous = latest

    async def _end_revoked(self) -> None:
        """ONE query for the API keys of every open stream; those whose key was revoked get :data:`REVOKED`.

        A stream token is checked when its stream opens; this bounds how long a stream already open
        outlives its key: at most ``key_check_seconds`` + ``check_seconds`` (docs/security.md).
        """
        assert self._active_keys is not None
        subs = [sub for watchers in self._watchers.values() for sub in watchers if sub.key_id is not None]
        if not subs:
            return
        try:
            active = await self._active_keys(sorted({sub.key_id for sub in subs if sub.key_id}))
        except DatabaseError as exc:  # the store is down: nothing can be checked; the next round tries again
            log.debug("event hub key check failed: %s", exc)
            return
        for sub in subs:
            if sub.key_id not in active:
                sub.deliver(REVOKED)

    async def _connect(self) -> None:
        self._client = aioredis.Redis.from_url(self._url, socket_connect_timeout=2, health_check_interval=30)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        # A placeholder channel keeps the connection in subscribe mode even with no streams open.
        await self._pubsub.subscribe(f"{CHANNEL_PREFIX}__hub__", *[channel(t) for t in self._watchers])
        self._connected.set()

    async def _disconnect(self) -> None:
        self._connected.clear()
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
        self._pubsub = self._client = None

    def _resync_all(self) -> None:
        for watchers in self._watchers.values():
            for sub in watchers:
                sub.deliver(RESYNC)

    async def _run(self) -> None:
        backoff = 0.1
        while not self._closed:
            try:
                async with self._lock:
                    await self._connect()
                if backoff > 0.1:  # reconnected after an outage: whatever was published meanwhile is lost
                    log.info("event hub reconnected to redis; streams resync from the database")
                    self._resync_all()
                backoff = 0.1
                await self._read()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("event hub lost redis (%s); streams fall back to the database", exc)
            await self._disconnect()
            self._resync_all()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
        await self._disconnect()

    async def _read(self) -> None:
        while not self._closed:
            message = await self._pubsub.get_message(timeout=1.0)
            if message is None or message.get("type") != "message":
                continue
            name = message["channel"].decode()
            task_id = name[len(CHANNEL_PREFIX) :]
            watchers = self._watchers.get(task_id)
            if not watchers:
                continue
            raw = json.loads(message["data"])
            event = Event(task_id, raw["seq"], raw["kind"], raw["data"])
            for sub in tuple(watchers):
                sub.deliver(event)

    def drain(self) -> None:
        """Server shutdown: tell every stream of this process to end now (idempotent)."""
        if self._draining:
            return
        self._draining = True
        for watchers in self._watchers.values():
            for sub in watchers:
                sub.deliver(STOP)

    async def close(self) -> None:
        """Stop the reader and the check, and drop the connection."""
        self._closed = True
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._checker
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        await self._disconnect()


_LAST_SEQS = "SELECT id::text, last_seq FROM tasks WHERE id = ANY($1::uuid[])"


async def _last_seqs(conn: Any, task_ids: list[str]) -> dict[str, int]:
    """The latest event sequence number of each of ``task_ids`` (by primary key: one index scan each)."""
    ids = [uuid.UUID(t) for t in task_ids]
    return {row[0]: row[1] for row in await conn.fetch(_LAST_SEQS, ids)}
