"""asyncpg on the API's event loop: the API's one store, without a thread hop.

Every statement an API process runs goes through here, on ONE :class:`asyncpg.Pool`
(:class:`AsyncStore`, one per API runtime): submit and read, list, logs, stream replay, cancel,
retry, API-key checks and the readiness probe. Workers, the reaper and the CLI use SQLAlchemy on
psycopg (:mod:`tasklift.store.db`). The SQL text is the repository's
(:mod:`tasklift.store.repository`; the API keys' is in :mod:`tasklift.security.api_keys`): this
module only runs it (:meth:`AsyncStore.fetch`). The submits that arrive together share ONE statement and one commit
(:data:`~tasklift.store.repository.INSERT_TASKS_SQL`), and so do the reads
(:data:`~tasklift.store.repository.GET_TASKS_SQL` for many ids); see :class:`Gathered`.

A pool belongs to the event loop that made it (asyncpg connections are loop-bound), so there is
one per API runtime, which belongs to one loop: uvicorn's lifespan builds it for the process; a
host without a lifespan builds it at its first request (:mod:`tasklift.http.runtime`). The pool
is asyncpg's own, configured through its public options:

- connections are made on demand up to ``db_pool_size`` (``min_size=0``) and closed after
  :data:`IDLE_SECONDS` unused (``max_inactive_connection_lifetime``), so an idle API holds none and
  a connection is never very old when it is reused;
- ``init=`` sets the JSONB/JSON codecs once per connection;
- ``reset=`` replaces asyncpg's default reset (``SELECT pg_advisory_unlock_all(); CLOSE ALL;
  UNLISTEN *; RESET ALL``, one round trip per release) by nothing: the operations here use no
  session state (no advisory locks, cursors, LISTEN or SET), and asyncpg still rolls back a
  transaction left open before ``reset`` runs;
- a connection the server closed (a PostgreSQL restart, ``pg_terminate_backend``) is replaced by
  the pool on the next acquire; a statement that fails because its connection was lost meanwhile
  is tried once more on another (:meth:`AsyncStore.run`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

import asyncpg

from tasklift.jsoncodec import json_text
from tasklift.settings import Settings, database_url
from tasklift.store import repository as repo

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds a pooled connection may stay unused before the pool closes it.
IDLE_SECONDS = 60.0


class DatabaseError(Exception):
    """A statement of the API failed (unreachable, restarting, refused): the HTTP layer answers 503,
    or 400 when the store refused a value of the request (:func:`tasklift.store.repository.refused_value`)."""


_FAILED = (OSError, asyncio.TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresError)
#: Of those, the ones worth one more try on another connection (the pooled one died).
_LOST = (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError, ConnectionResetError, BrokenPipeError)


def asyncpg_dsn(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg://…``) as a libpq-style DSN asyncpg understands:
    only the scheme differs (the driver's name goes; the rest is the same URL)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.partition('+')[0]}{sep}{rest}"


def positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """``sql`` with ``:name`` parameters as ``$n`` (asyncpg), and the names in ``$n`` order."""
    names: list[str] = []

    def number(found: re.Match[str]) -> str:
        if found.group(1) not in names:
            names.append(found.group(1))
        return f"${names.index(found.group(1)) + 1}"

    return re.sub(r"(?<![:\w]):(\w+)", number, sql), tuple(names)


async def _init(conn: asyncpg.Connection) -> None:
    """Each new connection: JSON and JSONB in and out as Python values (as SQLAlchemy's types do)."""
    for name in ("jsonb", "json"):
        await conn.set_type_codec(name, encoder=json_text, decoder=json.loads, schema="pg_catalog")


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Nothing to reset between uses: see the module docstring."""


# --- the statements ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=128)
def _positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """:func:`positional`, once per statement text."""
    return positional(sql)


_GET_TASKS, _ = positional(repo.GET_TASKS_SQL)  # ($1 ids)
_MARK_PUBLISHED, _MARK_PUBLISHED_ARGS = positional(repo.MARK_PUBLISHED_SQL)


_INSERT_TASKS, _INSERT_TASKS_ARGS = positional(repo.INSERT_TASKS_SQL)
_DELETE_EXPIRED_KEY, _ = positional(repo.DELETE_EXPIRED_KEY_SQL)  # ($1 owner, $2 key)
_INSERT_KEY, _ = positional(repo.INSERT_KEY_SQL)  # ($1 owner, $2 key, $3 request_hash, $4 ttl)
_GET_KEY, _ = positional(repo.GET_KEY_SQL)  # ($1 owner, $2 key)
_COMPLETE_KEY, _COMPLETE_KEY_ARGS = positional(repo.COMPLETE_KEY_SQL)


Item = TypeVar("Item")
Result = TypeVar("Result")


class Gathered(Generic[Item, Result]):
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
        store: AsyncStore,
        execute: Callable[[asyncpg.Connection, list[Item]], Awaitable[list[Result]]],
        after: Callable[[list[Item], list[Result]], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
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
            results = await self._store.run(execute)
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


def status_event(row: Mapping[str, Any]) -> repo.Event:
    """The status event of the task state in ``row``, as the statement that made it appended it
    (``seq`` = the row's ``last_seq``)."""
    return repo.Event(str(row["id"]), row["last_seq"], "status", repo.status_data(row))


class AsyncStore:
    """The API's asyncpg pool and the gatherer of its reads, on ONE event loop.

    Made by the API runtime (:class:`tasklift.http.runtime.ApiRuntime`) on the loop that serves its
    requests; asyncpg connections are bound to their loop. The pool is created on first use (it
    connects lazily), and made again if creating it failed.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: asyncio.Task[asyncpg.Pool] | None = None  # a task: callers arriving together share it
        self._reads: Gathered[uuid.UUID, asyncpg.Record | None] = Gathered(self, _get_many)

    async def _make_pool(self) -> asyncpg.Pool:
        settings = self.settings
        made: asyncpg.Pool = await asyncpg.create_pool(
            asyncpg_dsn(database_url(settings)),
            min_size=0,
            max_size=settings.db_pool_size,
            max_inactive_connection_lifetime=IDLE_SECONDS,
            init=_init,
            reset=_no_reset,
            timeout=5,  # to connect
            statement_cache_size=settings.db_statement_cache_size,
            command_timeout=30,
            server_settings={"application_name": "tasklift-api"},
        )
        return made

    async def pool(self) -> asyncpg.Pool:
        """The pool (made on first use; it connects lazily)."""
        made = self._pool
        if made is None or (made.done() and (made.cancelled() or made.exception() is not None)):
            made = self._pool = asyncio.get_running_loop().create_task(self._make_pool())
        return await made

    async def run(self, operation: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """``operation(conn)`` on a pooled connection; once more on another if the first was lost.

        ``operation`` runs one autocommit statement, or a transaction it ends itself
        (``async with conn.transaction()``).
        """
        db = await self.pool()
        for attempt in (1, 2):
            try:
                async with db.acquire() as conn:
                    return await operation(conn)
            except _LOST as exc:
                if attempt == 2:
                    raise DatabaseError(f"{type(exc).__name__}: {exc}") from exc
                log.info("database connection lost (%s); retrying on a new connection", type(exc).__name__)
            except _FAILED as exc:
                raise DatabaseError(f"{type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")

    async def get_task(self, task_id: uuid.UUID, owner: str | None = None) -> asyncpg.Record | None:
        """The task row by id (:data:`~tasklift.store.repository.GET_TASKS_SQL`), read with the reads beside it.

        Reads that arrive together share one ``SELECT … WHERE id = ANY(…)``; each still sees the
        task as committed when its own request was already in. A task of another owner is None.
        """
        row = await self._reads.call(task_id)
        return row if row is None or owner is None or row["owner"] == owner else None

    async def submit_with_key(
        self, task: repo.NewTask, key: str, request_hash: str, ttl: float
    ) -> tuple[asyncpg.Record | None, asyncpg.Record | None]:
        """Reserve the Idempotency-Key ``key`` of ``task.owner``, insert ``task`` and bind the key to
        it, in ONE transaction; returns ``(task row, None)``.

        If a live record of the key exists, nothing is written and ``(None, record)`` is returned
        (its ``request_hash`` and ``task_id``, None while the first request is in flight): the
        caller decides between a replay and a conflict. The insert is :func:`insert_many`'s statement.
        """

        async def transaction(conn: asyncpg.Connection) -> tuple[asyncpg.Record | None, asyncpg.Record | None]:
            async with conn.transaction():
                await conn.execute(_DELETE_EXPIRED_KEY, task.owner, key)
                if await conn.fetchval(_INSERT_KEY, task.owner, key, request_hash, float(ttl)) is None:
                    return None, await conn.fetchrow(_GET_KEY, task.owner, key)
                [row] = await insert_many(conn, [task])
                values = {"owner": task.owner, "key": key, "task_id": task.task_id}
                await conn.execute(_COMPLETE_KEY, *[values[name] for name in _COMPLETE_KEY_ARGS])
                return row, None

        return await self.run(transaction)

    # --- statements by their text (named parameters) ---------------------------------------------

    async def fetch(self, sql: str, params: Mapping[str, Any]) -> list[asyncpg.Record]:
        """The rows of the statement ``sql`` (``:name`` parameters from ``params``), autocommit."""
        text, names = _positional(sql)
        args = [params[name] for name in names]
        return await self.run(lambda conn: conn.fetch(text, *args))

    async def fetchrow(self, sql: str, params: Mapping[str, Any]) -> asyncpg.Record | None:
        """The first row of :meth:`fetch`'s statement, or None."""
        text, names = _positional(sql)
        args = [params[name] for name in names]
        return await self.run(lambda conn: conn.fetchrow(text, *args))

    async def execute(self, sql: str, params: Mapping[str, Any]) -> None:
        """Run the statement ``sql`` for its effect, autocommit."""
        text, names = _positional(sql)
        args = [params[name] for name in names]
        await self.run(lambda conn: conn.execute(text, *args))

    # --- the API's operations besides submit and read -------------------------------------------

    async def list_tasks(self, limit: int, **filters: Any) -> list[asyncpg.Record]:
        """:func:`~tasklift.store.repository.list_tasks_sql` with the ``filters`` that are not None
        (``owner``, ``status``, ``task_type``, ``created_after``, ``before``: a ``(created_at, id)``)."""
        given = {name: value for name, value in filters.items() if value is not None}
        params: dict[str, Any] = {**given, "limit": limit}
        if "before" in given:
            params["before_created"], params["before_id"] = given["before"]
        return await self.fetch(repo.list_tasks_sql(tuple(given)), params)

    async def events_after(self, task_id: uuid.UUID, after: int, limit: int = 1000) -> list[repo.Event]:
        """The task's events after sequence ``after``, oldest first (stream replay)."""
        rows = await self.fetch(repo.EVENTS_AFTER_SQL, {"task_id": task_id, "after": after, "limit": limit})
        return [repo.Event(str(task_id), row["seq"], row["kind"], row["data"]) for row in rows]

    async def logs_after(self, task_id: uuid.UUID, after: int, limit: int) -> list[asyncpg.Record]:
        """Log lines after sequence ``after``, oldest first."""
        return await self.fetch(repo.LOGS_AFTER_SQL, {"task_id": task_id, "after": after, "limit": limit})

    async def cancel(self, task_id: uuid.UUID, owner: str | None) -> tuple[asyncpg.Record, repo.Event] | None:
        """:data:`~tasklift.store.repository.CANCEL_SQL`: the changed row and its event, or None."""
        row = await self.fetchrow(repo.CANCEL_SQL, {"task_id": task_id, "owner": owner})
        return None if row is None else (row, status_event(row))

    async def reopen(
        self, task_id: uuid.UUID, owner: str | None, retries: int
    ) -> tuple[asyncpg.Record, repo.Event] | None:
        """:data:`~tasklift.store.repository.REOPEN_SQL`: the reopened row and its event, or None."""
        row = await self.fetchrow(repo.REOPEN_SQL, {"task_id": task_id, "owner": owner, "retries": retries})
        return None if row is None else (row, status_event(row))

    async def active_tasks(self, owner: str) -> int:
        """PENDING + RUNNING tasks of ``owner`` (:data:`~tasklift.store.repository.ACTIVE_TASKS_SQL`)."""
        row = await self.fetchrow(repo.ACTIVE_TASKS_SQL, {"owner": owner})
        return int(row[0]) if row is not None else 0

    async def ping(self) -> None:
        """Raise :class:`DatabaseError` unless the database answers."""
        await self.run(lambda conn: conn.fetchval("SELECT 1"))

    async def mark_published(self, sent: list[tuple[uuid.UUID, int]], broker_epoch: str | None) -> None:
        """:func:`tasklift.store.outbox.mark_published` on asyncpg (one statement, autocommit)."""
        values = {"ids": [task_id for task_id, _ in sent], "seqs": [seq for _, seq in sent], "epoch": broker_epoch}
        args = [values[name] for name in _MARK_PUBLISHED_ARGS]
        await self.run(lambda conn: conn.execute(_MARK_PUBLISHED, *args))

    async def close(self) -> None:
        """Close the pool (the runtime's shutdown); a pool that never opened has nothing to close."""
        made, self._pool = self._pool, None
        if made is None:
            return
        try:
            db = await made
        except Exception:  # noqa: BLE001 - it never opened: nothing to close
            return
        try:
            await asyncio.wait_for(db.close(), 5)
        except (TimeoutError, *_FAILED):
            db.terminate()  # the server is gone or slow
