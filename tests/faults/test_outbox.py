"""The outbox never loses a 202: fast retries, and Redis restarts that keep or lose their queue.

An attempt that fails in milliseconds re-arms the task's dispatch intent while the API may still be
about to mark the submit's message as sent. The mark must never land on the newer intent: every
retry has to reach a worker. Thousands of instant failures under concurrent submits, through the
API in its own process, real Celery workers and the reaper; lost = 0.

After a Redis restart the dispatcher re-sends only what Redis lost: a Redis that kept its queue in
its append-only file must not get every queued message a second time.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
import sqlalchemy as sa

from tasklift.embedded import EmbeddedRedis, free_port
from tasklift.queue import reconcile
from tasklift.settings import get_settings
from tests.faults.conftest import wait_for, wait_until_terminal
from tests.support.store import insert_tasks, new_task

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

TASKS = 1500
FAILURES_EACH = 2  #: 3,000 instant failures, each retried


def test_instant_failures_retried_thousands_of_times_lose_nothing(spawn, db, start_worker, start_reaper) -> None:
    port = free_port()
    spawn("api", "api", "--port", str(port)).wait_for_output("Uvicorn running", timeout=30)
    start_worker(concurrency=2)
    reaper = start_reaper()

    def submit(i: int) -> str:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            body = {"task_type": "test_flaky_effect", "key": f"k{i}", "fail_times": FAILURES_EACH}
            resp = http.post("/tasks", json=body)
            assert resp.status_code == 202, resp.text
            return str(resp.json()["task_id"])

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(submit, range(TASKS)))
    # Retries are due within 50 ms and the dispatcher runs every 0.2 s: a stuck task is a lost one.
    counts = wait_until_terminal(db, ids, timeout=180)
    print(counts)
    assert counts.lost == 0, f"{counts.accepted - counts.terminal} tasks never finished: {counts}"
    assert counts.duplicated == 0 and counts.succeeded == TASKS
    with db.connect() as conn:
        attempts = conn.execute(sa.text("SELECT min(attempts), max(attempts) FROM tasks")).one()
    assert tuple(attempts) == (FAILURES_EACH + 1, FAILURES_EACH + 1), "every task failed twice, then ran once"
    # Every retry was dispatched from its own intent: none needed the safety net that finds lost messages.
    assert "not in Redis" not in reaper.output()


def test_a_redis_restart_that_kept_its_queue_gets_no_second_copy(tmp_path, db, spawn, start_reaper) -> None:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True)
    server.start()
    env = {"TASKLIFT_REDIS_URL": server.url}
    broker = redis.Redis.from_url(server.url)
    queue = get_settings().io_queue
    ids = []
    # committed tasks the dispatcher sends (no worker takes them)
    ids += insert_tasks(*(new_task("test_effect", queue, input={"key": f"k{i}"}, dispatch_grace=0) for i in range(50)))
    reaper = start_reaper(env=env)
    wait_for(lambda: broker.llen(queue) == 50, 30, "the dispatcher to send the 50 tasks")
    first_run = broker.info("server")["run_id"]

    server.stop()
    server.start()  # the same data directory: the AOF brings the queue back under a new run_id
    broker = redis.Redis.from_url(server.url)
    assert broker.info("server")["run_id"] != first_run and broker.llen(queue) == 50

    def confirmed() -> bool:
        with db.connect() as conn:
            query = sa.text("SELECT count(*) FROM task_outbox WHERE broker_epoch = :e AND published_at IS NOT NULL")
            return conn.execute(query, {"e": broker.info("server")["run_id"]}).scalar() == 50

    wait_for(confirmed, 30, "the dispatcher to find the 50 messages under the new run")
    time.sleep(2)  # a few more dispatcher rounds
    assert broker.llen(queue) == 50, "messages that survived the restart were sent a second time"

    broker.lrem(queue, 1, broker.lindex(queue, 0))  # now Redis really loses one
    wait_for(lambda: "1 tasks marked sent are not in Redis" in reaper.output(), 30, "the lost message to be found")
    wait_for(lambda: broker.llen(queue) == 50, 30, "the lost message to be sent again")
    held = {uuid.UUID(t) for t in reconcile.held_task_ids(broker, [queue])}
    assert held == set(ids)
    server.stop()
