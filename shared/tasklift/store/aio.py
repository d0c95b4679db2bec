"""asyncpg on the API's event loop: the hot path (submit, read a task) without a thread hop.

Everything else (workers, the reaper, the CLI, rarer endpoints) uses SQLAlchemy on psycopg2
(:mod:`tasklift.store.db`). The API's two busiest requests, ``POST /tasks`` and
``GET /tasks/{id}``, run here instead: one prepared statement each, executed on the event loop,
no worker thread, no statement building per call. Both paths run the same SQL text
(:data:`tasklift.store.repository.INSERT_TASK_SQL`, :data:`GET_TASK_SQL`), so they cannot drift.

A pool belongs to the event loop that made it (asyncpg connections are loop-bound), so there is
one per running loop: uvicorn has one for the process; a host that runs a fresh loop per
invocation gets a fresh pool. Like :func:`tasklift.store.db.make_engine`, a connection idle for
more than :data:`~tasklift.store.db.IDLE_PING_SECONDS` is pinged before use, and a statement that
fails on a connection lost meanwhile (PostgreSQL restarted) is tried once more on a new one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.engine import make_url

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

_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Future[asyncpg.Pool]] = weakref.WeakKeyDictionary()


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


async def _init(conn: asyncpg.Connection) -> None:
    # JSONB in and out as Python values, as SQLAlchemy's JSONB type does on the sync path.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _setup(conn: Any) -> None:
    """On every acquire: ping a connection that sat idle (it may predate a PostgreSQL restart).

    A failed ping makes asyncpg close that connection and :func:`run` acquire another.
    """
    if conn.idle_seconds() > IDLE_PING_SECONDS:
        await conn.execute("SELECT 1")


async def _keep_session(conn: Any) -> None:
    """Pool reset on release: nothing to undo, so no round trip.

    asyncpg's default runs ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` on
    every release, a second round trip per request. This path never takes advisory locks, opens
    cursors, LISTENs or SETs anything, so there is nothing to reset.
    """


async def _create() -> asyncpg.Pool:
    settings = get_settings()
    return await asyncpg.create_pool(
        asyncpg_dsn(database_url(settings)),
        min_size=1,
        max_size=settings.db_pool_size,
        init=_init,
        setup=_setup,
        reset=_keep_session,
        connection_class=_Connection,
        timeout=5,  # connect
        statement_cache_size=settings.db_statement_cache_size,
        command_timeout=30,
        server_settings={"application_name": "tasklift-api"},
    )


async def pool() -> asyncpg.Pool:
    """This event loop's pool (made on first use)."""
    loop = asyncio.get_running_loop()
    made = _pools.get(loop)
    if made is None or (made.done() and (made.cancelled() or made.exception() is not None)):
        made = loop.create_future()
        _pools[loop] = made
        try:
            made.set_result(await _create())
        except BaseException as exc:
            made.set_exception(exc)
            made.exception()  # retrieved: the next caller tries again
            del _pools[loop]
            raise
    return await asyncio.shield(made)


async def run(operation: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """``operation(conn)`` on a pooled connection; once more on a fresh one if the first was lost."""
    for attempt in (1, 2):
        conn = None
        try:
            db = await pool()
            conn = await db.acquire()
            return await operation(conn)
        except _LOST as exc:
            if attempt == 2:
                raise DatabaseError(f"{type(exc).__name__}: {exc}") from exc
            log.info("database connection lost (%s); retrying on a new connection", type(exc).__name__)
            if conn is not None:
                conn.terminate()
        except _FAILED as exc:
            raise DatabaseError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            if conn is not None:
                conn.mark_idle()
                await db.release(conn)
    raise AssertionError("unreachable")


async def close_pools() -> None:
    """Close this loop's pool (the ASGI lifespan calls this on shutdown)."""
    made = _pools.pop(asyncio.get_running_loop(), None)
    if made is not None and made.done() and not made.cancelled() and made.exception() is None:
        try:
            await asyncio.wait_for(made.result().close(), 5)
        except (TimeoutError, *_FAILED):
            made.result().terminate()  # the server is gone or slow: drop the sockets


# --- the statements ------------------------------------------------------------------------------

_INSERT_TASK, _INSERT_TASK_ARGS = repo.positional(repo.INSERT_TASK_SQL)
_GET_TASK, _ = repo.positional(repo.GET_TASK_SQL)  # ($1 id)
_GET_OWNED_TASK, _ = repo.positional(repo.GET_OWNED_TASK_SQL)  # ($1 id, $2 owner)


async def insert_task(task: repo.NewTask) -> asyncpg.Record:
    """:func:`tasklift.store.repository.insert_task` on asyncpg (one statement, autocommit)."""
    values = task.params()
    args = [values[name] for name in _INSERT_TASK_ARGS]
    task_id = task.task_id

    async def insert(conn: asyncpg.Connection) -> asyncpg.Record:
        try:
            return await conn.fetchrow(_INSERT_TASK, *args)
        except asyncpg.UniqueViolationError:
            # Only a retry after a connection lost mid-commit gets here (task ids are fresh UUIDs):
            # the first try committed, so the task is there.
            found = await conn.fetchrow(_GET_TASK, task_id)
            if found is None:
                raise
            return found

    return await run(insert)


async def get_task(task_id: uuid.UUID, owner: str | None = None) -> asyncpg.Record | None:
    """:func:`tasklift.store.repository.get_task` on asyncpg."""
    if owner is None:
        return await run(lambda conn: conn.fetchrow(_GET_TASK, task_id))
    return await run(lambda conn: conn.fetchrow(_GET_OWNED_TASK, task_id, owner))
