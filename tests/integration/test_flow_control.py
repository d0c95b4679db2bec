"""Flow control decided in PostgreSQL (issue 21, docs/flow-control.md): delayed tasks, expiry, bad
input, and two dispatchers racing. Real API, PostgreSQL, Redis, Celery workers and reapers."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa

from tasklift.client import StreamEvent, TaskliftClient
from tasklift.settings import get_settings
from tests.conftest import wait_for_status


def queue_length(tasklift_env: dict[str, str]) -> int:
    """Messages in the Celery queue (the Redis list) of test_noop's queue."""
    return int(redis.Redis.from_url(tasklift_env["TASKLIFT_REDIS_URL"]).llen(get_settings().cpu_queue))


def submit(http: httpx.Client, **body: Any) -> dict[str, Any]:
    resp = http.post("/tasks", json={"task_type": "test_noop", **body})
    assert resp.status_code == 202, resp.text
    return dict(resp.json())


def running_event_at(db: sa.Engine, task_id: str) -> tuple[datetime, datetime]:
    """(when the task's RUNNING event was written, its scheduled_for), both on the database's clock."""
    with db.connect() as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(
                sa.text(
                    "SELECT e.created_at, t.scheduled_for FROM task_events e JOIN tasks t ON t.id = e.task_id"
                    " WHERE e.task_id = :t AND e.kind = 'status' AND e.data ->> 'status' = 'RUNNING'"
                ),
                {"t": task_id},
            ).one()
        )


@pytest.mark.parametrize("how", ["run_at", "delay_seconds"])
def test_a_delayed_task_stays_out_of_redis_until_due_then_runs_not_before(
    how: str, client: httpx.Client, tasklift_env: dict[str, str], start_reaper, start_worker, db: sa.Engine
) -> None:
    start_reaper()
    when = {"run_at": (datetime.now(UTC) + timedelta(seconds=3)).isoformat()} if how == "run_at" else {}
    task = submit(client, **(when or {"delay_seconds": 3}))
    assert task["status"] == "PENDING" and task["waiting_reason"] == "scheduled"
    scheduled = datetime.fromisoformat(task["scheduled_for"])
    assert scheduled > datetime.now(UTC) + timedelta(seconds=1.5)
    while datetime.now(UTC) < scheduled - timedelta(seconds=0.5):  # several dispatcher rounds (0.2 s)
        assert queue_length(tasklift_env) == 0, "the delayed task reached Redis early"
        assert client.get(f"/tasks/{task['task_id']}").json()["waiting_reason"] == "scheduled"
        time.sleep(0.1)
    deadline = time.monotonic() + 10
    while queue_length(tasklift_env) == 0:  # no worker yet: once due, the dispatcher publishes it
        assert time.monotonic() < deadline, "the due task was never published"
        time.sleep(0.05)
    assert datetime.now(UTC) >= scheduled - timedelta(seconds=0.2)  # (the test's clock against the database's)
    assert client.get(f"/tasks/{task['task_id']}").json()["waiting_reason"] == "queued"
    start_worker(concurrency=1)
    done = wait_for_status(client, task["task_id"], "SUCCESS")
    ran_at, scheduled_for = running_event_at(db, task["task_id"])
    assert ran_at >= scheduled_for and done["attempts"] == 1


def test_a_past_run_at_runs_now_and_an_undelayed_task_is_published_at_submit(
    client: httpx.Client, tasklift_env: dict[str, str], start_worker
) -> None:
    past = submit(client, run_at="2020-01-01T00:00:00Z", priority=3)
    assert past["scheduled_for"] == "2020-01-01T00:00:00Z" and past["priority"] == 3
    assert past["waiting_reason"] == "queued"
    assert queue_length(tasklift_env) == 1  # published inline: no dispatcher runs in this test
    start_worker(concurrency=1)
    assert wait_for_status(client, past["task_id"], "SUCCESS")["waiting_reason"] is None


@pytest.mark.parametrize(
    "fields",
    [
        {"run_at": "next tuesday"},
        {"run_at": "10000-01-01T00:00:00Z"},
        {"run_at": "2999-01-01T00:00:00Z"},  # beyond max_schedule_seconds
        {"run_at": 17},
        {"delay_seconds": -5},
        {"delay_seconds": "5"},
        {"delay_seconds": 1e12},
        {"run_at": "2030-01-01T00:00:00Z", "delay_seconds": 1},
        {"ttl_seconds": 0},
        {"ttl_seconds": [1]},
        {"expires_at": "2020-01-01T00:00:00Z"},
        {"delay_seconds": 100, "ttl_seconds": 50},
        {"priority": 10},
        {"priority": -1},
        {"priority": "high"},
        {"priority": None, "ttl_seconds": False},
    ],
)
def test_absurd_flow_values_are_422_problems_and_create_nothing(client: httpx.Client, fields: dict[str, Any]) -> None:
    resp = client.post("/tasks", json={"task_type": "test_noop", **fields})
    assert resp.status_code == 422 and resp.headers["Content-Type"] == "application/problem+json", resp.text
    problem = resp.json()
    assert problem["errors"] and problem["errors"][0]["loc"][0] == "body"
    assert problem["errors"][0]["loc"][1] in fields
    batch = client.post("/tasks:batch", json={"items": [{"task": {"task_type": "test_noop", **fields}}]})
    assert batch.status_code == 200 and batch.json()["items"][0]["status"] == 422
    assert client.get("/tasks").json()["items"] == []


def test_an_expired_task_ends_expired_never_runs_and_its_stream_ends_with_it(
    api: str, client: httpx.Client, tasklift_env: dict[str, str], start_reaper, start_worker, db: sa.Engine
) -> None:
    task = submit(client, ttl_seconds=1.5)
    assert task["expires_at"] is not None and queue_length(tasklift_env) == 1  # published at submit
    events: list[StreamEvent] = []
    with TaskliftClient(api) as tl:
        reader = threading.Thread(target=lambda: events.extend(tl.stream(task["task_id"])), daemon=True)
        reader.start()
        time.sleep(2)  # past its deadline with no worker: not started
        start_reaper()
        expired = wait_for_status(client, task["task_id"], "EXPIRED", timeout=10)
        reader.join(15)
    assert not reader.is_alive(), "the stream did not end with EXPIRED"
    assert events[-1].kind == "status" and events[-1].status == "EXPIRED" and events[-1].terminal
    assert expired["attempts"] == 0 and expired["started_at"] is None and expired["completed_at"]
    assert expired["error"]["type"] == "Expired" and expired["waiting_reason"] is None
    monitor = client.get(f"/operations/{task['task_id']}").json()
    assert monitor["status"] == "Failed" and monitor["error"]["code"] == "Expired"
    operation = client.get(f"/v1/operations/{task['task_id']}").json()
    assert operation["done"] is True and operation["error"]["code"] == 4  # DEADLINE_EXCEEDED
    # Its message was still in Redis: a worker takes it, the lease refuses it, it never runs.
    start_worker(concurrency=1)
    deadline = time.monotonic() + 15
    while queue_length(tasklift_env):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.5)
    after = client.get(f"/tasks/{task['task_id']}").json()
    assert after["status"] == "EXPIRED" and after["attempts"] == 0
    with db.connect() as conn:
        statuses = conn.execute(
            sa.text("SELECT data ->> 'status' FROM task_events WHERE task_id = :t AND kind = 'status' ORDER BY seq"),
            {"t": task["task_id"]},
        ).scalars()
        assert list(statuses) == ["PENDING", "EXPIRED"]
    assert client.get("/tasks", params={"status": "EXPIRED"}).json()["items"][0]["task_id"] == task["task_id"]


def test_the_lease_refuses_an_expired_or_early_task(client: httpx.Client, engine: sa.Engine) -> None:
    from tasklift.store import leases

    expiring = submit(client, ttl_seconds=0.5)
    early = submit(client, delay_seconds=60)
    time.sleep(1)  # no reaper: still PENDING, but past its deadline
    with engine.connect() as conn:
        for task in (expiring, early):
            assert leases.take_lease(conn, task["task_id"], "w1", 30) is None
            conn.commit()
    assert client.get(f"/tasks/{expiring['task_id']}").json()["status"] == "PENDING"
    ontime = submit(client, ttl_seconds=60)
    with engine.connect() as conn:
        taken = leases.take_lease(conn, ontime["task_id"], "w1", 30)
        conn.commit()
    assert taken is not None and taken[0]["status"] == "RUNNING"


def test_a_task_that_starts_in_time_is_not_expired(client: httpx.Client, start_reaper, start_worker) -> None:
    start_reaper()
    start_worker(concurrency=1)
    task = submit(client, ttl_seconds=2)
    assert wait_for_status(client, task["task_id"], "SUCCESS")["attempts"] == 1
    time.sleep(2.5)  # its deadline passes after it finished: nothing changes
    assert client.get(f"/tasks/{task['task_id']}").json()["status"] == "SUCCESS"


def test_two_dispatchers_publish_each_due_task_exactly_once(
    client: httpx.Client, tasklift_env: dict[str, str], start_reaper, db: sa.Engine
) -> None:
    items = [{"task": {"task_type": "test_noop", "delay_seconds": 2}} for _ in range(300)]
    resp = client.post("/tasks:batch", json={"items": items})
    assert resp.status_code == 200 and resp.json()["accepted"] == 300
    assert queue_length(tasklift_env) == 0
    start_reaper(), start_reaper()  # two dispatchers racing for the same due rows
    deadline = time.monotonic() + 20
    while True:
        with db.connect() as conn:
            left = conn.execute(sa.text("SELECT count(*) FROM task_outbox WHERE published_at IS NULL")).scalar_one()
        if left == 0:
            break
        assert time.monotonic() < deadline, f"{left} intents never published"
        time.sleep(0.1)
    time.sleep(1.5)  # more rounds of both, and a reconciler look (1 s): nothing is sent again
    assert queue_length(tasklift_env) == 300  # 300 messages: none twice, none lost


def test_a_delayed_task_with_an_idempotency_key_waits_too_and_can_be_cancelled_while_it_waits(
    client: httpx.Client, tasklift_env: dict[str, str], start_reaper
) -> None:
    body = {"task_type": "test_noop", "delay_seconds": 1.5}
    first = client.post("/tasks", json=body, headers={"Idempotency-Key": "later-1"})
    again = client.post("/tasks", json=body, headers={"Idempotency-Key": "later-1"})
    assert first.status_code == again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert first.json()["task_id"] == again.json()["task_id"] and first.json()["waiting_reason"] == "scheduled"
    assert queue_length(tasklift_env) == 0  # the keyed path publishes no delayed task either
    waiting = submit(client, delay_seconds=1.5)
    assert client.delete(f"/tasks/{waiting['task_id']}").status_code == 204
    start_reaper()
    deadline = time.monotonic() + 15
    while queue_length(tasklift_env) == 0:  # the keyed one, once due
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1)
    assert queue_length(tasklift_env) == 1  # the cancelled one is never published
    assert client.get(f"/tasks/{waiting['task_id']}").json()["status"] == "CANCELLED"


def test_a_dispatcher_that_dies_mid_batch_loses_nothing_and_runs_nothing_twice(
    client: httpx.Client, tasklift_env: dict[str, str], engine: sa.Engine, db: sa.Engine, start_worker
) -> None:
    from tasklift.queue.broker import Broker
    from tasklift.store import outbox
    from tasklift.store.repository import Dispatch

    items = [{"task": {"task_type": "test_effect", "key": f"k{i}", "delay_seconds": 0.5}} for i in range(40)]
    assert client.post("/tasks:batch", json={"items": items}).json()["accepted"] == 40
    time.sleep(0.7)  # all due
    broker = Broker(tasklift_env["TASKLIFT_REDIS_URL"])
    dying = engine.connect()
    dying.begin()
    rows = outbox.take_due_outbox(dying, limit=500)
    assert len(rows) == 40
    for row in rows[:25]:  # published part of its batch, then died before marking and committing
        broker.enqueue(Dispatch(row["task_id"], row["queue"], row["task_type"], row["traceparent"], row["intent_seq"]))
    assert broker.dispatch_due(engine) == 0  # meanwhile another dispatcher skips the locked rows
    dying.invalidate()  # the connection is gone: its transaction rolls back, the locks go
    dying.close()
    # The server ends the dropped session (and releases its row locks) a moment later, not at once:
    # the survivor's next rounds send the whole batch.
    sent, deadline = 0, time.monotonic() + 10
    while sent < 40 and time.monotonic() < deadline:
        sent += broker.dispatch_due(engine)
        time.sleep(0.05)
    assert sent == 40
    start_worker(concurrency=2)
    for task in client.get("/tasks", params={"limit": 100}).json()["items"]:
        assert wait_for_status(client, task["task_id"], "SUCCESS")["attempts"] == 1
    with db.connect() as conn:
        effects = conn.exec_driver_sql("SELECT key, count(*) FROM test_effects GROUP BY key").all()
    assert sorted(effects) == sorted((f"k{i}", 1) for i in range(40))  # 25 delivered twice, each ran once
    broker.close()


def test_the_autoscalers_load_leaves_a_delayed_task_out_until_it_is_due(client: httpx.Client, db: sa.Engine) -> None:
    from tasklift.store.scaling import pool_load_query

    query = sa.text(pool_load_query(get_settings().cpu_queue))

    def load() -> int:
        with db.connect() as conn:
            return int(conn.execute(query).scalar_one())

    submit(client, delay_seconds=2)
    assert load() == 0  # due in 2 s: no worker is wanted for it yet
    now = submit(client)
    assert load() == 1  # a submit published at once counts from the start
    client.delete(f"/tasks/{now['task_id']}")
    time.sleep(2.2)
    assert load() == 1  # due now (no dispatcher runs: it waits in the outbox, and counts)
