"""The API's hot path on real PostgreSQL and Redis: the asyncpg pool and batched publishes."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
import uuid
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from tasklift.http.runtime import ApiRuntime
from tasklift.queue import dispatch
from tasklift.queue.dispatch import Enqueuer
from tasklift.settings import get_settings
from tasklift.store import aio
from tasklift.store.repository import Dispatch
from tasklift.tasks.service import new_task, parse_submission


@pytest.fixture
def small_pool(tasklift_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("TASKLIFT_DB_POOL_SIZE", "2")
    get_settings.cache_clear()
    return 2


def api_sessions(db: sa.Engine) -> int:
    with db.connect() as conn:
        query = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = 'tasklift-api' AND datname = current_database()"
        )
        return int(conn.exec_driver_sql(query).scalar_one())


async def backend_pid(runtime: ApiRuntime) -> int:
    return int(await runtime.store.run(lambda conn: conn.fetchval("SELECT pg_backend_pid()")))


# --- the pool ------------------------------------------------------------------------------------


async def test_callers_beyond_the_pool_size_wait_their_turn_on_that_many_connections(
    small_pool: int, runtime: ApiRuntime, db: sa.Engine
) -> None:
    async def slow() -> int:
        return int(await runtime.store.run(lambda conn: conn.fetchval("SELECT pg_backend_pid() FROM pg_sleep(0.05)")))

    pids = await asyncio.gather(*(slow() for _ in range(10)))
    assert len(set(pids)) == small_pool  # all ten ran, on exactly the pool's connections
    assert api_sessions(db) == small_pool
    await runtime.store.close()
    assert api_sessions(db) == 0


async def test_a_connection_the_server_killed_is_replaced_and_the_statement_still_runs(
    runtime: ApiRuntime, tasklift_env: dict[str, str], db: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    first = await backend_pid(runtime)
    with db.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT pg_terminate_backend({first})").scalar_one()
    await asyncio.sleep(0.1)
    caplog.set_level(logging.INFO, logger="tasklift.store.aio")
    second = await backend_pid(runtime)
    assert second != first


async def test_a_connection_unused_for_the_idle_lifetime_is_closed_and_a_new_one_made_on_demand(
    runtime: ApiRuntime, tasklift_env: dict[str, str], db: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aio, "IDLE_SECONDS", 0.3)  # read when the loop's pool is made
    first = await backend_pid(runtime)
    assert api_sessions(db) == 1
    for _ in range(30):
        if api_sessions(db) == 0:
            break
        await asyncio.sleep(0.1)
    assert api_sessions(db) == 0  # the pool closed it (max_inactive_connection_lifetime)
    assert await backend_pid(runtime) != first


async def test_an_idle_connection_the_server_closed_is_dropped_before_use(
    runtime: ApiRuntime, tasklift_env: dict[str, str], db: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    first = await backend_pid(runtime)
    with db.connect() as conn:
        conn.exec_driver_sql(f"SELECT pg_terminate_backend({first})")
    await asyncio.sleep(0.1)
    caplog.set_level(logging.INFO, logger="tasklift.store.aio")
    assert await backend_pid(runtime) != first
    assert "retrying on a new connection" not in caplog.text  # not even one failed statement


async def test_a_cancelled_statement_is_stopped_on_the_server_and_a_cancelled_waiter_takes_nothing(
    small_pool: int, runtime: ApiRuntime, db: sa.Engine
) -> None:
    holders = [
        asyncio.create_task(runtime.store.run(lambda conn: conn.fetchval("SELECT pg_backend_pid() FROM pg_sleep(30)")))
        for _ in range(small_pool)
    ]
    waiter = asyncio.create_task(backend_pid(runtime))  # the pool is full: this one queues
    gone = asyncio.create_task(backend_pid(runtime))  # queues too, and is cancelled while waiting
    await asyncio.sleep(0.3)
    assert not waiter.done()
    gone.cancel()
    holders[0].cancel()  # mid-statement: asyncpg asks the server to cancel it, then the place is free
    with pytest.raises(asyncio.CancelledError):
        await holders[0]
    pid = await asyncio.wait_for(waiter, 10)
    assert pid > 0 and gone.cancelled()
    assert await asyncio.wait_for(backend_pid(runtime), 10) == pid  # the cancelled waiter took nothing
    holders[1].cancel()
    await asyncio.gather(holders[1], return_exceptions=True)
    with db.connect() as conn:
        sleeping = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tasklift-api'"
                " AND query LIKE '%pg_sleep(30)%' AND state = 'active'"
            )
        ).scalar_one()
    assert sleeping == 0  # neither statement still runs its 30 s
    await runtime.store.close()
    assert api_sessions(db) == 0  # no session left behind


async def test_sql_errors_keep_the_connection_and_surface_as_database_errors(
    runtime: ApiRuntime, tasklift_env: dict[str, str]
) -> None:
    first = await backend_pid(runtime)
    with pytest.raises(aio.DatabaseError, match="division"):
        await runtime.store.run(lambda conn: conn.fetchval("SELECT 1 / 0"))
    assert await backend_pid(runtime) == first


# --- publishes -------------------------------------------------------------------------------------


def submission(task_id: uuid.UUID, queue: str = "tasklift.cpu", owner: str = "anonymous") -> tuple[Any, Dispatch]:
    ttype, task_input, metadata = parse_submission({"task_type": "test_noop"})
    return new_task(task_id, owner, ttype, task_input, metadata), Dispatch(task_id, queue, "test_noop")


async def warm_pool(runtime: ApiRuntime, connections: int) -> None:
    """Open ``connections`` pooled connections now, so statements get one without waiting."""
    await asyncio.gather(
        *(runtime.store.run(lambda conn: conn.fetchval("SELECT pg_sleep(0.05)")) for _ in range(connections))
    )


async def test_concurrent_submits_reach_each_queue_in_order_and_their_outbox_rows_are_marked(
    runtime: ApiRuntime, tasklift_env: dict[str, str], db: sa.Engine
) -> None:
    ids = [uuid.uuid4() for _ in range(12)]
    queues = ["tasklift.cpu" if i % 3 else "tasklift.io" for i in range(len(ids))]
    await asyncio.gather(*(runtime.enqueuer.submit(*submission(t, q)) for t, q in zip(ids, queues, strict=True)))
    broker = redis.Redis.from_url(get_settings().redis_url or "")
    for queue in ("tasklift.cpu", "tasklift.io"):
        expected = [str(t) for t, q in zip(ids, queues, strict=True) if q == queue]
        received = []
        while (raw := broker.rpop(queue)) is not None:  # the end workers take from
            received.append(json.loads(raw)["headers"]["id"])
        assert received == expected
    epoch = broker.info("server")["run_id"]
    await runtime.enqueuer.mark_now()  # writes the pending marks now
    with db.connect() as conn:
        rows = conn.execute(sa.text("SELECT published_at IS NOT NULL, broker_epoch FROM task_outbox")).all()
    assert rows and all(published and stored == epoch for published, stored in rows)
    assert len(rows) == len(ids)


# --- submits together: one statement -------------------------------------------------------------


async def test_submits_that_arrive_together_share_one_statement_and_write_each_task_its_rows(
    runtime: ApiRuntime, tasklift_env: dict[str, str], db: sa.Engine
) -> None:
    from tasklift.store import repository as repo

    ttype, task_input, metadata = parse_submission({"task_type": "test_noop", "metadata": {"k": [1, 2**70]}})
    tasks = [new_task(uuid.uuid4(), f"owner-{i}", ttype, task_input, metadata) for i in range(6)]
    statements: list[str] = []
    async with (
        await runtime.store.pool()
    ).acquire() as conn:  # the one connection the batch will use; log what it runs
        conn.add_query_logger(lambda record: statements.append(record.query))
    rows = await asyncio.gather(
        *(runtime.enqueuer.submit(task, Dispatch(task.task_id, "tasklift.cpu", "test_noop")) for task in tasks)
    )
    assert [row["id"] for row in rows] == [task.task_id for task in tasks]
    assert [row["owner"] for row in rows] == [f"owner-{i}" for i in range(6)]
    inserts = [sql for sql in statements if "INSERT" in sql]  # (asyncpg also introspects types once)
    assert inserts == [aio._INSERT_TASKS]  # six submits, one statement

    with db.connect() as read:
        for task in tasks:
            row = read.execute(sa.text("SELECT * FROM tasks WHERE id = :id"), {"id": task.task_id}).mappings().one()
            assert (row["status"], row["last_seq"], row["attempts"], row["metadata"]) == (
                "PENDING", 1, 0, {"k": [1, 2**70]},
            )  # fmt: skip
            events = read.execute(
                sa.text("SELECT seq, kind, data FROM task_events WHERE task_id = :id"), {"id": task.task_id}
            ).all()
            assert [tuple(e) for e in events] == [(1, "status", repo.first_event_data())]
            outbox = read.execute(
                sa.text("SELECT queue, published_at FROM task_outbox WHERE task_id = :id"), {"id": task.task_id}
            ).all()
            assert [row.queue for row in outbox] == ["tasklift.cpu"]


async def test_a_statement_that_fails_fails_every_submit_in_it_and_writes_none_of_them(
    runtime: ApiRuntime, tasklift_env: dict[str, str], db: sa.Engine
) -> None:
    taken = uuid.uuid4()
    await runtime.enqueuer.submit(*submission(taken))
    ids = [uuid.uuid4(), taken, uuid.uuid4()]  # one id already exists: the whole statement fails
    outcomes = await asyncio.gather(*(runtime.enqueuer.submit(*submission(t)) for t in ids), return_exceptions=True)
    assert all(isinstance(outcome, aio.DatabaseError) for outcome in outcomes), outcomes
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM tasks")).scalar_one() == 1
    broker = redis.Redis.from_url(get_settings().redis_url or "")
    assert broker.llen("tasklift.cpu") == 1  # nothing of the failed statement was published
    assert (await runtime.enqueuer.submit(*submission(ids[0])))["id"] == ids[0]


async def test_reads_that_arrive_together_share_one_statement_and_each_gets_its_own_answer(
    runtime: ApiRuntime,
    tasklift_env: dict[str, str],
) -> None:
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    await asyncio.gather(
        runtime.enqueuer.submit(*submission(mine, owner="alice")),
        runtime.enqueuer.submit(*submission(theirs, owner="bob")),
    )
    statements: list[str] = []
    async with (await runtime.store.pool()).acquire() as conn:
        conn.add_query_logger(lambda record: statements.append(record.query))
    unknown = uuid.uuid4()
    rows = await asyncio.gather(
        runtime.store.get_task(mine),
        runtime.store.get_task(mine, "alice"),
        runtime.store.get_task(theirs, "alice"),  # another owner's task does not exist for alice
        runtime.store.get_task(unknown),
        runtime.store.get_task(theirs),
    )
    assert [row and (row["id"], row["owner"]) for row in rows] == [
        (mine, "alice"),
        (mine, "alice"),
        None,
        None,
        (theirs, "bob"),
    ]
    assert [sql for sql in statements if "FROM tasks" in sql] == [aio._GET_TASKS]  # five reads, one statement


# --- a submit: one INSERT, then one LPUSH, per batch ------------------------------------------------


def lpush_calls(broker: redis.Redis) -> int:
    return int(broker.info("commandstats").get("cmdstat_lpush", {}).get("calls", 0))


async def test_submits_together_share_one_insert_and_one_lpush_and_their_outbox_rows_are_marked(
    runtime: ApiRuntime, tasklift_env: dict[str, str], db: sa.Engine
) -> None:
    broker = redis.Redis.from_url(get_settings().redis_url or "")
    await warm_pool(runtime, 1)
    statements: list[str] = []
    async with (await runtime.store.pool()).acquire() as conn:
        conn.add_query_logger(lambda record: statements.append(record.query))
    lpushes = lpush_calls(broker)
    ids = [uuid.uuid4() for _ in range(6)]

    rows = await asyncio.gather(*(runtime.enqueuer.submit(*submission(t)) for t in ids))
    assert [(row["id"], row["status"]) for row in rows] == [(t, "PENDING") for t in ids]
    assert [sql for sql in statements if "INSERT" in sql] == [aio._INSERT_TASKS]
    await runtime.enqueuer.mark_now()  # Redis's answer read, the outbox marks written, now
    assert lpush_calls(broker) - lpushes == 1
    received = [json.loads(raw)["headers"]["id"] for raw in reversed(broker.lrange("tasklift.cpu", 0, -1))]
    assert received == [str(t) for t in ids]  # in submit order, from the end workers take from
    with db.connect() as conn_:
        marked = conn_.execute(sa.text("SELECT count(*) FROM task_outbox WHERE published_at IS NOT NULL")).scalar_one()
    assert marked == 6


class HeldAnswers:
    """A TCP proxy in front of Redis that passes commands on at once and holds Redis's answers while
    :attr:`passing` is clear: what a submit waits for, and what it does not, becomes visible."""

    def __init__(self, redis_url: str) -> None:
        self.target = urllib.parse.urlsplit(redis_url)
        self.passing = asyncio.Event()
        self.passing.set()
        self.commands = bytearray()  # everything the clients sent, as Redis received it
        self.url = ""

    async def __aenter__(self) -> HeldAnswers:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.passing.set()
        self.server.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        redis_r, redis_w = await asyncio.open_connection(self.target.hostname, self.target.port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, answers: bool) -> None:
            try:
                while data := await src.read(65536):
                    if answers:
                        await self.passing.wait()
                    else:
                        self.commands += data
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.close()

        await asyncio.gather(pump(client_r, redis_w, False), pump(redis_r, client_w, True), return_exceptions=True)


def unpublished(db: sa.Engine) -> int:
    with db.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM task_outbox WHERE published_at IS NULL")).scalar_one())


async def through(runtime: ApiRuntime, url: str) -> Enqueuer:
    """An enqueuer of ``runtime``'s store whose Redis client goes to ``url``, with one connection
    open (handshake answered); the caller closes it."""
    enqueuer = Enqueuer(url, runtime.store, runtime.enqueuer.epochs)
    assert await enqueuer.epoch(max_age=0)
    return enqueuer


async def test_submits_resume_once_their_lpush_is_written_and_are_marked_only_once_redis_answered(
    runtime: ApiRuntime, tasklift_env: dict[str, str], db: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = redis.Redis.from_url(tasklift_env["TASKLIFT_REDIS_URL"])
    await warm_pool(runtime, 1)
    async with HeldAnswers(tasklift_env["TASKLIFT_REDIS_URL"]) as proxy:
        enqueuer = await through(runtime, proxy.url)
        proxy.passing.clear()
        ids = [uuid.uuid4() for _ in range(4)]
        # Well within the 2 s a wait for Redis's answer would take to time out:
        rows = await asyncio.wait_for(asyncio.gather(*(enqueuer.submit(*submission(t)) for t in ids)), 1)
        assert [row["id"] for row in rows] == ids  # answered while Redis's answer is still held
        assert proxy.commands.count(b"LPUSH") == 1  # written before the callers resumed
        deadline = time.monotonic() + 5
        while broker.llen("tasklift.cpu") < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert broker.llen("tasklift.cpu") == 4
        await asyncio.sleep(dispatch.Enqueuer.MARK_DELAY * 4)
        assert unpublished(db) == 4  # not marked: Redis has not confirmed them yet
        proxy.passing.set()
        await enqueuer.aclose()  # the confirmation read, the marks written
    assert unpublished(db) == 0


async def test_a_publish_redis_never_confirms_leaves_the_outbox_rows_for_the_dispatcher(
    runtime: ApiRuntime,
    tasklift_env: dict[str, str],
    db: sa.Engine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await warm_pool(runtime, 1)
    monkeypatch.setattr(dispatch.Enqueuer, "TIMEOUT", 0.3)
    async with HeldAnswers(tasklift_env["TASKLIFT_REDIS_URL"]) as proxy:
        enqueuer = await through(runtime, proxy.url)
        proxy.passing.clear()
        ids = [uuid.uuid4() for _ in range(3)]
        rows = await asyncio.wait_for(asyncio.gather(*(enqueuer.submit(*submission(t)) for t in ids)), 5)
        assert [row["id"] for row in rows] == ids
        with caplog.at_level(logging.WARNING, logger="tasklift.queue.dispatch"):
            await asyncio.wait_for(enqueuer.aclose(), 5)  # the confirmation times out
    assert "publish not confirmed" in caplog.text
    assert unpublished(db) == 3  # the dispatcher sends them again; the claim drops a duplicate


async def test_a_submit_whose_caller_gives_up_after_its_statement_went_out_is_still_published(
    runtime: ApiRuntime, tasklift_env: dict[str, str], db: sa.Engine
) -> None:
    broker = redis.Redis.from_url(get_settings().redis_url or "")
    await warm_pool(runtime, 1)
    ids = [uuid.uuid4() for _ in range(3)]
    callers = [asyncio.create_task(runtime.enqueuer.submit(*submission(t))) for t in ids]
    await asyncio.sleep(0)  # the callers join; the first one starts the statement
    await asyncio.sleep(0)  # the statement takes all three and goes out
    assert not runtime.enqueuer._submits._pending
    callers[1].cancel()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert isinstance(outcomes[1], asyncio.CancelledError)
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM tasks")).scalar_one() == 3
    queued = {json.loads(raw)["headers"]["id"] for raw in broker.lrange("tasklift.cpu", 0, -1)}
    assert queued == {str(t) for t in ids}  # the task of the caller that left too: it exists, so it runs


async def test_a_broker_outage_on_submit_still_answers_with_the_committed_row_and_leaves_the_outbox_row(
    runtime: ApiRuntime, tasklift_env: dict[str, str], db: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await warm_pool(runtime, 1)
    enqueuer = Enqueuer("redis://127.0.0.1:1/0", runtime.store, runtime.enqueuer.epochs)  # nothing listens there
    ids = [uuid.uuid4() for _ in range(2)]
    rows = await asyncio.gather(*(enqueuer.submit(*submission(t)) for t in ids))
    await enqueuer.aclose()
    assert [row["id"] for row in rows] == ids
    with db.connect() as conn:
        unpublished = conn.execute(sa.text("SELECT count(*) FROM task_outbox WHERE published_at IS NULL")).scalar_one()
    assert unpublished == 2  # the dispatcher sends them once the broker is back


async def test_a_request_yields_its_turn_to_a_due_statement_that_has_enough_callers(
    runtime: ApiRuntime,
    tasklift_env: dict[str, str],
) -> None:
    await warm_pool(runtime, 3)  # every statement finds a connection at once
    sizes: list[int] = []

    async def execute(conn: object, items: list[int]) -> list[int]:
        sizes.append(len(items))
        await conn.fetchval("SELECT 1")  # type: ignore[attr-defined]
        return items

    def callers(gatherer: aio.Gathered[int, int], taking_turns: bool) -> list[asyncio.Task[int]]:
        async def caller(i: int) -> int:
            if taking_turns:
                await gatherer.turn()
            return await gatherer.call(i)

        return [asyncio.create_task(caller(i)) for i in range(40)]

    together = aio.Gathered(runtime.store, execute)
    assert await asyncio.gather(*callers(together, taking_turns=False)) == list(range(40))
    assert sizes == [40]  # all forty reach their call before the statement starts

    sizes.clear()
    taking_turns = aio.Gathered(runtime.store, execute)
    assert taking_turns.enough == 16
    assert await asyncio.gather(*callers(taking_turns, taking_turns=True)) == list(range(40))
    assert sizes == [16, 16, 8]  # each statement went out as soon as it had enough
