"""Engine and connections, created once per process (after fork, for Celery's prefork children)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from opentelemetry import trace
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.expression import Executable
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from tasklift.settings import Settings, get_settings

T = TypeVar("T")
log = logging.getLogger(__name__)

_lock = threading.Lock()
#: autocommit? → (pid that made it, engine)
_engines: dict[bool, tuple[int, Engine]] = {}


IDLE_PING_SECONDS = 5.0


def make_engine(url: str, pool_size: int = 10, *, pooled: bool = True, autocommit: bool = False) -> Engine:
    """A pooled engine that rides out a PostgreSQL restart (see :func:`_ping_when_idle`).

    ``autocommit``: every statement is its own transaction, set once per connection (switching a
    pooled connection per checkout costs ~80 µs); for callers whose writes are single statements.
    """
    options: dict[str, object] = (
        {"pool_size": pool_size, "max_overflow": pool_size, "pool_recycle": 1800} if pooled else {"poolclass": NullPool}
    )
    if autocommit:
        options["isolation_level"] = "AUTOCOMMIT"
    engine = create_engine(
        url,
        connect_args={"connect_timeout": 5, "application_name": "tasklift"},
        **options,  # type: ignore[arg-type]
    )
    if pooled:
        _ping_when_idle(engine, IDLE_PING_SECONDS)
    return engine


def _ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """Pessimistic disconnect handling, but only for connections idle longer than ``idle_seconds``.

    ``pool_pre_ping`` would add a ``SELECT 1`` round trip to every checkout; a connection that was
    in use a moment ago needs none. A dead connection found here makes the pool reconnect
    (DisconnectionError on checkout); one that dies while busy fails that statement, SQLAlchemy
    invalidates the pool, and workers retry through :func:`retry_transient`.
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info["tasklift_last_used"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        last = record.info.get("tasklift_last_used")
        if last is not None and time.monotonic() - last > idle_seconds:
            try:
                engine.dialect.do_ping(dbapi_connection)
            except Exception as exc:
                raise DisconnectionError("stale pooled connection") from exc


def reading(engine: Engine) -> Connection:
    """A connection for reads in autocommit: no BEGIN/ROLLBACK round trips around a single SELECT."""
    return engine.connect().execution_options(isolation_level="AUTOCOMMIT")


def database_url(settings: Settings | None = None) -> str:
    """The configured database URL; the embedded engine exports it before anything connects."""
    settings = settings or get_settings()
    url = settings.database_url or os.environ.get("TASKLIFT_DATABASE_URL")
    if not url:
        raise RuntimeError(
            "TASKLIFT_DATABASE_URL is not set. `tasklift dev` starts an embedded PostgreSQL and sets it; "
            "elsewhere point it at your server."
        )
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; we ship psycopg2-binary.
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return "postgresql+psycopg2://" + url[len(bare) :]
    return url


def _process_engine(autocommit: bool) -> Engine:
    """This process's engine of that kind; a forked child makes its own (sockets must not be shared)."""
    pid = os.getpid()
    found = _engines.get(autocommit)
    if found is None or found[0] != pid:
        with _lock:
            found = _engines.get(autocommit)
            if found is None or found[0] != pid:
                if found is not None:
                    found[1].dispose(close=False)
                settings = get_settings()
                found = _engines[autocommit] = (
                    pid,
                    make_engine(database_url(settings), settings.db_pool_size, autocommit=autocommit),
                )
    return found[1]


def get_engine() -> Engine:
    """The process-wide engine; a forked child gets its own (pooled sockets must not be shared)."""
    return _process_engine(autocommit=False)


def get_autocommit_engine() -> Engine:
    """The process-wide autocommit engine, for writes that are one statement (the worker's claim,
    heartbeat, progress, log and outcome: one round trip each, no BEGIN/COMMIT). Never use it for
    a multi-statement transaction: ``begin()`` on it does not make one."""
    return _process_engine(autocommit=True)


def reset_engine() -> None:
    """Forget the engines (tests and `tasklift dev` after changing the URL)."""
    with _lock:
        for _, engine in _engines.values():
            engine.dispose()
        _engines.clear()


class Prepared:
    """One SQL statement for :func:`execute_prepared`: the worker's hot single-statement writes.

    The same SQL text as the SQLAlchemy path (``:name`` parameters), run on the pooled DBAPI
    connection: no statement compilation, cache key, parameter processing or result wrapping per
    call (~0.15 ms of CPU each). Unless ``TASKLIFT_DB_STATEMENT_CACHE_SIZE`` is 0 (PgBouncer in
    transaction mode, which cannot keep a session's SQL-level prepared statements), it is also a
    server-side prepared statement: PostgreSQL parses and plans it once per connection instead of
    once per call. ``types`` gives each parameter's PostgreSQL type; ``jsonb`` parameters are
    passed as Python values and serialized here as SQLAlchemy's JSONB type does (``None`` becomes
    JSON ``null``).

    ``traced`` is the same statement for SQLAlchemy: it runs instead while the current span is
    recorded (an exporter is configured and the trace sampled), so that the SQL instrumentation,
    which hooks SQLAlchemy's execution, still shows the statement as a client span.
    """

    def __init__(self, name: str, sql: str, types: Mapping[str, str], traced: Executable) -> None:
        from tasklift.store.repository import positional

        numbered, names = positional(sql)
        self.name = name
        self.sql = sql
        self.traced = traced
        self.names = names
        self.json = frozenset(n for n in names if types[n] == "jsonb")
        self.prepare_sql = f"PREPARE {name} ({', '.join(types[n] for n in names)}) AS {numbered}"
        self.execute_sql = f"EXECUTE {name} ({', '.join('%s' for _ in names)})"
        #: without server-side preparation: psycopg2's %s placeholders, one per occurrence
        self.plain_sql = re.sub(r"(?<![:\w]):(\w+)", "%s", sql.replace("%", "%%"))
        self.plain_names = tuple(re.findall(r"(?<![:\w]):(\w+)", sql))

    def args(self, params: Mapping[str, Any], names: tuple[str, ...]) -> tuple[Any, ...]:
        return tuple(json.dumps(params[n]) if n in self.json else params[n] for n in names)


#: SQLSTATEs of a prepared statement the server does not have / already has.
_NOT_PREPARED, _ALREADY_PREPARED = "26000", "42P05"


def _run_prepared(cursor: Any, prepared: set[str], statement: Prepared, params: Mapping[str, Any]) -> None:
    if statement.name not in prepared:
        _prepare(cursor, statement)
        prepared.add(statement.name)
    args = statement.args(params, statement.names)
    try:
        cursor.execute(statement.execute_sql, args)
    except Exception as exc:
        if getattr(exc, "pgcode", None) != _NOT_PREPARED:
            raise
        # The session lost it (DEALLOCATE/DISCARD ALL): autocommit, so nothing else was undone.
        _prepare(cursor, statement)
        cursor.execute(statement.execute_sql, args)


def _prepare(cursor: Any, statement: Prepared) -> None:
    try:
        cursor.execute(statement.prepare_sql)
    except Exception as exc:
        if getattr(exc, "pgcode", None) != _ALREADY_PREPARED:  # same name, always the same text
            raise


def execute_prepared(engine: Engine, statement: Prepared, params: Mapping[str, Any]) -> dict[str, Any] | None:
    """Run ``statement`` on a pooled connection of ``engine``, an autocommit one (the statement is
    its own transaction, committed when this returns); its first row as a dict, or None.

    Errors are raised as SQLAlchemy's (``DBAPIError`` subclasses; ``connection_invalidated`` and
    the connection dropped from the pool when it was lost), so :func:`retry_transient` and callers
    treat them exactly as errors of the SQLAlchemy path.
    """
    if trace.get_current_span().is_recording():
        with engine.connect() as conn:
            found = conn.execute(statement.traced, dict(params)).mappings().first()
        return None if found is None else dict(found)
    fairy = engine.raw_connection()  # the pool's checkout, and its idle ping, as engine.connect()
    dbapi_connection = fairy.dbapi_connection
    assert dbapi_connection is not None  # a checked-out connection has one
    cursor = None
    try:
        cursor = dbapi_connection.cursor()
        if get_settings().db_statement_cache_size > 0:
            # The record's info is cleared when its DBAPI connection is replaced; checked anyway.
            known = fairy.info.get("tasklift_prepared")
            if known is None or known[0] is not dbapi_connection:
                known = fairy.info["tasklift_prepared"] = (dbapi_connection, set())
            _run_prepared(cursor, known[1], statement, params)
        else:
            cursor.execute(statement.plain_sql, statement.args(params, statement.plain_names))
        row = cursor.fetchone()
        if row is None:
            return None
        return dict(zip([column[0] for column in cursor.description], row, strict=True))
    except engine.dialect.loaded_dbapi.Error as exc:
        disconnect = engine.dialect.is_disconnect(exc, dbapi_connection, cursor)
        if disconnect:  # what SQLAlchemy's Connection does: this one and all older ones are reconnected
            engine.pool._invalidate(fairy, exc)
        raise DBAPIError.instance(
            statement.sql,
            dict(params),
            exc,
            engine.dialect.loaded_dbapi.Error,
            connection_invalidated=disconnect,
            dialect=engine.dialect,
        ) from exc
    finally:
        if cursor is not None:
            with contextlib.suppress(Exception):  # a lost connection's cursor: the connection is dropped anyway
                cursor.close()
        fairy.close()  # back to the pool


def is_transient(exc: BaseException) -> bool:
    """True for errors that a restarting or failing-over PostgreSQL produces (worth retrying)."""
    return isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)
    )


def retry_transient(func: Callable[[], T]) -> T:
    """Run ``func`` (one transaction), retrying through a database outage of up to ``db_retry_seconds``.

    Worker-side writes use this so that a PostgreSQL restart delays a task instead of failing it.
    Each try is a whole transaction, so a retried write is never half-applied. The first try runs
    without tenacity's machinery (~15 µs per call on the worker's hot path).
    """
    try:
        return func()
    except DBAPIError as exc:
        if not is_transient(exc):
            raise
        log.warning("database unavailable (%s); retrying", type(exc).__name__)
    retrying = Retrying(
        retry=retry_if_exception(is_transient),
        wait=wait_exponential(multiplier=0.2, max=5),
        stop=stop_after_delay(get_settings().db_retry_seconds),
        before_sleep=lambda state: log.warning(
            "database unavailable (%s); retrying", type(state.outcome.exception()).__name__ if state.outcome else "?"
        ),
        reraise=True,
    )
    return retrying(func)
