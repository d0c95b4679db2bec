"""Fair shares (issue 21 part 2, docs/flow-control.md): under an admission window a queue's waiting
tasks are admitted round-robin across principals (``coalesce(fairness_key, owner)``) at equal
priority. Real API, PostgreSQL, Redis, Celery worker and reaper."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from tasklift.settings import get_settings
from tasklift.store import flow
from tests.support.store import insert_tasks, new_task

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def tasklift_env(tasklift_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    tasklift_env["TASKLIFT_ADMISSION_WINDOW"] = "2"  # the child processes' env
    monkeypatch.setenv("TASKLIFT_ADMISSION_WINDOW", "2")
    get_settings.cache_clear()
    yield tasklift_env
    get_settings.cache_clear()


def test_a_small_tenant_is_not_starved_by_a_big_backlog(
    client: httpx.Client, db: sa.Engine, start_reaper, start_worker
) -> None:
    start_reaper()
    start_worker(concurrency=1)
    item = {"task": {"task_type": "test_noop", "fairness_key": "tenant-a"}}
    for _ in range(3):  # tenant A: 300 zero-work tasks
        resp = client.post("/tasks:batch", json={"items": [item] * 100})
        assert resp.status_code == 200 and resp.json()["accepted"] == 100, resp.text
    b = []
    for _ in range(3):  # then tenant B: 3
        resp = client.post("/tasks", json={"task_type": "test_noop", "fairness_key": "tenant-b"})
        assert resp.status_code == 202 and resp.json()["fairness_key"] == "tenant-b", resp.text
        b.append(resp.json()["task_id"])
    deadline = time.monotonic() + 180
    with db.connect() as conn:
        while conn.execute(sa.text("SELECT count(*) FROM tasks WHERE status = 'SUCCESS'")).scalar() < 303:
            assert time.monotonic() < deadline, "the backlog did not drain"
            conn.rollback()
            time.sleep(0.5)
        finished = conn.execute(sa.text("SELECT id::text, fairness_key FROM tasks ORDER BY completed_at")).all()
    b_ranks = [i for i, (task_id, _) in enumerate(finished) if task_id in b]
    a_done_before_b = sum(1 for key in (k for _, k in finished[: max(b_ranks)]) if key == "tenant-a")
    print("B's completion ranks among 303:", b_ranks, "A's tasks finished before B's last:", a_done_before_b)
    # Round-robin: B's three take turns with A's as soon as they wait in PostgreSQL; ahead of B's last
    # at most the A tasks already in the window or running when B arrived, plus one per turn.
    # (Without fair shares they would finish last, at ranks 300-302.)
    assert max(b_ranks) < 15, b_ranks


def test_the_window_admits_round_robin_across_principals_at_equal_priority(db: sa.Engine) -> None:
    queue = get_settings().cpu_queue

    def one(owner: str, **fields: object) -> str:  # its own statement: its own submit time
        return str(insert_tasks(new_task("test_noop", queue, owner=owner, inline=False, **fields))[0])

    alice = [one("alice") for _ in range(4)]
    bob = [one("bob") for _ in range(2)]
    carol = one("carol", fairness_key="bob")  # a fairness key takes the place of the owner
    urgent = one("alice", priority=5)  # priority still comes first
    with db.begin() as conn:
        order = [str(r["task_id"]) for r in flow.admit(conn, window=100)]
    assert order == [urgent, alice[0], bob[0], alice[1], bob[1], alice[2], carol, alice[3]]
    with db.begin() as conn:  # a window of 3: its first three places
        assert [str(r["task_id"]) for r in flow.admit(conn, window=3)] == order[:3]


def test_a_newcomer_is_sent_ahead_of_the_messages_other_principals_hold(db: sa.Engine) -> None:
    """An intent whose turn comes before the most-served principal's latest, in a queue that holds
    messages from earlier rounds, is admitted ``ahead`` (the dispatcher RPUSHes it: taken next) — at
    their priority or above; a later turn, or a first round, is sent behind."""
    queue = get_settings().cpu_queue

    def one(owner: str, **fields: object) -> str:
        return str(insert_tasks(new_task("test_noop", queue, owner=owner, inline=False, **fields))[0])

    first_round = [one("alice") for _ in range(4)]
    with db.begin() as conn:  # nothing sent yet: in place order, nobody ahead
        rows = flow.admit(conn, window=2)
        assert [str(r["task_id"]) for r in rows] == first_round[:2] and not any(r["ahead"] for r in rows)
        conn.execute(
            sa.text("UPDATE task_outbox SET published_at = now() WHERE task_id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": first_round[:2]},
        )
    bob = [one("bob"), one("bob")]
    with db.begin() as conn:  # alice holds 2 of a window of 4: bob's turns 1 and 2 fill the room; turn 1 < 2 ahead
        ahead = {str(r["task_id"]): r["ahead"] for r in flow.admit(conn, window=4)}
    assert ahead == {bob[0]: True, bob[1]: False}, ahead
    low = one("carol")
    with db.begin() as conn:  # alice's messages already sent become priority 3
        conn.execute(
            sa.text("UPDATE tasks SET priority = 3 WHERE id = ANY(CAST(:ids AS uuid[]))"), {"ids": first_round[:2]}
        )
    with db.begin() as conn:  # no priority-0 newcomer goes ahead of priority-3 messages already sent
        rows = flow.admit(conn, window=8)
        assert {str(r["task_id"]) for r in rows} >= {bob[0], low}
        assert not any(r["ahead"] for r in rows), [(str(r["task_id"]), r["ahead"]) for r in rows]
