"""asyncpg on the API's event loop: the hot path (submit, read a task) without a thread hop.

Everything else (workers, the reaper, the CLI, rarer endpoints) uses SQLAlchemy on psycopg2
(:mod:`tasklift.store.db`). The API's two busiest requests, ``POST /tasks`` and
``GET /tasks/{id}``, run here instead, on a small pool of this module's own (:class:`Pool`):
the submits that arrive together share ONE statement and one commit
(:data:`tasklift.store.repository.INSERT_TASKS_SQL`, which writes exactly the rows the sync
path's ``INSERT_TASK_SQL`` writes), and so do the reads (``GET_TASK_SQL`` for many ids); see
:class:`_Gathered`. Prepared statements, no worker thread, no statement building per call.

A pool belongs to the event loop that made it (asyncpg connections are loop-bound), so there is
one per running loop: uvicorn has one for the process; a host that runs a fresh loop per
invocation gets a fresh pool. Like :func:`tasklift.store.db.make_engine`, a connection idle for
more than :data:`~tasklift.store.db.IDLE_PING_SECONDS` is pinged before use, and a statement that
fails on a connection lost meanwhile (PostgreSQL restarted) is tried once more on a new one.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import asyncpg
from sqlalchemy.engine import make_url

from tasklift.jsoncodec import json_text
from tasklift.settings import get_settings
from tasklift.store import repository as repo
from tasklift.store.db import IDLE_PING_SECONDS, database_url

log = logging.getLogger(__name__)
T = TypeVar("T")


class DatabaseError(Exception):
    """A statement on this path failed (unreachable, restarting, refused): the HTTP layer answers 503.

    The same as SQLAlchemy's ``DBAPIError`` on the sync path, which the HTTP layer maps alike.
    """


_FAILED = (OSError, asyncio.TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresError)
#: Of those, the ones worth one more try on a fresh connection (the pooled one died).
_LOST = (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError, ConnectionResetError, BrokenPipeError)

_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pool] = weakref.WeakKeyDictionary()


class _Connection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection that knows since when it has been idle."""

    idle_since: float | None = None

    def mark_idle(self) -> None:
        self.idle_since = time.monotonic()

    def idle_seconds(self) -> float:
        return 0.0 if self.idle_since is None else time.monotonic() - self.idle_since


def asyncpg_dsn(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg2://…``) as a libpq-style DSN asyncpg understands."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Pool:
    """At most ``size`` connections of one event loop, handed out most-recently-used first.

    Why not ``asyncpg.Pool``: its acquire/release machinery (a queue of holders, a timeout wrapper
    and a shielded release task per call, and a reset round trip per release by default) cost
    ~40 µs of CPU per request here, as much as the statement itself. What this path needs is small:
    every operation is one autocommit statement, so a connection comes back clean and needs no
    reset. What it keeps: connections are made on demand up to ``size``; callers beyond that wait
    in FIFO order; a connection idle for more than :data:`IDLE_PING_SECONDS` is pinged before use
    (it may predate a PostgreSQL restart); a connection that failed or whose operation was
    interrupted is closed, never reused, and its place goes to the next waiter.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: collections.deque[_Connection] = collections.deque()
        #: Callers waiting for a connection; each gets one, or None = "a place is free: connect".
        self._waiters: collections.deque[asyncio.Future[_Connection | None]] = collections.deque()
        self._open = 0  # connections made and not yet discarded (idle + in use + connecting)
        self._closed = False
        self._closing: set[asyncio.Task[None]] = set()

    async def acquire(self) -> _Connection:
        """A connection for one operation; give it back with :meth:`release` or :meth:`discard`."""
        while True:
            if self._closed:
                raise asyncpg.InterfaceError("the pool is closed")
            if self._idle:
                conn = self._idle.pop()
            elif self._open < self.size:
                conn = await self._connect()
            else:
                handed = await self._wait()
                if handed is None:  # a place came free: make a connection in it
                    self._open -= 1  # _connect counts it again
                    handed = await self._connect()
                conn = handed
            if conn.is_closed():
                self._forget()
                continue
            if conn.idle_seconds() > IDLE_PING_SECONDS:
                try:
                    await conn.execute("SELECT 1")
                except _FAILED as exc:  # gone meanwhile (a restart, an idle timeout): take another
                    log.info("dropping a pooled connection that failed its ping: %s", type(exc).__name__)
                    self.discard(conn)
                    continue
                except BaseException:
                    self.discard(conn)
                    raise
            return conn

    async def _connect(self) -> _Connection:
        self._open += 1
        try:
            return await _connect()
        except BaseException:
            self._forget()
            raise

    async def _wait(self) -> _Connection | None:
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed over just as we were cancelled
                conn = waiter.result()
                if conn is None:
                    self._forget()  # the place reserved for us goes to the next waiter
                else:
                    self.release(conn)
            raise

    def release(self, conn: _Connection) -> None:
        """Give back a connection whose operation completed (successfully or with an SQL error)."""
        if self._closed or conn.is_closed():
            self.discard(conn)
            return
        conn.mark_idle()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def discard(self, conn: _Connection) -> None:
        """Close a connection that must not be reused (lost, broken or interrupted mid-statement).

        The close runs in the background and lets asyncpg first deliver the cancel request of an
        interrupted statement, so the server stops it too; its place in the pool is free at once.
        """
        if not conn.is_closed():
            closing = asyncio.get_running_loop().create_task(_close(conn))
            self._closing.add(closing)  # held: the loop keeps only weak references to tasks
            closing.add_done_callback(self._closing.discard)
        self._forget()

    def _forget(self) -> None:
        """One connection fewer; a waiter, if any, may now connect in its place."""
        self._open -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._open += 1  # reserved for that waiter (it subtracts it again to connect)
                waiter.set_result(None)
                return

    async def close(self, timeout: float = 5) -> None:
        """Close the idle connections now and the others as they come back."""
        self._closed = True
        idle, self._idle = list(self._idle), collections.deque()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(asyncpg.InterfaceError("the pool is closed"))
        self._waiters.clear()
        for conn in idle:
            await _close(conn, timeout)
            self._open -= 1
        if self._closing:
            await asyncio.wait(list(self._closing), timeout=timeout)


async def _close(conn: _Connection, timeout: float = 5) -> None:
    """Close gracefully (after any pending cancel request); drop the socket if that fails."""
    try:
        await conn.close(timeout=timeout)
    except (TimeoutError, *_FAILED):
        conn.terminate()  # the server is gone or slow


async def _connect() -> _Connection:
    settings = get_settings()
    conn: _Connection = await asyncpg.connect(
        asyncpg_dsn(database_url(settings)),
        connection_class=_Connection,
        timeout=5,
        statement_cache_size=settings.db_statement_cache_size,
        command_timeout=30,
        server_settings={"application_name": "tasklift-api"},
    )
    try:
        # JSONB in and out as Python values, as SQLAlchemy's JSONB type does on the sync path.
        await conn.set_type_codec("jsonb", encoder=json_text, decoder=json.loads, schema="pg_catalog")
    except BaseException:
        conn.terminate()
        raise
    return conn


def _made(loop: asyncio.AbstractEventLoop) -> Pool:
    made = _pools.get(loop)
    if made is None or made._closed:
        made = _pools[loop] = Pool(get_settings().db_pool_size)
    return made


def pool() -> Pool:
    """This event loop's pool (made on first use; it connects lazily)."""
    return _made(asyncio.get_running_loop())


async def run(operation: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """``operation(conn)`` on a pooled connection; once more on a fresh one if the first was lost.

    ``operation`` must leave the connection as it found it (one autocommit statement, or a
    transaction it ends itself): connections are not reset between uses.
    """
    db = pool()
    for attempt in (1, 2):
        try:
            conn = await db.acquire()
        except _FAILED as exc:
            raise DatabaseError(f"{type(exc).__name__}: {exc}") from exc
        try:
            result = await operation(conn)
        except _LOST as exc:
            db.discard(conn)
            if attempt == 2:
                raise DatabaseError(f"{type(exc).__name__}: {exc}") from exc
            log.info("database connection lost (%s); retrying on a new connection", type(exc).__name__)
            continue
        except _FAILED as exc:
            if isinstance(exc, asyncpg.PostgresError) and not conn.is_in_transaction():
                db.release(conn)  # the server refused the statement; the connection is fine
            else:
                db.discard(conn)
            raise DatabaseError(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            db.discard(conn)  # interrupted mid-operation (cancelled): its state is unknown
            raise
        db.release(conn)
        return result
    raise AssertionError("unreachable")


async def close_pools() -> None:
    """Close this loop's pool (the ASGI lifespan calls this on shutdown)."""
    made = _pools.pop(asyncio.get_running_loop(), None)
    if made is not None:
        await made.close()


# --- the statements ------------------------------------------------------------------------------

_GET_TASKS, _ = repo.positional(repo.GET_TASKS_SQL)  # ($1 ids)
_MARK_PUBLISHED, _MARK_PUBLISHED_ARGS = repo.positional(repo.MARK_PUBLISHED_SQL)


_INSERT_TASKS, _INSERT_TASKS_ARGS = repo.positional(repo.INSERT_TASKS_SQL)


async def get_task(task_id: uuid.UUID, owner: str | None = None) -> asyncpg.Record | None:
    """:func:`tasklift.store.repository.get_task` on asyncpg, read with the reads beside it.

    Reads that arrive together share one ``SELECT … WHERE id = ANY(…)``; each still sees the
    task as committed when its own request was already in. A task of another owner is None.
    """
    row: asyncpg.Record | None = await gathered("get", _get_many).call(task_id)
    return row if row is None or owner is None or row["owner"] == owner else None


Item = TypeVar("Item")
Result = TypeVar("Result")


class _Gathered(Generic[Item, Result]):
    """Calls on one event loop that arrive while a connection is being found, run as ONE statement.

    ``execute(conn, items)`` returns one result per item, in order. As many statements run at once
    as the pool has connections; a statement takes every call that arrived before it got one, so
    under load batches grow by themselves and when idle a call goes alone at once. Each caller
    waits for its own result; if the statement fails, every caller in it gets the error. A caller
    that gives up before its statement is sent is left out of it.

    ``after(items, results)``, if given, runs once the statement succeeded and before any caller
    resumes, for every item the statement wrote (also those whose caller gave up meanwhile): the
    submit's publish, which must follow the commit and should not wait for each caller's turn.
    It must handle its own errors: the statement's results stand whatever it does.
    """

    def __init__(
        self,
        execute: Callable[[asyncpg.Connection, list[Item]], Awaitable[list[Result]]],
        after: Callable[[list[Item], list[Result]], Awaitable[None]] | None = None,
    ) -> None:
        self._execute = execute
        self._after = after
        self._due = False  #: a statement task was created and has not started yet
        #: Callers at which a due statement goes first (:meth:`turn`). A batch of this many takes
        #: the database about as long as the loop takes to get this many requests to their call.
        self.enough = 16
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._gathering = False  #: a statement is waiting for a connection and will take what is pending
        self._statements: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak references

    async def call(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Result] = loop.create_future()
        self._pending.append((item, done))
        if not self._gathering:
            self._gathering = self._due = True
            statement = loop.create_task(self._run())
            self._statements.add(statement)
            statement.add_done_callback(self._statements.discard)
        return await done

    def _take(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        batch, self._pending, self._gathering = self._pending, [], False
        return [(item, done) for item, done in batch if not done.done()]

    def crowded(self) -> bool:
        """True when a statement is due to start and already has :attr:`enough` callers."""
        return self._due and len(self._pending) >= self.enough

    async def turn(self) -> None:
        """Let a due statement with :attr:`enough` callers start before this caller goes on.

        Requests that arrive together run one after another to their :meth:`call`, and only then
        does the statement they all joined start: the database waits while the event loop parses
        them all, then the loop waits while the database writes them all. A request that yields
        here first (one loop turn) lets the statement go with the callers it has, so the database
        works on it while the loop parses the rest, which form the next statement.
        """
        while self.crowded():
            await asyncio.sleep(0)

    async def _run(self) -> None:
        self._due = False
        batch: list[tuple[Item, asyncio.Future[Result]]] | None = None

        async def execute(conn: asyncpg.Connection) -> list[Result]:
            nonlocal batch
            if batch is None:  # on the first connection only; a retry sends the same batch again
                batch = self._take()
            return await self._execute(conn, [item for item, _ in batch]) if batch else []

        try:
            results = await run(execute)
        except BaseException as exc:
            for _, done in batch if batch is not None else self._take():
                if done.done():
                    continue
                if isinstance(exc, DatabaseError):  # one exception object per waiting caller
                    error = DatabaseError(str(exc))
                    error.__cause__ = exc.__cause__
                    done.set_exception(error)
                elif isinstance(exc, Exception):
                    done.set_exception(exc)
                else:
                    done.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        try:
            if self._after is not None and batch:
                await self._after([item for item, _ in batch], results)
        finally:  # the statement succeeded: its callers get their results even if `after` did not
            for (_, done), result in zip(batch or (), results, strict=True):
                if not done.done():
                    done.set_result(result)


_gatherers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Gathered[Any, Any]]] = (
    weakref.WeakKeyDictionary()
)


def gathered(
    name: str,
    execute: Callable[[asyncpg.Connection, list[Any]], Awaitable[list[Any]]],
    after: Callable[[list[Any], list[Any]], Awaitable[None]] | None = None,
) -> _Gathered[Any, Any]:
    """This event loop's gatherer for ``name`` (see :class:`_Gathered`)."""
    loop = asyncio.get_running_loop()
    mine = _gatherers.get(loop)
    if mine is None:
        mine = _gatherers[loop] = {}
    found = mine.get(name)
    if found is None:
        found = mine[name] = _Gathered(execute, after)
    return found


async def insert_many(conn: asyncpg.Connection, tasks: list[repo.NewTask]) -> list[asyncpg.Record]:
    """INSERT_TASKS_SQL for ``tasks`` (one statement, autocommit); their rows in the same order."""
    values = repo.NewTask.many_params(tasks)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(_INSERT_TASKS, *[values[name] for name in _INSERT_TASKS_ARGS])
    except asyncpg.UniqueViolationError:
        # Only a retry after a connection lost mid-commit gets here (task ids are fresh UUIDs):
        # the first try committed (one statement: all of the batch or none), so the tasks are there.
        rows = await conn.fetch(_GET_TASKS, [task.task_id for task in tasks])
        if len(rows) != len(tasks):
            raise
    by_id = {row["id"]: row for row in rows}
    return [by_id[task.task_id] for task in tasks]


async def _get_many(conn: asyncpg.Connection, task_ids: list[uuid.UUID]) -> list[asyncpg.Record | None]:
    rows = await conn.fetch(_GET_TASKS, list(set(task_ids)))
    by_id = {row["id"]: row for row in rows}
    return [by_id.get(task_id) for task_id in task_ids]


async def mark_published(sent: list[tuple[uuid.UUID, int]], broker_epoch: str | None) -> None:
    """:func:`tasklift.store.repository.mark_published` on asyncpg (one statement, autocommit)."""
    values = {"ids": [task_id for task_id, _ in sent], "seqs": [seq for _, seq in sent], "epoch": broker_epoch}
    args = [values[name] for name in _MARK_PUBLISHED_ARGS]
    await run(lambda conn: conn.execute(_MARK_PUBLISHED, *args))
