"""Priorities 0-9 (issue 21 part 4, docs/flow-control.md): the dispatcher admits by priority then
submit time; under an admission window a queue's run order is exactly that. Real API, PostgreSQL,
Redis, Celery workers and reapers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa

from tasklift.settings import get_settings
from tests.conftest import wait_for_status

PRIORITIES = [0, 5, 9, 2, 5, 0, 9, 7, 1, 5, 3, 9]


def submit(http: httpx.Client, priority: int, task_type: str = "test_noop", **body: Any) -> str:
    resp = http.post("/tasks", json={"task_type": task_type, "priority": priority, **body})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["task_id"])


def run_order(db: sa.Engine, ids: list[str]) -> list[str]:
    with db.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT id::text FROM tasks WHERE id = ANY(CAST(:ids AS uuid[])) ORDER BY started_at"), {"ids": ids}
        ).scalars()
        return list(rows)


def queued_ids(tasklift_env: dict[str, str]) -> list[str]:
    """Task ids in the Celery queue in the order workers take them (they pop the list's far end)."""
    client = redis.Redis.from_url(tasklift_env["TASKLIFT_REDIS_URL"])
    messages = client.lrange(get_settings().cpu_queue, 0, -1)
    return [json.loads(m)["headers"]["id"] for m in reversed(messages)]


def test_tasks_coming_due_together_are_published_by_priority_then_submit_order(
    client: httpx.Client, tasklift_env: dict[str, str], start_reaper
) -> None:
    # One run_at for all: they come due in the same dispatcher round. (Submitted one by one: the
    # tasks of one batch share their submit time, and order among themselves by id.)
    run_at = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    ids = [submit(client, p, run_at=run_at) for p in PRIORITIES]
    start_reaper()
    deadline = time.monotonic() + 15
    while len(queued_ids(tasklift_env)) < len(ids):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    expected = [ids[i] for i in sorted(range(len(ids)), key=lambda i: (-PRIORITIES[i], i))]
    assert queued_ids(tasklift_env) == expected


class TestUnderAnAdmissionWindow:
    """TASKLIFT_ADMISSION_WINDOW=1: at most one message per queue waits in Redis."""

    @pytest.fixture
    def tasklift_env(self, tasklift_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
        tasklift_env["TASKLIFT_ADMISSION_WINDOW"] = "1"  # the child processes' env
        monkeypatch.setenv("TASKLIFT_ADMISSION_WINDOW", "1")
        get_settings.cache_clear()
        yield tasklift_env
        get_settings.cache_clear()

    def test_one_worker_runs_a_backlog_in_exact_priority_order(
        self, client: httpx.Client, tasklift_env: dict[str, str], start_reaper, start_worker, db: sa.Engine
    ) -> None:
        ids = [submit(client, p) for p in PRIORITIES]  # no dispatcher yet: all wait in PostgreSQL
        assert queued_ids(tasklift_env) == []
        start_reaper()
        start_worker(concurrency=1)
        for task_id in ids:
            wait_for_status(client, task_id, "SUCCESS", timeout=60)
        expected = [ids[i] for i in sorted(range(len(ids)), key=lambda i: (-PRIORITIES[i], i))]
        assert run_order(db, ids) == expected

    def test_a_late_urgent_task_overtakes_the_waiting_backlog(
        self, client: httpx.Client, start_reaper, start_worker, db: sa.Engine
    ) -> None:
        start_reaper()
        start_worker(concurrency=1)
        backlog = [submit(client, 0, "test_sleep", seconds=0.5, steps=1) for _ in range(6)]
        wait_for_status(client, backlog[0], "RUNNING")
        urgent = submit(client, 9)
        for task_id in [*backlog, urgent]:
            wait_for_status(client, task_id, "SUCCESS", timeout=60)
        order = run_order(db, [*backlog, urgent])
        # Ahead of it at most the running task and the one the window had admitted already.
        assert order.index(urgent) <= 2 and order.index(urgent) < order.index(backlog[3])
        assert [t for t in order if t != urgent] == backlog  # equal priorities keep their submit order

    def test_a_manual_retry_waits_for_the_dispatcher_like_a_submit(
        self, client: httpx.Client, tasklift_env: dict[str, str], start_reaper
    ) -> None:
        task_id = submit(client, 0)  # no dispatcher yet: it waits in PostgreSQL
        assert client.delete(f"/tasks/{task_id}").status_code in (202, 204)
        wait_for_status(client, task_id, "CANCELLED")
        resp = client.post(f"/tasks/{task_id}/retry")
        assert resp.status_code == 202, resp.text
        time.sleep(0.5)  # a publish at retry would be in Redis by now
        assert queued_ids(tasklift_env) == []  # the window is the dispatcher's to fill, retries included
        assert client.get(f"/tasks/{task_id}").json()["status"] == "PENDING"
        start_reaper()
        deadline = time.monotonic() + 10
        while not queued_ids(tasklift_env):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert queued_ids(tasklift_env) == [task_id]

    def test_two_dispatchers_never_overfill_the_window(
        self, client: httpx.Client, tasklift_env: dict[str, str], start_reaper, db: sa.Engine
    ) -> None:
        ids = [submit(client, p) for p in PRIORITIES]
        start_reaper(), start_reaper()
        deadline = time.monotonic() + 10
        while not queued_ids(tasklift_env):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for _ in range(20):  # 2 s: ten rounds of each dispatcher, and the reconcilers' looks
            assert len(queued_ids(tasklift_env)) == 1
            time.sleep(0.1)
        assert queued_ids(tasklift_env) == [ids[PRIORITIES.index(9)]]  # the first of the most urgent
        task = client.get(f"/tasks/{ids[0]}").json()
        assert task["status"] == "PENDING" and task["waiting_reason"] == "queued"
