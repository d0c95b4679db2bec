"""POST /tasks:batch on real PostgreSQL, Redis and a real Celery worker: per-item results in order,
one transaction, idempotency per item, every accepted task run once."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tasklift.store.batches import KeyedTask, insert_batch
from tests.support.store import new_task


def bad_item(i: int) -> Any:
    """Five ways an item goes wrong, each with the loc its problem must point at."""
    kind = i % 5
    if kind == 0:
        return {"task": {"task_type": "no_such_type"}}, ["body", "items", i, "task", "task_type"]
    if kind == 1:
        return {"task": {"task_type": "test_effect"}}, ["body", "items", i, "task", "key"]  # key missing
    if kind == 2:
        return ["not", "an", "object"], ["body", "items", i]
    if kind == 3:
        return {"task": {"task_type": "test_noop"}, "idempotency_key": ""}, ["body", "items", i, "idempotency_key"]
    return {"task": {"task_type": "test_noop"}, "priority": 1}, ["body", "items", i, "priority"]


def mixed_batch(size: int, every: int) -> tuple[list[Any], dict[int, list[Any]]]:
    items: list[Any] = []
    bad: dict[int, list[Any]] = {}
    for i in range(size):
        if i % every == every - 1:
            item, loc = bad_item(i)
            bad[i] = loc
        else:
            item = {"task": {"task_type": "test_effect", "key": f"k{i}"}}
        items.append(item)
    return items, bad


def count(db: sa.Engine, sql: str) -> int:
    with db.connect() as conn:
        return int(conn.exec_driver_sql(sql).scalar_one())


def test_a_batch_of_1000_with_bad_items_answers_each_in_order_and_commits_only_the_good(
    client: httpx.Client, db: sa.Engine
) -> None:
    items, bad = mixed_batch(1000, every=7)
    resp = client.post("/tasks:batch", json={"items": items})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert len(body["items"]) == 1000
    assert body["rejected"] == len(bad) == 142 and body["accepted"] == 858
    for i, answer in enumerate(body["items"]):
        if i in bad:
            assert answer["status"] == 422, (i, answer)
            problem = answer["problem"]
            assert problem["status"] == 422 and problem["type"].endswith("/invalid-input")
            assert problem["errors"][0]["loc"] == bad[i], (i, problem)
        else:
            assert answer["status"] == 202 and answer["replayed"] is False, (i, answer)
            task = answer["task"]
            assert task["status"] == "PENDING" and task["task_type"] == "test_effect"
            assert task["links"]["self"] == f"/tasks/{task['task_id']}"
    ids = [a["task"]["task_id"] for a in body["items"] if a["status"] == 202]
    assert len(set(ids)) == 858
    assert count(db, "SELECT count(*) FROM tasks") == 858
    assert count(db, "SELECT count(*) FROM task_outbox") == 858
    assert client.get(f"/tasks/{ids[0]}").json()["task_id"] == ids[0]


def test_every_accepted_task_of_a_batch_runs_exactly_once(client: httpx.Client, db: sa.Engine, start_worker) -> None:
    items, bad = mixed_batch(1000, every=7)
    body = client.post("/tasks:batch", json={"items": items}).json()
    assert body["accepted"] == 858
    start_worker(concurrency=2)
    deadline = time.monotonic() + 100
    while time.monotonic() < deadline and count(db, "SELECT count(*) FROM tasks WHERE status = 'SUCCESS'") < 858:
        time.sleep(0.5)
    assert count(db, "SELECT count(*) FROM tasks WHERE status = 'SUCCESS'") == 858
    with db.connect() as conn:
        effects = conn.exec_driver_sql("SELECT key, count(*) FROM test_effects GROUP BY key").all()
    assert sorted(key for key, _ in effects) == sorted(f"k{i}" for i in range(1000) if i not in bad)
    assert all(n == 1 for _, n in effects)
    assert count(db, "SELECT max(attempts) FROM tasks") == 1


def test_a_replayed_batch_gives_the_keyed_items_their_tasks_back(client: httpx.Client, db: sa.Engine) -> None:
    items: list[dict[str, Any]] = [
        {"task": {"task_type": "test_noop", "metadata": {"n": i}}, "idempotency_key": f"order-{i}"} for i in range(50)
    ]
    items.append({"task": {"task_type": "test_noop"}})  # no key: a new task each time
    first = client.post("/tasks:batch", json={"items": items}).json()
    again = client.post("/tasks:batch", json={"items": items}).json()
    assert first["accepted"] == again["accepted"] == 51
    for one, two in zip(first["items"][:50], again["items"][:50], strict=True):
        assert two["status"] == 202 and two["replayed"] is True
        assert two["task"]["task_id"] == one["task"]["task_id"]
    assert again["items"][50]["replayed"] is False
    assert again["items"][50]["task"]["task_id"] != first["items"][50]["task"]["task_id"]
    assert count(db, "SELECT count(*) FROM tasks") == 52
    # The key is the same one POST /tasks's Idempotency-Key header uses: a single submit replays too.
    single = client.post("/tasks", json=items[0]["task"], headers={"Idempotency-Key": "order-0"})
    assert single.headers["Idempotent-Replayed"] == "true"
    assert single.json()["task_id"] == first["items"][0]["task"]["task_id"]


def test_a_key_reused_with_another_task_is_422_for_that_item_only(client: httpx.Client, db: sa.Engine) -> None:
    client.post("/tasks:batch", json={"items": [{"task": {"task_type": "test_noop"}, "idempotency_key": "k"}]})
    body = client.post(
        "/tasks:batch",
        json={
            "items": [
                {"task": {"task_type": "test_fail"}, "idempotency_key": "k"},  # another body, same key
                {"task": {"task_type": "test_noop"}, "idempotency_key": "dup"},
                {"task": {"task_type": "test_noop"}, "idempotency_key": "dup"},  # same key and body in one batch
                {"task": {"task_type": "test_fail"}, "idempotency_key": "dup"},  # same key, other body
            ]
        },
    ).json()
    statuses = [item["status"] for item in body["items"]]
    assert statuses == [422, 202, 202, 422]
    assert body["items"][0]["problem"]["errors"][0]["loc"] == ["body", "items", 0, "idempotency_key"]
    assert body["items"][2]["replayed"] is True
    assert body["items"][2]["task"]["task_id"] == body["items"][1]["task"]["task_id"]
    assert count(db, "SELECT count(*) FROM tasks") == 2


@pytest.mark.parametrize(
    ("payload", "status", "loc"),
    [
        ({"items": []}, 422, ["body", "items"]),
        ({"items": [{"task": {"task_type": "test_noop"}}] * 1001}, 422, ["body", "items"]),
        ([{"task": {}}], 422, ["body"]),
        ({"items": [], "extra": 1}, 422, ["body"]),
    ],
)
def test_a_bad_envelope_is_refused_whole_and_creates_nothing(
    client: httpx.Client, db: sa.Engine, payload: Any, status: int, loc: list[Any]
) -> None:
    resp = client.post("/tasks:batch", json=payload)
    assert resp.status_code == status and resp.headers["Content-Type"] == "application/problem+json"
    assert resp.json()["errors"][0]["loc"] == loc
    assert count(db, "SELECT count(*) FROM tasks") == 0


def test_a_batch_over_batch_max_bytes_is_413_and_not_json_is_400(client: httpx.Client, db: sa.Engine) -> None:
    big = {"items": [{"task": {"task_type": "test_effect", "key": "x" * 5000}}] * 900}  # ~4.5 MB
    resp = client.post("/tasks:batch", json=big)
    assert resp.status_code == 413 and resp.headers["Content-Type"] == "application/problem+json"
    assert client.post("/tasks:batch", content=b"{", headers={"Content-Type": "application/json"}).status_code == 400
    assert count(db, "SELECT count(*) FROM tasks") == 0


async def test_the_batch_transaction_run_again_after_its_commit_returns_the_same_tasks(runtime, db: sa.Engine) -> None:
    """What AsyncStore.run does when the commit's answer was lost: the same transaction once more."""
    keyed = KeyedTask(new_task("test_noop", "tasklift.cpu"), "again-1", "hash-1")
    plain = KeyedTask(new_task("test_noop", "tasklift.cpu"))
    first = await insert_batch(runtime.store, "anonymous", [keyed, plain], 3600)
    again = await insert_batch(runtime.store, "anonymous", [keyed, plain], 3600)
    assert [row["id"] for row in first.rows if row is not None] == [keyed.task.task_id, plain.task.task_id]
    assert again.rows[0] is None and again.earlier["again-1"]["task_id"] == keyed.task.task_id  # a replay
    assert again.rows[1] is not None and again.rows[1]["id"] == plain.task.task_id  # read back, not doubled
    assert count(db, "SELECT count(*) FROM tasks") == 2
