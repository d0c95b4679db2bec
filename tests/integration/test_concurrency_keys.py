"""Concurrency keys (issue 21 part 3, docs/flow-control.md): at most ``concurrency_limit`` tasks of
one (type, key) RUNNING at once, across workers and crashes. Real API, PostgreSQL, Redis, Celery
workers and reapers; ``test_keyed`` has ``concurrency_limit=2``."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psutil
import pytest
import sqlalchemy as sa

from tasklift.store import concurrency, flow, leases
from tasklift.store.db import make_engine
from tasklift.tasks.states import TaskStatus
from tests.conftest import wait_for_status

pytestmark = pytest.mark.timeout(240)


def submit(http: httpx.Client, key: str | None, seconds: float = 0.3, **body: Any) -> str:
    payload: dict[str, Any] = {"task_type": "test_keyed", "label": key or "-", "seconds": seconds, **body}
    if key is not None:
        payload["concurrency_key"] = key
    resp = http.post("/tasks", json=payload)
    assert resp.status_code == 202, resp.text
    assert resp.json()["concurrency_key"] == key
    return str(resp.json()["task_id"])


class RunningSampler:
    """Counts the RUNNING test_keyed tasks per concurrency key every 20 ms; keeps each key's maximum."""

    def __init__(self, db: sa.Engine) -> None:
        self.db, self.peak = db, defaultdict(int)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        sql = sa.text(
            "SELECT concurrency_key, count(*) FROM tasks WHERE status = 'RUNNING' AND task_type = 'test_keyed'"
            " GROUP BY concurrency_key"
        )
        with self.db.connect() as conn:
            while not self._stop.is_set():
                for key, n in conn.execute(sql).all():
                    self.peak[key] = max(self.peak[key], n)
                conn.rollback()
                time.sleep(0.02)

    @contextmanager
    def running(self) -> Iterator[RunningSampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(5)


def peak_overlap(db: sa.Engine, label: str) -> int:
    """The most attempts of ``label`` holding a slot at one instant: from an attempt's start row to its
    end row (clock times, written inside the task function), or, for an attempt killed before its end,
    to the status event by which the reaper put its task back to PENDING (the slot's release)."""
    with db.connect() as conn:
        rows = conn.execute(
            sa.text(
                """
SELECT s.created_at, coalesce(e.created_at, (
    SELECT min(ev.created_at) FROM task_events AS ev
    WHERE ev.task_id = s.task_id AND ev.kind = 'status' AND ev.seq > 1 AND ev.data->>'status' = 'PENDING'
        AND ev.created_at >= s.created_at))
FROM test_effects AS s LEFT JOIN test_effects AS e
    ON e.task_id = s.task_id AND e.attempt = s.attempt AND e.key = :e
WHERE s.key = :s"""
            ),
            {"s": f"start:{label}", "e": f"end:{label}"},
        ).all()
    assert all(end is not None for _, end in rows), "an attempt without an end nor a recovery"
    points = sorted([(start, 1) for start, _ in rows] + [(end, -1) for _, end in rows], key=lambda p: (p[0], p[1]))
    inside = peak = 0
    for _, step in points:  # at equal times an end sorts first
        inside += step
        peak = max(peak, inside)
    return peak


def statuses(db: sa.Engine, ids: list[str]) -> dict[str, int]:
    with db.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT status, attempts FROM tasks WHERE id = ANY(CAST(:ids AS uuid[]))"), {"ids": ids}
        ).all()
    return {"SUCCESS": sum(r[0] == "SUCCESS" for r in rows), "max_attempts": max(r[1] for r in rows)}


def test_at_most_the_limit_per_key_run_at_once_across_two_workers(
    client: httpx.Client, db: sa.Engine, start_reaper, start_worker
) -> None:
    start_worker(concurrency=2), start_worker(concurrency=2)  # four worker children, two workers
    start_reaper()
    sampler = RunningSampler(db)
    with sampler.running():
        a = [submit(client, "customer-a", 0.4) for _ in range(10)]
        b = [submit(client, "customer-b", 0.4) for _ in range(5)]
        seen_limited = False
        deadline = time.monotonic() + 30
        while not seen_limited and time.monotonic() < deadline:
            seen_limited = client.get(f"/tasks/{a[-1]}").json()["waiting_reason"] == "concurrency_limited"
            time.sleep(0.05)
        for task_id in a + b:
            wait_for_status(client, task_id, "SUCCESS", timeout=90)
    assert seen_limited, "a waiting task of a full key said concurrency_limited"
    assert sampler.peak["customer-a"] == 2 and sampler.peak["customer-b"] <= 2, dict(sampler.peak)
    assert peak_overlap(db, "customer-a") == 2 and peak_overlap(db, "customer-b") <= 2
    # The two keys ran side by side (four children, two per key), and a refusal is not an attempt.
    assert statuses(db, a + b) == {"SUCCESS": 15, "max_attempts": 1}


def test_tasks_without_a_key_are_not_limited(client: httpx.Client, db: sa.Engine, start_reaper, start_worker) -> None:
    start_worker(concurrency=4)
    start_reaper()
    ids = [submit(client, None, 1.0) for _ in range(4)]
    for task_id in ids:
        wait_for_status(client, task_id, "SUCCESS", timeout=60)
    assert peak_overlap(db, "-") >= 3  # four children, four unkeyed tasks of a type limited to 2 per key


@pytest.fixture
def store(tasklift_env: dict[str, str]) -> Iterator[sa.Engine]:
    engine = make_engine(tasklift_env["TASKLIFT_DATABASE_URL"], 10)
    yield engine
    engine.dispose()


def keyed_take(store: sa.Engine, task_id: str) -> tuple[Any, bool]:
    with store.begin() as conn:
        return concurrency.take_keyed_lease(conn, uuid.UUID(task_id), "test:1", 30)


def mark_sent(store: sa.Engine, ids: list[str]) -> None:
    with store.begin() as conn:
        conn.execute(
            sa.text("UPDATE task_outbox SET published_at = now() WHERE task_id = ANY(CAST(:i AS uuid[]))"), {"i": ids}
        )


def test_the_dispatcher_admits_within_the_limit_and_the_lease_refuses_past_it(
    client: httpx.Client, db: sa.Engine, store: sa.Engine
) -> None:
    ids = [submit(client, "k1") for _ in range(4)]  # no reaper, no worker: all wait in the outbox
    with store.begin() as conn:  # the admission statement alone: two of the key's four, in submit order
        assert [str(r["task_id"]) for r in flow.admit(conn)] == ids[:2]
        conn.rollback()
    mark_sent(store, ids[:2])
    with store.begin() as conn:  # two admitted and unclaimed: no room left for the other two
        assert flow.admit(conn) == []
    with store.connect() as conn:  # the plain lease never takes a limited task
        assert leases.take_lease(conn, uuid.UUID(ids[0]), "test:1", 30) is None
        conn.rollback()
    assert keyed_take(store, ids[0])[0] is not None and keyed_take(store, ids[1])[0] is not None
    assert client.get(f"/tasks/{ids[2]}").json()["waiting_reason"] == "concurrency_limited"
    mark_sent(store, ids[2:3])
    claimed, rearmed = keyed_take(store, ids[2])  # a third delivery of the key: refused, back to waiting
    assert claimed is None and rearmed
    with db.connect() as conn:
        row = conn.execute(
            sa.text("SELECT t.status, t.attempts, o.published_at FROM tasks t JOIN task_outbox o ON o.task_id = t.id"
                    " WHERE t.id = :i"), {"i": ids[2]},
        ).one()  # fmt: skip
    assert row == ("PENDING", 0, None)
    with store.begin() as conn:
        assert flow.admit(conn) == []  # still full: two RUNNING
        first = leases.get_task(conn, uuid.UUID(ids[0]))
        assert leases.finish(conn, uuid.UUID(ids[0]), first["attempts"], TaskStatus.SUCCESS) is not None
    with store.begin() as conn:  # a slot freed: the re-armed one is admitted again, and its lease taken
        assert [str(r["task_id"]) for r in flow.admit(conn)] == [ids[2]]
        conn.rollback()
    assert client.get(f"/tasks/{ids[2]}").json()["waiting_reason"] == "queued"
    assert keyed_take(store, ids[2])[0] is not None
    assert keyed_take(store, ids[3]) == (None, False)  # refused; never sent, so nothing to re-arm


def test_racing_lease_takes_of_one_key_never_exceed_the_limit(
    client: httpx.Client, db: sa.Engine, store: sa.Engine
) -> None:
    ids = [submit(client, "race") for _ in range(8)]
    barrier = threading.Barrier(len(ids))
    results: list[Any] = [None] * len(ids)

    def take(i: int) -> None:
        with store.begin() as conn:
            barrier.wait()
            results[i] = concurrency.take_keyed_lease(conn, uuid.UUID(ids[i]), f"test:{i}", 30)[0]

    threads = [threading.Thread(target=take, args=(i,)) for i in range(len(ids))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(r is not None for r in results) == 2
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM tasks WHERE status = 'RUNNING'")).scalar() == 2


@pytest.mark.slow
def test_a_killed_worker_frees_its_slot_after_its_lease_expires(
    client: httpx.Client, db: sa.Engine, start_reaper, start_worker
) -> None:
    worker = start_worker(concurrency=4)
    start_reaper()
    sampler = RunningSampler(db)
    with sampler.running():
        ids = [submit(client, "crash", 1.5) for _ in range(5)]
        deadline = time.monotonic() + 30
        holder = None
        while holder is None:
            assert time.monotonic() < deadline, "no task of the key started"
            with db.connect() as conn:
                holder = conn.execute(sa.text("SELECT worker FROM tasks WHERE status = 'RUNNING' LIMIT 1")).scalar()
            time.sleep(0.05)
        victim = int(holder.rsplit(":", 1)[1])
        assert victim in {p.pid for p in psutil.Process(worker.pid).children(recursive=True)}
        os.kill(victim, signal.SIGKILL)  # no outcome, no ack: its lease simply runs out
        for task_id in ids:
            wait_for_status(client, task_id, "SUCCESS", timeout=120)
    assert sampler.peak["crash"] == 2
    assert statuses(db, ids) == {"SUCCESS": 5, "max_attempts": 2}  # the killed one ran again
    assert peak_overlap(db, "crash") <= 2


@pytest.mark.parametrize("key", ["", "x" * 129, "line\nbreak", 7, True, ["k"]])
def test_bad_concurrency_keys_are_422_and_store_nothing(client: httpx.Client, db: sa.Engine, key: Any) -> None:
    resp = client.post("/tasks", json={"task_type": "test_keyed", "concurrency_key": key})
    assert resp.status_code == 422 and resp.headers["content-type"].startswith("application/problem+json")
    assert resp.json()["errors"][0]["loc"] == ["body", "concurrency_key"]
    batch = client.post("/tasks:batch", json={"items": [{"task": {"task_type": "test_keyed", "concurrency_key": key}}]})
    assert batch.status_code in (200, 207, 422), batch.text
    item = batch.json()["items"][0]
    assert item["status"] == 422 and item["problem"]["errors"][0]["loc"][-1] == "concurrency_key"
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM tasks")).scalar() == 0
