"""The dispatcher's safety net reads kombu's Redis layout: these fail if a kombu upgrade moves messages.

A message sent through Celery's public API sits in its queue's list; one a worker has taken and not
yet acknowledged (acks_late) sits in the unacked hash. ``held_task_ids`` must find both, or the
dispatcher would re-send every queued task (doubling the queue) or none that Redis lost.
"""

from __future__ import annotations

import uuid

import httpx
import redis
import sqlalchemy as sa

from tasklift.queue import reconcile
from tasklift.queue.app import celery_app
from tasklift.settings import get_settings
from tasklift.store import leases, outbox
from tests.conftest import wait_for_status
from tests.support.store import insert_tasks, new_task


def test_a_message_sent_through_celery_is_found_in_its_queue_list(tasklift_env, redis_server) -> None:
    task_id = str(uuid.uuid4())
    queue = get_settings().cpu_queue
    celery_app.send_task("tasklift.run", args=[task_id], task_id=task_id, queue=queue)
    broker = redis.Redis.from_url(redis_server.url)
    assert broker.llen(queue) == 1
    assert reconcile.held_task_ids(broker, [queue]) == {task_id}
    assert reconcile.held_task_ids(broker, [get_settings().io_queue]) == set()


def test_a_message_a_worker_holds_unacknowledged_is_found(client: httpx.Client, start_worker, redis_server) -> None:
    start_worker(concurrency=1)
    task_id = client.post("/tasks", json={"task_type": "test_sleep", "seconds": 4, "steps": 8}).json()["task_id"]
    wait_for_status(client, task_id, "RUNNING")
    broker = redis.Redis.from_url(redis_server.url)
    queue = get_settings().cpu_queue
    assert broker.llen(queue) == 0, "the worker took the message off the list"
    assert task_id in reconcile.held_task_ids(broker, [queue])


def _sent_task(conn: sa.Connection, epoch: str, seconds_ago: float) -> uuid.UUID:
    """A task whose outbox row says 'sent to Redis run ``epoch``', whether or not anything was sent."""
    [task_id] = insert_tasks(new_task("test_noop", get_settings().cpu_queue))
    conn.execute(
        sa.text(
            "UPDATE task_outbox SET broker_epoch = :e, published_at = now() - make_interval(secs => :s)"
            " WHERE task_id = :t"
        ),
        {"e": epoch, "s": seconds_ago, "t": task_id},
    )
    return task_id


def test_reconcile_rearms_only_the_intents_whose_message_redis_lacks(tasklift_env, redis_server, db, engine) -> None:
    broker = redis.Redis.from_url(redis_server.url)
    epoch = str(broker.info("server")["run_id"])
    queue = get_settings().cpu_queue
    with engine.begin() as conn:
        queued = _sent_task(conn, epoch, seconds_ago=120)
        lost = _sent_task(conn, epoch, seconds_ago=120)  # marked sent, never in Redis
        fresh = _sent_task(conn, epoch, seconds_ago=0)  # too recent to look for
        old_run = _sent_task(conn, "a-redis-run-that-restarted", seconds_ago=0)
    celery_app.send_task("tasklift.run", args=[str(queued)], task_id=str(queued), queue=queue)

    found = reconcile.reconcile(engine, broker, epoch, older_than=30)

    assert found == reconcile.Reconciled(held=1, resent=2)
    with db.connect() as conn:
        query = sa.text("SELECT task_id, published_at IS NOT NULL AND broker_epoch = :e FROM task_outbox")
        rows = dict(conn.execute(query, {"e": epoch}).all())
    assert rows == {queued: True, lost: False, fresh: True, old_run: False}
    with engine.begin() as conn:
        due = {row["task_id"] for row in outbox.take_due_outbox(conn)}
    assert due == {lost, old_run}


def test_a_mark_never_lands_on_a_newer_intent(tasklift_env, db, engine) -> None:
    """The submit's mark arrives after a fast failure re-armed the task for its retry."""
    with engine.begin() as conn:
        task_id = _sent_task(conn, "e", seconds_ago=0)
        conn.execute(sa.text("UPDATE task_outbox SET published_at = NULL WHERE task_id = :t"), {"t": task_id})
        claimed = leases.take_lease(conn, task_id, "worker:1", lease=30)
        assert claimed is not None
        retry = leases.requeue(conn, task_id, 1, error={"type": "Boom"}, delay=0)
        assert retry is not None
        outbox.mark_published(conn, [(task_id, 1)], "e")  # the submit's intent, long gone
    with engine.begin() as conn:
        due = outbox.take_due_outbox(conn)
    assert [(row["task_id"], row["intent_seq"]) for row in due] == [(task_id, retry[1].seq)]
