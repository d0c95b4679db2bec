"""Queue pause/resume (admin only): paused work stays PENDING through a worker crash, and resume
loses nothing (each task runs once). Real API, PostgreSQL, Redis, Celery workers and the reaper."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import sqlalchemy as sa

from tests.conftest import wait_for_status
from tests.security.conftest import submit


def queue_of(http: httpx.Client, task_type: str) -> str:
    return next(t["queue"] for t in http.get("/task-types").json() if t["name"] == task_type)


def test_only_an_admin_pauses_and_an_unknown_queue_is_404(
    alice: httpx.Client, make_key: Callable[..., str], client_for: Callable[..., httpx.Client]
) -> None:
    queue = queue_of(alice, "test_effect")
    refused = alice.post(f"/queues/{queue}:pause")
    assert refused.status_code == 403 and refused.headers["Content-Type"] == "application/problem+json"
    admin = client_for(make_key("ops", admin=True))
    assert admin.post("/queues/no.such.queue:pause").status_code == 404
    assert admin.post(f"/queues/{queue}:pause").json() == {"queue": queue, "paused": True, "pending": 0}
    assert admin.post(f"/queues/{queue}:pause").json()["paused"] is True  # idempotent
    assert admin.post(f"/queues/{queue}:resume").json() == {"queue": queue, "paused": False, "pending": 0}
    assert admin.post(f"/queues/{queue}:resume").json()["paused"] is False


def test_pause_then_a_worker_crash_then_resume_runs_every_task_once(
    alice: httpx.Client,
    make_key: Callable[..., str],
    client_for: Callable[..., httpx.Client],
    start_worker,
    start_reaper,
    db: sa.Engine,
) -> None:
    admin = client_for(make_key("ops", admin=True))
    queue = queue_of(alice, "test_effect")
    assert admin.post(f"/queues/{queue}:pause").status_code == 200
    start_reaper()  # the dispatcher and reconciler, which must leave the paused intents alone
    worker = start_worker(concurrency=2)
    ids = [submit(alice, task_type="test_effect", key=f"p{i}")["task_id"] for i in range(20)]
    other = submit(alice, task_type="test_noop")["task_id"]  # another queue is not paused
    assert wait_for_status(alice, other, "SUCCESS")["status"] == "SUCCESS"
    time.sleep(3)  # several dispatcher and reconciler rounds (0.2 s and 1 s here)
    for task_id in ids:
        task = alice.get(f"/tasks/{task_id}").json()
        assert task["status"] == "PENDING" and task["paused"] is True and task["attempts"] == 0
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM test_effects").scalar_one() == 0
    worker.kill()  # SIGKILL: whatever it held is lost with it
    resumed = admin.post(f"/queues/{queue}:resume").json()
    assert resumed == {"queue": queue, "paused": False, "pending": 20}
    start_worker(concurrency=2)
    for task_id in ids:
        done = wait_for_status(alice, task_id, "SUCCESS", timeout=60)
        assert done["attempts"] == 1 and done["paused"] is False
    with db.connect() as conn:
        effects = conn.exec_driver_sql("SELECT key, count(*) FROM test_effects GROUP BY key").all()
    assert sorted(effects) == sorted((f"p{i}", 1) for i in range(20))
