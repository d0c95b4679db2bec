"""SQLAlchemy engines on psycopg 3, for the workers, the reaper and the CLI. Each worker process's
runtime makes its engines (:mod:`tasklift.queue.runtime`); a forked worker child makes its own.
The API has none: its store is asyncpg (:mod:`tasklift.store.aio`)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, func
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.pool import NullPool
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from tasklift.settings import get_settings

T = TypeVar("T")
log = logging.getLogger(__name__)

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
    # client_encoding: on a SQL_ASCII database psycopg would return text as bytes (asyncpg, too,
    # always asks for UTF8).
    connect_args: dict[str, Any] = {"connect_timeout": 5, "application_name": "tasklift", "client_encoding": "utf8"}
    if get_settings().db_statement_cache_size <= 0:
        # psycopg prepares a statement server-side once a connection has run it prepare_threshold
        # (5) times: parsed and planned once per connection instead of per call. None: never
        # (PgBouncer < 1.21 in transaction mode, TASKLIFT_DB_STATEMENT_CACHE_SIZE=0).
        connect_args["prepare_threshold"] = None
    engine = create_engine(
        url,
        connect_args=connect_args,
        **options,
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


def interval(seconds: float) -> Any:
    """``seconds`` as a PostgreSQL interval, in a SQLAlchemy expression (``make_interval``)."""
    return func.make_interval(0, 0, 0, 0, 0, 0, seconds)


class Statement:
    """One SQL statement the worker runs on every task (the lease, the outcome): :func:`run_statement`.

    The SQL text with ``:name`` parameters, run through SQLAlchemy's ``Connection`` as driver SQL
    (psycopg's ``%(name)s`` placeholders): no statement compilation, cache key or parameter
    processing per call. psycopg prepares it on the connection once it has run a few times
    (``prepare_threshold``, see :func:`make_engine`). ``jsonb`` names the parameters that are passed
    as Python values and serialized here as SQLAlchemy's JSONB type does (``None`` becomes JSON
    ``null``); the SQL casts them (``CAST(:name AS jsonb)``).
    """

    def __init__(self, sql: str, jsonb: frozenset[str] = frozenset()) -> None:
        self.sql = sql
        self.driver_sql = re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql.replace("%", "%%"))
        self.jsonb = jsonb

    def params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {n: json.dumps(v) if n in self.jsonb else v for n, v in params.items()}


def run_statement(conn: Connection, statement: Statement, params: Mapping[str, Any]) -> dict[str, Any] | None:
    """Run ``statement`` on ``conn``; its first row as a dict (the driver's values), or None.

    Through SQLAlchemy's ``Connection`` like any other statement, so its events (the OpenTelemetry
    SQL instrumentation), its error wrapping and its invalidation of a lost connection apply.
    """
    found = conn.exec_driver_sql(statement.driver_sql, statement.params(params)).mappings().first()
    return None if found is None else dict(found)


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
