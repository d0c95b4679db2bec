"""A frozen Redis never leaves a stream waiting for ever (issue 20, defect 2).

SIGSTOP keeps Redis' sockets open: the worker's PUBLISH of a task's last events times out, and the
API's pub/sub connection sees no error, so nothing makes it resync from PostgreSQL. The API's
event hub checks the watched tasks' latest sequence numbers in PostgreSQL (one query every
``stream_resync_seconds``) and delivers what its streams lack, terminal event included.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import httpx
import pytest
import sqlalchemy as sa

from tasklift.embedded import free_port
from tests.faults.conftest import running_count, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

RESYNC_SECONDS = 2.0  #: the default stream_resync_seconds
BOUND = 2 * RESYNC_SECONDS + 2.0  #: two check periods, plus a replay read on a loaded machine
STREAMS = 5


def completed_at(db: sa.Engine, task_ids: list[str]) -> dict[str, float]:
    """Each finished task's completion time (epoch seconds, the database's clock)."""
    with db.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT id::text, extract(epoch FROM completed_at) FROM tasks WHERE id::text = ANY(:i)"),
            {"i": task_ids},
        ).all()
    return {r[0]: float(r[1]) for r in rows if r[1] is not None}


def test_every_stream_gets_its_terminal_event_while_redis_is_frozen(own_redis, spawn, db, start_worker) -> None:
    env = {"TASKLIFT_REDIS_URL": own_redis.url}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    spawn("api", "api", "--port", str(port), env=env).wait_for_output("Uvicorn running", timeout=30)
    start_worker(concurrency=STREAMS, env=env)
    with httpx.Client(base_url=base, timeout=30) as http:
        ids = []
        for _ in range(STREAMS):
            resp = http.post("/tasks", json={"task_type": "test_sleep", "seconds": 4, "steps": 1})
            assert resp.status_code == 202, resp.text
            ids.append(resp.json()["task_id"])
    wait_for(lambda: running_count(db, ids) == STREAMS, 30, "every task to be running")

    async def follow(task_id: str, opened: asyncio.Event) -> tuple[str, float]:
        """The terminal status of one stream and when it arrived (one connection: no reconnect)."""
        async with (
            httpx.AsyncClient(base_url=base, timeout=60) as ac,
            ac.stream("GET", f"/tasks/{task_id}/stream") as resp,
        ):
            assert resp.status_code == 200
            async for line in resp.aiter_lines():
                if line.startswith("data: "):
                    data = json.loads(line[6:])
                    if data["status"] == "RUNNING":
                        opened.set()  # the snapshot: this stream is live on the hub
                    if data["status"] in ("SUCCESS", "FAILED", "CANCELLED"):
                        return data["status"], time.time()
        raise AssertionError(f"the stream of {task_id} ended without a terminal event")

    async def scenario() -> list[tuple[str, float]]:
        opened = [asyncio.Event() for _ in ids]
        streams = [asyncio.create_task(follow(t, o)) for t, o in zip(ids, opened, strict=True)]
        await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), 20)
        assert not completed_at(db, ids), "a task finished before Redis froze: the scenario would not test anything"
        os.kill(own_redis.proc.pid, signal.SIGSTOP)  # this test's own Redis, by its PID
        try:
            return await asyncio.wait_for(asyncio.gather(*streams), 60)
        finally:
            os.kill(own_redis.proc.pid, signal.SIGCONT)

    outcomes = asyncio.run(scenario())
    done = completed_at(db, ids)
    assert sorted(done) == sorted(ids), "every task finished while Redis was frozen"
    for task_id, (status, arrived) in zip(ids, outcomes, strict=True):
        assert status == "SUCCESS"
        lag = arrived - done[task_id]
        print(f"{task_id}: terminal event {lag:.2f} s after the commit")
        assert lag <= BOUND, f"the terminal event came {lag:.1f} s after the task finished (bound {BOUND} s)"
