"""Fault injection with real processes, PostgreSQL and Redis (issue: never lose a task).

Every test submits tasks of type ``test_effect`` (one effect row per task, written in a fenced
transaction), breaks something for real, and then proves with Jepsen-style counts that
lost = 0 and duplicated effects = 0. Each also checks that the fault really hit running work,
so a scenario that silently missed its target fails instead of passing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
import redis
import sqlalchemy as sa

from tasklift.embedded import free_port
from tests.conftest import wait_for_status
from tests.faults.conftest import pool_children, running_count, tally, wait_for, wait_until_terminal
from tests.support.store import insert_tasks, new_task

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def submit_effects(client: httpx.Client, n: int, seconds: float) -> list[str]:
    ids = []
    for i in range(n):
        resp = client.post("/tasks", json={"task_type": "test_effect", "key": f"k{i}", "seconds": seconds})
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["task_id"])
    return ids


def attempts(db: sa.Engine, task_ids: list[str]) -> list[int]:
    with db.connect() as conn:
        return [
            r[0] for r in conn.execute(sa.text("SELECT attempts FROM tasks WHERE id::text = ANY(:i)"), {"i": task_ids})
        ]


def test_sigkill_of_a_worker_child_mid_task(client, db, start_worker, start_reaper) -> None:
    worker = start_worker(concurrency=2)
    start_reaper()
    ids = submit_effects(client, 6, seconds=2)
    wait_for(lambda: running_count(db, ids) >= 1, 20, "a running task")
    with db.connect() as conn:  # the claim records host:pid of the pool child that runs the task
        holder = conn.execute(sa.text("SELECT worker FROM tasks WHERE status = 'RUNNING' LIMIT 1")).scalar()
    victim = int(holder.rsplit(":", 1)[1])
    assert victim in {p.pid for p in pool_children(worker.pid)}
    os.kill(victim, signal.SIGKILL)
    counts = wait_until_terminal(db, ids, timeout=90)
    print(counts)
    assert counts.lost == 0 and counts.duplicated == 0 and counts.succeeded == 6
    assert max(attempts(db, ids)) >= 2, "the kill hit no running task"


def test_sigkill_of_the_whole_worker_recovers_in_lease_plus_reaper_interval(
    client, db, start_worker, start_reaper, tasklift_env
) -> None:
    first = start_worker(concurrency=2)
    start_reaper()
    ids = submit_effects(client, 4, seconds=3)
    wait_for(lambda: running_count(db, ids) == 2, 20, "two running tasks")
    first.kill()  # SIGKILL the main process and its pool: no ack, no clean-up, leases just stop
    killed_at = time.monotonic()
    start_worker(concurrency=2)
    counts = wait_until_terminal(db, ids, timeout=90)
    print(counts)
    assert counts.lost == 0 and counts.duplicated == 0 and counts.succeeded == 4
    # Recovery is bounded by the lease (3 s here) + reaper interval, not Redis' visibility timeout (12 h).
    lease = float(tasklift_env["TASKLIFT_LEASE_SECONDS"])
    assert time.monotonic() - killed_at < lease + 3 * 2 + 15
    assert max(attempts(db, ids)) == 2


def test_a_crash_between_commit_and_publish_delays_but_never_loses(db, client, start_worker, start_reaper) -> None:
    """The state an API process leaves when it dies right after COMMIT: rows + outbox, no message."""
    tasks = (
        new_task("test_effect", "tasklift.io", input={"key": f"k{i}", "seconds": 0}, dispatch_grace=0.5)
        for i in range(5)
    )
    ids = [str(tid) for tid in insert_tasks(*tasks)]
    start_worker()
    time.sleep(2)
    assert tally(db, ids).terminal == 0, "nothing was published, so nothing may have run yet"
    start_reaper()  # the outbox dispatcher publishes what the dead API never did
    counts = wait_until_terminal(db, ids, timeout=60)
    print(counts)
    assert counts.lost == 0 and counts.duplicated == 0 and counts.succeeded == 5


def test_a_redis_restart_without_persistence_under_load_loses_nothing(
    own_redis, spawn, db, start_worker, start_reaper
) -> None:
    env = {"TASKLIFT_REDIS_URL": own_redis.url}
    port = free_port()
    spawn("api", "api", "--port", str(port), env=env).wait_for_output("Uvicorn running", timeout=30)
    start_worker(concurrency=1, env=env)
    start_reaper(env=env)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        ids = submit_effects(http, 30, seconds=0.2)  # a backlog sits in the Redis list
    queued = redis.Redis.from_url(own_redis.url).llen("tasklift.io")
    assert queued > 5, "no backlog to lose"
    own_redis.stop()
    own_redis.start()  # empty: every queued message is gone
    assert redis.Redis.from_url(own_redis.url).llen("tasklift.io") == 0
    counts = wait_until_terminal(db, ids, timeout=120)
    print(counts)
    assert counts.lost == 0 and counts.duplicated == 0 and counts.succeeded == 30


def test_redis_down_for_30_seconds_while_clients_submit_and_stream(
    own_redis, spawn, db, start_worker, start_reaper
) -> None:
    env = {"TASKLIFT_REDIS_URL": own_redis.url}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    spawn("api", "api", "--port", str(port), env=env).wait_for_output("Uvicorn running", timeout=30)
    start_worker(concurrency=2, env=env)
    start_reaper(env=env)
    with httpx.Client(base_url=base, timeout=30) as http:
        before = submit_effects(http, 3, seconds=1)
        own_redis.stop()
        outage = time.monotonic()
        during = submit_effects(http, 5, seconds=0.1)  # 202: durable in PostgreSQL, dispatched later
        assert http.get("/readyz").status_code == 503

        async def follow(task_id: str) -> str:
            async with httpx.AsyncClient(base_url=base, timeout=120) as ac:
                from tasklift.client import TaskliftClient  # noqa: F401 - same reconnect rules as the client

                last = None
                while True:
                    headers = {"Last-Event-ID": str(last)} if last is not None else {}
                    try:
                        async with ac.stream("GET", f"/tasks/{task_id}/stream", headers=headers) as resp:
                            if resp.status_code == 204:
                                return "ended"
                            async for line in resp.aiter_lines():
                                if line.startswith("id: "):
                                    last = int(line[4:])
                                if '"status":"SUCCESS"' in line and line.startswith("data:"):
                                    return "SUCCESS"
                    except httpx.TransportError:
                        await asyncio.sleep(0.5)

        async def scenario() -> list[str]:
            streams = [asyncio.create_task(follow(t)) for t in before + during]
            await asyncio.sleep(max(0.0, 30 - (time.monotonic() - outage)))
            own_redis.start()
            return await asyncio.gather(*streams)

        outcomes = asyncio.run(scenario())
    assert outcomes == ["SUCCESS"] * 8
    counts = wait_until_terminal(db, before + during, timeout=60)
    print(counts)
    assert counts.lost == 0 and counts.duplicated == 0 and counts.succeeded == 8


def test_a_task_longer_than_the_visibility_timeout_runs_once(client, db, start_worker, start_reaper) -> None:
    """Redis re-delivers the unacked message mid-run; the live lease makes the duplicate a no-op."""
    worker = start_worker(concurrency=2, env={"TASKLIFT_BROKER_VISIBILITY_TIMEOUT": "2"})
    start_reaper()
    ids = submit_effects(client, 1, seconds=25)
    counts = wait_until_terminal(db, ids, timeout=90)
    print(counts)
    assert counts.lost == 0 and counts.duplicated == 0 and counts.succeeded == 1
    assert attempts(db, ids) == [1]
    assert "delivery dropped" in worker.output(), "Redis never re-delivered: the scenario did not happen"


def test_a_postgresql_restart_mid_run_loses_and_duplicates_nothing(
    client, db, pg_server, start_worker, start_reaper
) -> None:
    start_worker(concurrency=2)
    start_reaper()
    ids = submit_effects(client, 6, seconds=2)
    wait_for(lambda: running_count(db, ids) >= 1, 20, "a running task")
    pg_server.stop()
    time.sleep(1)
    pg_server.start()
    counts = wait_until_terminal(db, ids, timeout=120)
    print(counts)
    assert counts.lost == 0 and counts.duplicated == 0 and counts.succeeded == 6


def test_cancel_then_restart_of_all_workers_never_runs_the_task_again(client, db, start_worker, start_reaper) -> None:
    worker = start_worker(concurrency=2)
    start_reaper()
    ids = submit_effects(client, 2, seconds=20)
    wait_for(lambda: running_count(db, ids) == 2, 20, "two running tasks")
    for task_id in ids:
        assert client.delete(f"/tasks/{task_id}").status_code == 202
    worker.kill()  # before any heartbeat sees the flag
    start_worker(concurrency=2)
    for task_id in ids:
        assert wait_for_status(client, task_id, "CANCELLED", timeout=60)["status"] == "CANCELLED"
    time.sleep(2)
    counts = tally(db, ids, expect="CANCELLED")
    print(counts)
    assert counts.lost == 0 and counts.duplicated == 0
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM test_effects")).scalar() == 0


def test_twenty_concurrent_submits_with_one_key_run_one_effect(client, db, start_worker) -> None:
    start_worker()

    def post(_: int) -> httpx.Response:
        body = {"task_type": "test_effect", "key": "once", "seconds": 0}
        return client.post("/tasks", json=body, headers={"Idempotency-Key": "pay-1"})

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(post, range(20)))
    ids = sorted({r.json()["task_id"] for r in answers})
    assert [r.status_code for r in answers] == [202] * 20 and len(ids) == 1
    counts = wait_until_terminal(db, ids, timeout=30)
    print(counts)
    assert counts.lost == 0 and counts.duplicated == 0 and counts.succeeded == 1


def test_a_thousand_stream_connects_and_disconnects_leak_nothing(client, api, redis_server) -> None:
    from tests.observability.test_metrics import scrape, value

    task_id = client.post("/tasks", json={"task_type": "test_noop"}).json()["task_id"]  # stays PENDING
    api_process = psutil.Process(os.getpid())

    async def connect_and_drop(http: httpx.AsyncClient) -> None:
        async with http.stream("GET", f"/tasks/{task_id}/stream") as resp:
            async for chunk in resp.aiter_text():
                if "event: status" in chunk:
                    return

    async def churn(rounds: int) -> None:
        async with httpx.AsyncClient(base_url=api, timeout=30, limits=httpx.Limits(max_connections=50)) as http:
            for _ in range(rounds):
                await asyncio.gather(*(connect_and_drop(http) for _ in range(50)))

    asyncio.run(churn(2))  # warm up allocators before measuring
    rss_before = api_process.memory_info().rss
    asyncio.run(churn(20))  # 1,000 connects and disconnects
    channel = f"tasklift:task:{task_id}"

    def released() -> bool:
        # The server notices each disconnect and unsubscribes asynchronously: allow it a moment.
        # tasklift_streams_open is the API runtime's hub's subscription count, read live.
        samples = scrape(client)
        open_streams = value(samples, "tasklift_streams_open")
        numsub = dict(redis.Redis.from_url(redis_server.url).pubsub_numsub(channel))
        return ("tasklift_streams_open", frozenset()) in samples and open_streams == 0 and numsub[channel.encode()] == 0

    wait_for(released, 15, "every hub subscription and the Redis channel subscription to be released")
    growth = api_process.memory_info().rss - rss_before
    assert growth < 20 * 1024 * 1024, f"RSS grew by {growth / 1e6:.1f} MB over 1,000 streams"
