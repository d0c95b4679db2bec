"""The worker's one-statement writes against real PostgreSQL: claim, outcome, progress, log lines and
heartbeats are compare-and-set statements that append their event only when they win, are fenced by
the attempt, and record exactly the event they return (the one published on Redis)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from tasklift.blobs import claims
from tasklift.settings import database_url, get_settings
from tasklift.store import leases
from tasklift.store import repository as repo
from tasklift.store.db import is_transient, make_engine, retry_transient
from tasklift.tasks.states import TaskStatus
from tests.support import store
from tests.support.store import insert_tasks, new_task

#: How claims and outcomes are written: "prepared" is a server-side prepared statement per
#: connection (the default), "plain" the same SQL text without it (TASKLIFT_DB_STATEMENT_CACHE_SIZE=0,
#: behind PgBouncer). Both must behave exactly alike.
PATHS = ("prepared", "plain")


def _use_path(path: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[sa.Engine]:
    """The worker's autocommit engine (a runtime's ``writer``), on the path ``path``."""
    if path == "plain":
        monkeypatch.setenv("TASKLIFT_DB_STATEMENT_CACHE_SIZE", "0")
        get_settings.cache_clear()
    made = make_engine(database_url(), 5, autocommit=True)
    yield made
    made.dispose()


@pytest.fixture(params=PATHS)
def writer(
    request: pytest.FixtureRequest, tasklift_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[sa.Engine]:
    yield from _use_path(request.param, monkeypatch)


@pytest.fixture(params=PATHS)
def prepared_writer(
    request: pytest.FixtureRequest, tasklift_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[sa.Engine]:
    """The worker's autocommit engine, on each path."""
    yield from _use_path(request.param, monkeypatch)


def submit(task_id: uuid.UUID | None = None) -> uuid.UUID:
    task_id = task_id or uuid.uuid4()
    insert_tasks(new_task("test_noop", "cpu", task_id=task_id))
    return task_id


def stored(db: sa.Engine, task_id: uuid.UUID) -> tuple[dict[str, Any], list[tuple[int, str, dict[str, Any]]], int]:
    """(task row, events in order, outbox rows) as PostgreSQL has them."""
    with db.connect() as conn:
        task = conn.execute(sa.text("SELECT * FROM tasks WHERE id = :t"), {"t": task_id}).mappings().one()
        events = conn.execute(
            sa.text("SELECT seq, kind, data FROM task_events WHERE task_id = :t ORDER BY seq"), {"t": task_id}
        ).all()
        outbox = conn.execute(sa.text("SELECT count(*) FROM task_outbox WHERE task_id = :t"), {"t": task_id}).scalar()
    return dict(task), [tuple(e) for e in events], int(outbox)


def assert_recorded(db: sa.Engine, event: repo.Event) -> None:
    """The returned (published) event is exactly the stored one, and it is the task's latest."""
    task, events, _ = stored(db, uuid.UUID(event.task_id))
    assert events[-1] == (event.seq, event.kind, event.data)
    assert task["last_seq"] == event.seq


def claim(writer: sa.Engine, task_id: uuid.UUID, worker: str = "w1") -> Any:
    with writer.connect() as conn:
        return leases.take_lease(conn, task_id, worker, lease=30)


def finish(writer: sa.Engine, task_id: uuid.UUID, attempt: int, status: TaskStatus, **kwargs: Any) -> Any:
    with writer.connect() as conn:
        return leases.finish(conn, task_id, attempt, status, **kwargs)


def test_a_claim_moves_pending_to_running_appends_its_event_and_deletes_the_outbox_row(
    writer: sa.Engine, db: sa.Engine
) -> None:
    task_id = submit()
    assert stored(db, task_id)[2] == 1
    done = claim(writer, task_id)
    assert done is not None
    row, event = done
    assert row["status"] == "RUNNING" and row["attempts"] == 1 and row["worker"] == "w1"
    assert row["input"] == {} and row["task_type"] == "test_noop" and row["started_at"] is not None
    assert event.seq == 2 and event.kind == "status"
    assert event.data == {"status": "RUNNING", "progress": None, "attempts": 1, "cancel_requested": False}
    assert_recorded(db, event)
    task, events, outbox = stored(db, task_id)
    assert outbox == 0 and len(events) == 2
    lease_left = (task["lease_expires_at"] - task["updated_at"]).total_seconds()
    assert 29 < lease_left <= 30


def test_a_claim_of_a_task_that_is_not_pending_changes_nothing_and_writes_no_event(
    writer: sa.Engine, db: sa.Engine
) -> None:
    running = submit()
    assert claim(writer, running) is not None
    cancelled = submit()
    assert store.cancel(cancelled) is not None
    cancel_flagged = submit()  # PENDING with the flag set (a retry's requeue racing a cancel): never runs
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE tasks SET cancel_requested = true WHERE id = :t"), {"t": cancel_flagged})
    for task_id in (running, cancelled, cancel_flagged):
        before = stored(db, task_id)
        assert claim(writer, task_id, worker="w2") is None
        assert stored(db, task_id) == before  # same row (worker, attempts, lease), same events, same outbox
    assert claim(writer, uuid.uuid4()) is None


def test_concurrent_claims_of_one_task_have_exactly_one_winner(writer: sa.Engine, db: sa.Engine) -> None:
    task_id = submit()
    results: list[Any] = []
    barrier = threading.Barrier(8)

    def race(n: int) -> None:
        barrier.wait()
        results.append(claim(writer, task_id, worker=f"w{n}"))

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r is not None]
    assert len(results) == 8 and len(winners) == 1
    task, events, _ = stored(db, task_id)
    assert task["attempts"] == 1 and task["worker"] == winners[0][0]["worker"]
    assert [e[:2] for e in events] == [(1, "status"), (2, "status")]


def test_an_outcome_is_fenced_by_the_attempt_and_records_the_event_it_returns(writer: sa.Engine, db: sa.Engine) -> None:
    task_id = submit()
    claim(writer, task_id)
    with writer.connect() as conn:  # attempt 1's lease is taken over by attempt 2
        conn.execute(
            sa.text("UPDATE tasks SET lease_expires_at = now() - interval '1 s' WHERE id = :t"), {"t": task_id}
        )
    with db.begin() as conn:
        assert leases.recover_expired(conn, task_id, 1, max_redispatches=5) is not None
    assert claim(writer, task_id, worker="w2") is not None
    with writer.connect() as conn:
        assert leases.record_progress(conn, task_id, 2, {"percent": 40.0, "message": "m"}, lease=30) is not None
    before = stored(db, task_id)
    assert finish(writer, task_id, 1, TaskStatus.SUCCESS, result={"stale": True}) is None
    with writer.connect() as conn:
        assert leases.record_progress(conn, task_id, 1, {"percent": 90.0}, lease=30) is None
        assert leases.append_log(conn, task_id, 1, "INFO", "stale") is None
        assert leases.heartbeat(conn, task_id, 1, lease=30) is None
    assert stored(db, task_id) == before
    done = finish(writer, task_id, 2, TaskStatus.FAILED, error={"type": "Boom", "message": "no"})
    assert done is not None
    row, event = done
    assert row["status"] == "FAILED" and row["error"] == {"type": "Boom", "message": "no"}
    # No progress given: the stored one stays, and the event says so.
    assert event.data == {
        "status": "FAILED",
        "progress": {"percent": 40.0, "message": "m"},
        "attempts": 2,
        "cancel_requested": False,
        "error": {"type": "Boom", "message": "no"},
    }
    assert_recorded(db, event)
    task, _, _ = stored(db, task_id)
    assert task["completed_at"] is not None and task["lease_expires_at"] is None
    assert finish(writer, task_id, 2, TaskStatus.SUCCESS, result=1) is None  # a second outcome is refused too


@pytest.mark.parametrize(
    ("status", "kwargs", "expected"),
    [
        (
            TaskStatus.SUCCESS,
            {"result": {"n": [1, 2.5, "x"]}, "progress": {"percent": 100.0}},
            {"result": {"n": [1, 2.5, "x"]}},
        ),
        (TaskStatus.SUCCESS, {"result": None}, {"result": None}),
        (
            TaskStatus.SUCCESS,
            {"result": {claims.REF: {"key": "k", "size": 9}}},
            {"result": {claims.REF: {"key": "k", "size": 9}}},  # the reference; the HTTP edge renders the URL
        ),
        (TaskStatus.FAILED, {"error": None}, {}),
        (TaskStatus.CANCELLED, {"error": {"type": "x", "message": "y"}}, {}),
    ],
)
def test_every_outcome_event_matches_what_is_stored(
    writer: sa.Engine, db: sa.Engine, status: TaskStatus, kwargs: dict[str, Any], expected: dict[str, Any]
) -> None:
    task_id = submit()
    claim(writer, task_id)
    assert store.cancel(task_id) is not None  # RUNNING: the flag, which shows in the outcome's event
    done = finish(writer, task_id, 1, status, **kwargs)
    assert done is not None
    _, event = done
    progress = kwargs.get("progress")
    assert event.data == {
        "status": status.value,
        "progress": progress,
        "attempts": 1,
        "cancel_requested": True,
        **expected,
    }
    assert_recorded(db, event)


def test_progress_and_log_lines_append_the_events_they_return(writer: sa.Engine, db: sa.Engine) -> None:
    task_id = submit()
    claim(writer, task_id)
    with writer.connect() as conn:
        moved = leases.record_progress(conn, task_id, 1, {"percent": 12.5, "current": 1, "total": 8}, lease=30)
        assert moved is not None and moved[1] is False
        assert_recorded(db, moved[0])
        line = leases.append_log(conn, task_id, 1, "WARNING", "it's 'quoted' and \\ escaped")
        assert line is not None and line.data == {
            "status": "RUNNING",
            "level": "WARNING",
            "message": "it's 'quoted' and \\ escaped",
        }
        assert_recorded(db, line)
        unfenced = leases.append_log(conn, task_id, None, "INFO", "from the runner")
        assert unfenced is not None and unfenced.seq == line.seq + 1
        assert_recorded(db, unfenced)
    assert stored(db, task_id)[0]["progress"] == {"percent": 12.5, "current": 1, "total": 8}


def test_the_heartbeat_thread_renews_a_running_lease_and_stops_when_unwatched(
    writer: sa.Engine, db: sa.Engine, tasklift_env: dict[str, str]
) -> None:
    from tasklift.events.bus import EventAnnouncer
    from tasklift.queue.runtime import Heartbeats
    from tasklift.settings import redis_url
    from tasklift.tasks.context import TaskContext

    def lease(task_id: uuid.UUID) -> Any:
        return stored(db, task_id)[0]["lease_expires_at"]

    def context(task_id: uuid.UUID) -> TaskContext:
        return TaskContext(
            task_id=task_id, attempt=1, task_type="test_noop", engine=db, writer=writer,
            announcer=EventAnnouncer(redis_url()), lease_seconds=30, progress_interval=0.5,
        )  # fmt: skip

    beats = Heartbeats(0.2)
    short, long_ = submit(), submit()
    claim(writer, short), claim(writer, long_)
    first_short, first_long = lease(short), lease(long_)
    quick = context(short)
    beats.watch(quick)
    beats.unwatch(quick)  # shorter than the interval: no write at all
    slow = context(long_)
    beats.watch(slow)
    time.sleep(0.7)
    renewed = lease(long_)
    assert renewed > first_long
    with db.begin() as conn:  # a cancel is noticed by the next beat
        conn.execute(sa.text("UPDATE tasks SET cancel_requested = true WHERE id = :t"), {"t": long_})
    deadline = time.monotonic() + 5
    while not slow.cancel_requested and time.monotonic() < deadline:
        time.sleep(0.05)
    assert slow.cancel_requested
    beats.unwatch(slow)
    after = lease(long_)
    time.sleep(0.5)
    assert lease(long_) == after  # no beat once unwatched
    assert lease(short) == first_short


def test_a_claim_event_goes_out_with_the_outcome_or_alone_once_the_task_runs_on(
    writer: sa.Engine, db: sa.Engine, tasklift_env: dict[str, str]
) -> None:
    """Publishing is after commit and in seq order; the claim event waits at most announce_after."""
    import json

    import redis

    from tasklift.events.bus import EventAnnouncer, channel
    from tasklift.queue.runtime import Heartbeats
    from tasklift.settings import redis_url
    from tasklift.tasks.context import TaskContext

    listener = redis.Redis.from_url(tasklift_env["TASKLIFT_REDIS_URL"]).pubsub(ignore_subscribe_messages=True)
    beats = Heartbeats(interval=30, announce_after=0.3)

    def run(task_id: uuid.UUID) -> tuple[TaskContext, repo.Event]:
        listener.subscribe(channel(str(task_id)))
        _, event = claim(writer, task_id)
        ctx = TaskContext(
            task_id=task_id, attempt=1, task_type="test_noop", engine=db, writer=writer,
            announcer=EventAnnouncer(redis_url()), lease_seconds=30, progress_interval=0.5,
        )  # fmt: skip
        ctx.hold(event)
        beats.watch(ctx)
        return ctx, event

    def received(wait: float) -> list[tuple[int, str]]:
        out, deadline = [], time.monotonic() + wait
        while time.monotonic() < deadline:
            message = listener.get_message(timeout=0.02)
            if message:
                data = json.loads(message["data"])
                out.append((data["seq"], data["data"]["status"]))
        return out

    short = submit()
    ctx, _ = run(short)
    beats.unwatch(ctx)
    assert received(0.5) == []  # held: the task ended before announce_after
    with writer.connect() as conn:
        _, outcome = leases.finish(conn, short, 1, TaskStatus.SUCCESS, result=None)
    ctx.announce([outcome])
    assert received(0.3) == [(2, "RUNNING"), (3, "SUCCESS")]

    long_ = submit()
    ctx, _ = run(long_)
    assert received(0.15) == []
    assert received(0.5) == [(2, "RUNNING")]  # announced alone by the heartbeat thread
    ctx.progress(50)
    assert received(0.3) == [(3, "RUNNING")]  # the progress event; nothing repeated
    beats.unwatch(ctx)
    listener.close()


def test_unwatch_waits_for_a_beat_in_flight_but_not_forever(writer: sa.Engine, db: sa.Engine) -> None:
    """The outcome is recorded after the last heartbeat write; a hung one delays it by ``timeout`` at most."""
    from tasklift.events.bus import EventAnnouncer
    from tasklift.queue.runtime import Heartbeats
    from tasklift.settings import redis_url
    from tasklift.tasks.context import TaskContext

    task_id = submit()
    claim(writer, task_id)
    beats = Heartbeats(0.1, announce_after=60)

    def context() -> TaskContext:
        return TaskContext(
            task_id=task_id, attempt=1, task_type="test_noop", engine=db, writer=writer,
            announcer=EventAnnouncer(redis_url()), lease_seconds=30, progress_interval=0.5,
        )  # fmt: skip

    for timeout, release_after in ((0.5, None), (5.0, 0.4)):
        ctx = context()
        lease_before = stored(db, task_id)[0]["lease_expires_at"]
        with db.connect() as locker:  # the row lock makes the heartbeat's UPDATE wait
            locker.execute(sa.text("SELECT 1 FROM tasks WHERE id = :t FOR UPDATE"), {"t": task_id})
            beats.watch(ctx)
            time.sleep(0.3)  # the first beat is in flight, blocked
            if release_after is not None:
                threading.Timer(release_after, locker.rollback).start()
            started = time.monotonic()
            beats.unwatch(ctx, timeout=timeout)
            waited = time.monotonic() - started
            if release_after is None:
                assert timeout - 0.05 < waited < timeout + 1  # gave up waiting
                locker.rollback()
                time.sleep(0.3)  # the beat ends; unwatched, it is not rescheduled
            else:
                assert release_after - 0.05 < waited < timeout  # returned once the beat was done
                assert stored(db, task_id)[0]["lease_expires_at"] > lease_before


def test_a_heartbeat_thread_asleep_after_idling_wakes_for_the_next_task(
    writer: sa.Engine, db: sa.Engine, tasklift_env: dict[str, str]
) -> None:
    from tasklift.events.bus import EventAnnouncer
    from tasklift.queue.runtime import Heartbeats
    from tasklift.settings import redis_url
    from tasklift.tasks.context import TaskContext

    beats = Heartbeats(0.2, announce_after=60)
    beats.IDLE_SECONDS = 0.1

    def beat_once(task_id: uuid.UUID) -> None:
        claim(writer, task_id)
        before = stored(db, task_id)[0]["lease_expires_at"]
        ctx = TaskContext(
            task_id=task_id, attempt=1, task_type="test_noop", engine=db, writer=writer,
            announcer=EventAnnouncer(redis_url()), lease_seconds=30, progress_interval=0.5,
        )  # fmt: skip
        beats.watch(ctx)
        time.sleep(0.6)
        beats.unwatch(ctx)
        assert stored(db, task_id)[0]["lease_expires_at"] > before

    beat_once(submit())
    time.sleep(0.5)  # no task for longer than IDLE_SECONDS: the thread waits to be notified
    assert beats._asleep
    beat_once(submit())


def test_the_worker_path_rides_out_a_lost_connection_and_a_forgotten_statement(
    prepared_writer: sa.Engine, db: sa.Engine
) -> None:
    writer = prepared_writer
    first, second, third = submit(), submit(), submit()
    assert claim(writer, first) is not None  # the statement is prepared on this connection now
    with db.connect() as conn:  # PostgreSQL drops the worker's connections (a restart, a failover)
        killed = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'tasklift' AND pid <> pg_backend_pid()"
            )
        ).scalar()
    assert killed
    with pytest.raises(sa.exc.DBAPIError) as lost:
        claim(writer, second)
    assert is_transient(lost.value) and lost.value.connection_invalidated
    assert stored(db, second)[0]["status"] == "PENDING"
    done = retry_transient(lambda: claim(writer, second))  # a new connection, prepared again
    assert done is not None and done[0]["attempts"] == 1
    with writer.connect() as conn:  # the session forgets its prepared statements
        conn.exec_driver_sql("DEALLOCATE ALL")
    assert claim(writer, third) is not None
    assert finish(writer, third, 1, TaskStatus.SUCCESS, result=3) is not None
    assert stored(db, third)[0]["result"] == 3


def test_a_failing_statement_on_the_worker_path_leaves_its_connection_usable(
    prepared_writer: sa.Engine, db: sa.Engine
) -> None:
    writer = prepared_writer
    task_id = submit()
    assert claim(writer, task_id) is not None
    with pytest.raises(sa.exc.DBAPIError) as failed:  # a JSON value PostgreSQL refuses (\u0000 in jsonb)
        finish(writer, task_id, 1, TaskStatus.SUCCESS, result="nul \u0000")
    assert not is_transient(failed.value)
    assert stored(db, task_id)[0]["status"] == "RUNNING"  # autocommit: nothing half-done
    assert finish(writer, task_id, 1, TaskStatus.SUCCESS, result="ok") is not None


def test_psycopg_prepares_the_lease_and_the_outcome_unless_told_not_to(
    prepared_writer: sa.Engine, request: pytest.FixtureRequest
) -> None:
    writer = prepared_writer
    for _ in range(6):  # psycopg prepares a statement on its prepare_threshold-th run (5) on a connection
        task_id = submit()
        assert claim(writer, task_id) is not None
        assert finish(writer, task_id, 1, TaskStatus.SUCCESS, result=1) is not None
    with writer.connect() as conn:  # the one pooled connection the statements ran on
        prepared = conn.exec_driver_sql(
            "SELECT statement FROM pg_prepared_statements WHERE statement LIKE '%%INSERT INTO task_events%%'"
        ).scalars()
        kinds = {"lease" if "SET status = 'RUNNING'" in sql else "outcome" for sql in prepared}
    expected = set() if "plain" in request.node.callspec.id else {"lease", "outcome"}
    assert kinds == expected
