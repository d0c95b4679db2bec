"""Weighted fair shares (issue 21 part 2, docs/flow-control.md): under an admission window a principal
(fairness key) of weight w takes w places per turn (``TASKLIFT_FAIRNESS_WEIGHTS``); and the window's
statement ranks only each principal's first ``window`` intents, without changing what it admits.
Real API, PostgreSQL, Redis, Celery worker and reaper."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from tasklift.settings import get_settings
from tasklift.store import flow, leases
from tasklift.tasks.states import TaskStatus
from tests.support.store import insert_tasks, new_task

pytestmark = pytest.mark.timeout(240)

WEIGHTS = {"tenant-a": 3, "tenant-c": 2}


@pytest.fixture
def tasklift_env(tasklift_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    settings = {"TASKLIFT_ADMISSION_WINDOW": "8", "TASKLIFT_FAIRNESS_WEIGHTS": json.dumps(WEIGHTS)}
    tasklift_env.update(settings)  # the child processes' env
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield tasklift_env
    get_settings.cache_clear()


def test_a_weight_3_tenant_gets_three_turns_to_a_weight_1_tenants_one(
    client: httpx.Client, db: sa.Engine, start_reaper, start_worker
) -> None:
    def submit(key: str) -> str:  # one by one: each its own submit time
        resp = client.post("/tasks", json={"task_type": "test_noop", "fairness_key": key})
        assert resp.status_code == 202, resp.text
        return str(resp.json()["task_id"])

    # Both backlogs wait in PostgreSQL before any dispatcher round (a window: nothing published at submit).
    a = [submit("tenant-a") for _ in range(12)]
    b = [submit("tenant-b") for _ in range(12)]
    start_worker(concurrency=1)
    start_reaper()
    deadline = time.monotonic() + 120
    with db.connect() as conn:
        while conn.execute(sa.text("SELECT count(*) FROM tasks WHERE status = 'SUCCESS'")).scalar() < 24:
            assert time.monotonic() < deadline, "the backlogs did not drain"
            conn.rollback()
            time.sleep(0.2)
        started = conn.execute(sa.text("SELECT id::text FROM tasks ORDER BY started_at")).scalars().all()
    # The first round admits the window's 8 in rank order (priority, turn = ceil(nth / weight), submit
    # time): turn 1 is A's first three then B's first, turn 2 A's next three then B's second. One
    # worker of concurrency 1 starts them in that order.
    assert started[:8] == [a[0], a[1], a[2], b[0], a[3], a[4], a[5], b[1]]
    assert sorted(started) == sorted(a + b)


def test_the_window_statement_gives_each_weight_its_places_per_turn(db: sa.Engine) -> None:
    queue = get_settings().cpu_queue

    def one(owner: str, **fields: object) -> str:  # its own statement: its own submit time
        return str(insert_tasks(new_task("test_noop", queue, owner=owner, inline=False, **fields))[0])

    a = [one("alice", fairness_key="tenant-a") for _ in range(7)]  # weight 3
    b = [one("bob") for _ in range(3)]  # unlisted: weight 1
    c = [one("carol", fairness_key="tenant-c") for _ in range(4)]  # weight 2
    urgent = one("bob", priority=5)  # priority still comes first, whatever the weights
    with db.begin() as conn:
        order = [str(r["task_id"]) for r in flow.admit(conn, window=100, weights=WEIGHTS)]
    turn1 = [a[0], a[1], a[2], b[0], c[0], c[1]]
    turn2 = [a[3], a[4], a[5], b[1], c[2], c[3]]
    turn3 = [a[6], b[2]]
    assert order == [urgent, *turn1, *turn2, *turn3]
    with db.begin() as conn:  # without weights: plain round-robin, the same statement
        plain = [str(r["task_id"]) for r in flow.admit(conn, window=100)]
    assert plain == [urgent, a[0], b[0], c[0], a[1], b[1], c[1], a[2], b[2], c[2], a[3], c[3], a[4], a[5], a[6]]
    for window in (1, 3, 5, 8):  # a smaller window: the first places of the same order (the cut)
        with db.begin() as conn:
            assert [str(r["task_id"]) for r in flow.admit(conn, window=window, weights=WEIGHTS)] == order[:window]


def test_only_each_principals_first_window_intents_are_ranked_yet_none_is_skipped(db: sa.Engine) -> None:
    # A tenant with far more waiting than the window, of two priorities: its high-priority intents come
    # after 30 low ones in submit order but still rank first; the cut keeps them (its own order is
    # priority first).
    queue = get_settings().cpu_queue
    low = [str(i) for i in insert_tasks(*(new_task("test_noop", queue, owner="big", inline=False) for _ in range(30)))]
    high = [str(insert_tasks(new_task("test_noop", queue, owner="big", inline=False, priority=3))[0]) for _ in range(2)]
    small = str(insert_tasks(new_task("test_noop", queue, owner="small", inline=False))[0])
    with db.begin() as conn:
        order = [str(r["task_id"]) for r in flow.admit(conn, window=4, weights={"big": 2})]
    assert order[:2] == high
    assert order[2] in low and order[3] in low and small not in order[:2]
    # big weighs 2: turn 1 at priority 0 is two of big's (submitted first), then small's.
    with db.begin() as conn:
        five = [str(r["task_id"]) for r in flow.admit(conn, window=5, weights={"big": 2})]
    assert five[:4] == order and five[4] == small


def _one(owner: str, **fields: object) -> str:  # its own statement: its own submit time
    return str(insert_tasks(new_task("test_noop", get_settings().cpu_queue, owner=owner, inline=False, **fields))[0])


def _mark_sent(conn: sa.Connection, ids: list[str]) -> None:
    conn.execute(
        sa.text("UPDATE task_outbox SET published_at = now() WHERE task_id = ANY(CAST(:i AS uuid[]))"), {"i": ids}
    )


def test_the_places_a_principal_holds_count_as_its_turns(db: sa.Engine) -> None:
    # A fills the window (4 sent, unclaimed): B's three then rank before A's fifth, as if A had had its turns.
    a = [_one("alice") for _ in range(10)]
    with db.begin() as conn:
        first = [str(r["task_id"]) for r in flow.admit(conn, window=4)]
        assert first == a[:4]
        _mark_sent(conn, first)
    b = [_one("bob") for _ in range(3)]
    with db.begin() as conn:
        assert [str(r["task_id"]) for r in flow.admit(conn, window=8)] == [*b, a[4]]


def test_one_place_at_a_time_still_alternates_between_principals(db: sa.Engine) -> None:
    # A window of 1 and one worker of concurrency 1: each round has room for one. The principal whose task
    # is running holds a place, so the other's turn comes next (without counting held places, A's older
    # backlog would win every round).
    a = [_one("alice") for _ in range(4)]
    b = [_one("bob") for _ in range(3)]
    got: list[str] = []
    running: uuid.UUID | None = None
    for _ in range(7):
        with db.begin() as conn:
            (row,) = flow.admit(conn, window=1, weights={})
            _mark_sent(conn, [str(row["task_id"])])
            assert flow.admit(conn, window=1) == []  # the window is full
        with db.begin() as conn:  # the worker finishes the task it ran and claims the one just sent
            if running is not None:
                attempt = leases.get_task(conn, running)["attempts"]  # type: ignore[index]
                assert leases.finish(conn, running, attempt, TaskStatus.SUCCESS) is not None
            assert leases.take_lease(conn, row["task_id"], "test:1", 30) is not None
        running = row["task_id"]
        got.append(str(running))
    assert got == [a[0], b[0], a[1], b[1], a[2], b[2], a[3]]


def test_a_newcomers_task_starts_next_behind_a_full_window(
    client: httpx.Client, db: sa.Engine, start_reaper, start_worker
) -> None:
    """A window of 8 full of tenant A's messages, one worker of concurrency 1 busy with A's 0.3 s
    tasks: tenant B's task starts after at most one more of A's (the one the worker had already
    taken), not behind the seven or so A holds in Redis."""
    start_reaper()
    start_worker(concurrency=1)
    body = {"task_type": "test_keyed", "label": "a", "seconds": 0.3, "fairness_key": "tenant-a"}
    resp = client.post("/tasks:batch", json={"items": [{"task": body}] * 30})
    assert resp.status_code == 200 and resp.json()["accepted"] == 30, resp.status_code
    deadline = time.monotonic() + 30
    with db.connect() as conn:  # A runs one and holds the window's two messages
        while conn.execute(sa.text("SELECT count(*) FROM tasks WHERE status = 'RUNNING'")).scalar() < 1:
            assert time.monotonic() < deadline
            conn.rollback()
            time.sleep(0.05)
    resp = client.post("/tasks", json={"task_type": "test_noop", "fairness_key": "tenant-b"})
    assert resp.status_code == 202, resp.text
    b = resp.json()["task_id"]
    deadline = time.monotonic() + 60
    with db.connect() as conn:
        while conn.execute(sa.text("SELECT status FROM tasks WHERE id = :id"), {"id": b}).scalar() != "SUCCESS":
            assert time.monotonic() < deadline
            conn.rollback()
            time.sleep(0.05)
        b_created, b_started = conn.execute(
            sa.text("SELECT created_at, started_at FROM tasks WHERE id = :id"), {"id": b}
        ).one()
        a_between = conn.execute(
            sa.text(
                "SELECT count(*) FROM tasks WHERE fairness_key = 'tenant-a' AND started_at > :c AND started_at < :s"
            ),
            {"c": b_created, "s": b_started},
        ).scalar()
    # Behind the window's messages B would wait for the A tasks Redis holds (7 in a run with B's
    # message LPUSHed like the others); sent ahead, at most the one the worker had already taken.
    print("A started between B's submit and start:", a_between)
    assert a_between <= 1, a_between
