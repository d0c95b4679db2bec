"""Issue 24 part 2: the retention purge locks nothing the API needs, and removes exactly the old tasks.

20,000 tasks finished 40 days ago (with events, a log line and a published outbox row each) and 500
finished yesterday are loaded; the reaper's purge (``retention.purge_expired``, 7 days) runs in a
thread while the real API takes submits and GETs of new tasks, and a sampler watches
pg_stat_activity for any backend waiting on a lock.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import sqlalchemy as sa

from tasklift.queue.runtime import WorkerRuntime
from tasklift.tasks import retention

OLD, RECENT, EVENTS = 20_000, 500, 6

LOAD = """
INSERT INTO tasks (id, owner, task_type, queue, status, input, attempts, last_seq,
                   created_at, started_at, updated_at, completed_at)
SELECT md5(:tag || i)::uuid, 'key:' || :tag, 'test_noop', 'tasklift.cpu', 'SUCCESS', '{}'::jsonb, 1, :events,
       now() - make_interval(days => :ago), now() - make_interval(days => :ago),
       now() - make_interval(days => :ago), now() - make_interval(days => :ago)
FROM generate_series(1, :n) AS i;
"""
LOAD_EVENTS = """
INSERT INTO task_events (task_id, seq, kind, data, created_at)
SELECT md5(:tag || i)::uuid, s, CASE WHEN s = 2 THEN 'log' ELSE 'status' END, '{}'::jsonb,
       now() - make_interval(days => :ago)
FROM generate_series(1, :n) AS i, generate_series(1, :events) AS s
"""
LOAD_OUTBOX = """
INSERT INTO task_outbox (task_id, queue, available_at, published_at)
SELECT md5(:tag || i)::uuid, 'tasklift.cpu', now(), now() FROM generate_series(1, :n) AS i
"""
WAITING = """
SELECT pid, wait_event, left(query, 200) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock'
"""


def _load(db: sa.Engine, tag: str, n: int, ago: int) -> None:
    params = {"tag": tag, "n": n, "ago": ago, "events": EVENTS}
    with db.begin() as conn:
        for sql in (LOAD, LOAD_EVENTS, LOAD_OUTBOX):
            conn.execute(sa.text(sql), params)


def _count(db: sa.Engine, sql: str, **params: Any) -> int:
    with db.connect() as conn:
        return int(conn.execute(sa.text(sql), params).scalar_one())


def test_purge_under_api_traffic_waits_on_no_lock_and_removes_only_old_tasks(
    client: httpx.Client, db: sa.Engine, worker_runtime: WorkerRuntime
) -> None:
    _load(db, "old", OLD, 40)
    _load(db, "recent", RECENT, 1)
    waits: list[tuple[Any, ...]] = []
    samples: list[int] = []
    purged: list[int] = []
    done = threading.Event()

    def purge() -> None:
        try:
            while n := retention.purge_expired(worker_runtime.engine, worker_runtime.blobs, days=7):
                purged.append(n)
        finally:
            done.set()

    def sample() -> None:
        with db.connect() as conn:
            while not done.is_set():
                waits.extend(tuple(row) for row in conn.execute(sa.text(WAITING)))
                samples.append(1)
                time.sleep(0.005)

    threads = [threading.Thread(target=purge), threading.Thread(target=sample)]
    for thread in threads:
        thread.start()
    submitted, statuses, during = [], [], 0
    while not done.is_set() or len(submitted) < 20:
        during += not done.is_set()
        resp = client.post("/tasks", json={"task_type": "test_noop"})
        statuses.append(resp.status_code)
        if resp.status_code == 202:
            submitted.append(resp.json()["task_id"])
            statuses.append(client.get(f"/tasks/{submitted[-1]}").status_code)
            statuses.append(client.get(f"/tasks/{submitted[0]}/logs").status_code)
    for thread in threads:
        thread.join(60)

    assert sum(purged) == OLD
    assert during > 0 and len(samples) > 0, (during, len(samples))  # the requests and the sampler overlapped the purge
    assert waits == [], f"backends waited on a lock during the purge: {waits[:5]}"
    assert set(statuses) <= {200, 202}, statuses
    assert _count(db, "SELECT count(*) FROM tasks WHERE owner = 'key:old'") == 0
    old_ids = "(SELECT md5('old' || i)::uuid FROM generate_series(1, :n) AS i)"
    for table in ("task_events", "task_outbox"):
        assert _count(db, f"SELECT count(*) FROM {table} WHERE task_id IN {old_ids}", n=OLD) == 0
    recent_ids = "(SELECT md5('recent' || i)::uuid FROM generate_series(1, :n) AS i)"
    assert _count(db, f"SELECT count(*) FROM tasks WHERE id IN {recent_ids}", n=RECENT) == RECENT
    assert _count(db, f"SELECT count(*) FROM task_events WHERE task_id IN {recent_ids}", n=RECENT) == RECENT * EVENTS
    assert _count(db, f"SELECT count(*) FROM task_outbox WHERE task_id IN {recent_ids}", n=RECENT) == RECENT
    assert _count(db, "SELECT count(*) FROM tasks WHERE id = ANY(CAST(:ids AS uuid[]))", ids=submitted) == len(
        submitted
    )
