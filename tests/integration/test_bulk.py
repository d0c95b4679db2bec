"""Bulk operations by filter (POST /bulk) on real PostgreSQL, Redis, Celery workers and the reaper:
bulk cancel of 10,000 tasks that workers hold messages for (none of them runs), dry-run counts equal
to the effect, filters by type, status and time, bulk retry of FAILED tasks, purge, bad bodies."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import wait_for_status


def count(db: sa.Engine, sql: str, **params: Any) -> int:
    with db.connect() as conn:
        return int(conn.execute(sa.text(sql), params).scalar_one())


def submit_many(client: httpx.Client, tasks: list[dict[str, Any]]) -> list[str]:
    """Submit ``tasks`` through POST /tasks:batch (1,000 a request); their ids in order."""
    ids: list[str] = []
    for start in range(0, len(tasks), 1000):
        items = [{"task": task} for task in tasks[start : start + 1000]]
        resp = client.post("/tasks:batch", json={"items": items})
        assert resp.status_code == 200 and resp.json()["rejected"] == 0, resp.text[:500]
        ids += [item["task"]["task_id"] for item in resp.json()["items"]]
    return ids


def bulk(client: httpx.Client, action: str, dry_run: bool = False, **filt: Any) -> httpx.Response:
    return client.post("/bulk", json={"action": action, "filter": filt, "dry_run": dry_run})


def wait_for_bulk(client: httpx.Client, bulk_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = client.get(f"/bulk/{bulk_id}").json()
        if body["status"] not in ("PENDING", "RUNNING"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"bulk operation {bulk_id} stayed {body.get('status')}: {body}")


def statuses(db: sa.Engine, ids: list[str]) -> dict[str, int]:
    with db.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT status, count(*) FROM tasks WHERE id = ANY(CAST(:ids AS uuid[])) GROUP BY status"),
            {"ids": ids},
        ).all()
    return {str(status): int(n) for status, n in rows}


def test_bulk_cancel_of_10000_pending_tasks_while_workers_run_none_of_them_runs(
    client: httpx.Client, db: sa.Engine, start_worker, start_reaper
) -> None:
    start_reaper()
    start_worker(concurrency=2)
    # Both worker processes busy with a cooperative sleeper each: the 10,000 are published (the
    # enqueuer sends each message at submit) and wait in Redis, some reserved by the pool already.
    sleepers = [
        client.post("/tasks", json={"task_type": "test_sleep", "seconds": 120, "steps": 1200}).json()["task_id"]
        for _ in range(2)
    ]
    for task_id in sleepers:
        wait_for_status(client, task_id, "RUNNING", timeout=30)
    ids = submit_many(client, [{"task_type": "test_effect", "key": f"b{i}"} for i in range(10_000)])
    assert statuses(db, ids) == {"PENDING": 10_000}

    dry = bulk(client, "cancel", dry_run=True, task_type="test_effect", status="PENDING")
    assert dry.status_code == 200 and dry.json()["count"] == 10_000
    assert count(db, "SELECT count(*) FROM bulk_operations") == 0  # a dry run makes nothing

    made = bulk(client, "cancel", task_type="test_effect", status="PENDING")
    assert made.status_code == 202, made.text
    op = made.json()
    assert made.headers["Location"] == f"/bulk/{op['bulk_id']}" == op["links"]["self"]
    assert op["total"] == 10_000 and op["action"] == "cancel"
    assert op["filter"] == {"status": ["PENDING"], "task_type": ["test_effect"]}

    done = wait_for_bulk(client, op["bulk_id"], timeout=120)
    assert done["status"] == "SUCCESS" and done["progress"]["percent"] == 100
    assert (done["total"], done["done"], done["skipped"], done["failed"]) == (10_000, 10_000, 0, 0)
    assert statuses(db, ids) == {"CANCELLED": 10_000}
    # Each got its status event and lost its dispatch intent, as a single cancel does.
    assert count(db, "SELECT count(*) FROM task_outbox WHERE task_id = ANY(CAST(:ids AS uuid[]))", ids=ids) == 0
    cancelled_events = count(
        db,
        "SELECT count(*) FROM task_events WHERE task_id = ANY(CAST(:ids AS uuid[])) AND kind = 'status'"
        " AND data->>'status' = 'CANCELLED'",
        ids=ids,
    )
    assert cancelled_events == 10_000

    # Free the workers: every message of the 10,000 reaches them now and is dropped.
    for task_id in sleepers:
        assert client.delete(f"/tasks/{task_id}").status_code in (202, 204)
        wait_for_status(client, task_id, "CANCELLED", timeout=30)
    marker = client.post("/tasks", json={"task_type": "test_effect", "key": "after"}).json()["task_id"]
    wait_for_status(client, marker, "SUCCESS", timeout=120)  # io queue: behind every dropped message
    time.sleep(1)
    assert count(db, "SELECT count(*) FROM test_effects WHERE key <> 'after'") == 0
    running = count(
        db,
        "SELECT count(*) FROM task_events WHERE task_id = ANY(CAST(:ids AS uuid[])) AND data->>'status' = 'RUNNING'",
        ids=ids,
    )
    assert running == 0
    assert count(db, "SELECT count(*) FROM tasks WHERE id = ANY(CAST(:ids AS uuid[])) AND attempts > 0", ids=ids) == 0


def test_filters_by_type_status_and_time_and_the_dry_run_count_is_the_effect(
    client: httpx.Client, db: sa.Engine, start_reaper
) -> None:
    early = submit_many(client, [{"task_type": "test_noop"} for _ in range(30)])
    time.sleep(0.05)
    middle_from = datetime.now(UTC)
    middle = submit_many(client, [{"task_type": "test_noop"} for _ in range(20)])
    sleepy = submit_many(client, [{"task_type": "test_sleep"} for _ in range(10)])
    time.sleep(0.05)
    middle_to = datetime.now(UTC)
    late = submit_many(client, [{"task_type": "test_noop"} for _ in range(15)])
    already = early[:5]
    for task_id in already:  # CANCELLED already: a cancel by filter does not select them
        assert client.delete(f"/tasks/{task_id}").status_code == 204

    window = {"created_after": middle_from.isoformat(), "created_before": middle_to.isoformat()}
    first = bulk(client, "cancel", True, task_type="test_noop", **window)
    assert first.status_code == 200, first.text
    assert first.json()["count"] == 20
    assert bulk(client, "cancel", True, task_type=["test_noop", "test_sleep"], **window).json()["count"] == 30
    assert bulk(client, "cancel", True, status="PENDING", **window).json()["count"] == 30
    assert bulk(client, "cancel", True, status="RUNNING", **window).json()["count"] == 0
    assert bulk(client, "retry", True, status="CANCELLED").json()["count"] == 5
    assert bulk(client, "purge", True, task_type="test_noop").json()["count"] == 5
    dry = bulk(client, "cancel", True, task_type="test_noop", created_after=middle_from.isoformat())
    assert dry.json()["count"] == 35  # the middle ones and the late ones

    start_reaper()
    op = bulk(client, "cancel", task_type="test_noop", created_after=middle_from.isoformat()).json()
    done = wait_for_bulk(client, op["bulk_id"])
    assert (done["status"], done["total"], done["done"]) == ("SUCCESS", 35, 35)
    assert statuses(db, middle + late) == {"CANCELLED": 35}
    assert statuses(db, early) == {"CANCELLED": 5, "PENDING": 25}  # before the window: untouched
    assert statuses(db, sleepy) == {"PENDING": 10}  # another type: untouched
    # Tasks submitted after the operation was made are never its: as of its creation.
    newer = submit_many(client, [{"task_type": "test_noop"} for _ in range(3)])
    time.sleep(1)
    assert statuses(db, newer) == {"PENDING": 3}


def test_bulk_retry_of_failed_tasks_runs_them_again(
    client: httpx.Client, db: sa.Engine, start_worker, start_reaper
) -> None:
    start_reaper()
    start_worker(concurrency=2)
    failed = submit_many(client, [{"task_type": "test_fail", "message": f"m{i}"} for i in range(12)])
    ok = submit_many(client, [{"task_type": "test_noop"} for _ in range(3)])
    for task_id in failed:
        wait_for_status(client, task_id, "FAILED")
    for task_id in ok:
        wait_for_status(client, task_id, "SUCCESS")
    assert bulk(client, "retry", True, status="FAILED").json()["count"] == 12
    assert bulk(client, "retry", status="SUCCESS").status_code == 422  # a success is never retried

    op = bulk(client, "retry", status="FAILED", task_type="test_fail").json()
    assert op["total"] == 12
    done = wait_for_bulk(client, op["bulk_id"])
    assert (done["status"], done["done"], done["skipped"], done["failed"]) == ("SUCCESS", 12, 0, 0)
    for task_id in failed:  # dispatched again by the dispatcher, run, and failed again: attempt 2
        deadline = time.monotonic() + 30
        while (task := client.get(f"/tasks/{task_id}").json())["attempts"] < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert task["attempts"] == 2, task
        assert wait_for_status(client, task_id, "FAILED")["error"]["message"].startswith("m")
    for task_id in ok:
        assert client.get(f"/tasks/{task_id}").json()["attempts"] == 1


def test_purge_deletes_only_finished_tasks_with_their_events(client: httpx.Client, db: sa.Engine, start_reaper) -> None:
    ids = submit_many(client, [{"task_type": "test_noop"} for _ in range(8)])
    for task_id in ids[:5]:
        assert client.delete(f"/tasks/{task_id}").status_code == 204
    resp = bulk(client, "purge", status="PENDING")
    assert resp.status_code == 422 and resp.headers["Content-Type"] == "application/problem+json"
    assert resp.json()["errors"][0]["loc"] == ["body", "filter", "status"]
    assert bulk(client, "purge", True, task_type="test_noop").json()["count"] == 5
    op = bulk(client, "purge", task_type="test_noop").json()
    start_reaper()
    done = wait_for_bulk(client, op["bulk_id"])
    assert (done["status"], done["total"], done["done"]) == ("SUCCESS", 5, 5)
    for task_id in ids[:5]:
        assert client.get(f"/tasks/{task_id}").status_code == 404
    for task_id in ids[5:]:
        assert client.get(f"/tasks/{task_id}").json()["status"] == "PENDING"
    assert count(db, "SELECT count(*) FROM task_events WHERE task_id = ANY(CAST(:ids AS uuid[]))", ids=ids[:5]) == 0


def test_a_cancelled_operation_stops_and_is_not_resumed(client: httpx.Client, db: sa.Engine, start_reaper) -> None:
    ids = submit_many(client, [{"task_type": "test_noop"} for _ in range(10)])
    op = bulk(client, "cancel", status="PENDING").json()
    stopped = client.delete(f"/bulk/{op['bulk_id']}")
    assert stopped.status_code == 200 and stopped.json()["status"] == "CANCELLED"
    assert client.delete(f"/bulk/{op['bulk_id']}").status_code == 200  # idempotent
    start_reaper()
    time.sleep(1.5)
    assert statuses(db, ids) == {"PENDING": 10}
    other = bulk(client, "cancel", status="PENDING").json()
    assert wait_for_bulk(client, other["bulk_id"])["done"] == 10
    finished = client.delete(f"/bulk/{other['bulk_id']}")
    assert finished.status_code == 409 and finished.headers["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"action": "explode", "filter": {"status": "PENDING"}}, ["body", "action"]),
        ({"action": "cancel"}, ["body", "filter"]),
        ({"action": "cancel", "filter": {}}, ["body", "filter"]),
        ({"action": "cancel", "filter": []}, ["body", "filter"]),
        ({"action": "cancel", "filter": {"colour": "red"}}, ["body", "filter", "colour"]),
        ({"action": "cancel", "filter": {"status": "SUCCESS"}}, ["body", "filter", "status"]),
        ({"action": "cancel", "filter": {"status": "NOPE"}}, ["body", "filter", "status"]),
        ({"action": "retry", "filter": {"status": ["FAILED", "RUNNING"]}}, ["body", "filter", "status"]),
        ({"action": "cancel", "filter": {"status": []}}, ["body", "filter", "status"]),
        ({"action": "cancel", "filter": {"task_type": "no_such_type"}}, ["body", "filter", "task_type"]),
        ({"action": "cancel", "filter": {"task_type": [1]}}, ["body", "filter", "task_type", 0]),
        ({"action": "cancel", "filter": {"created_after": "yesterday"}}, ["body", "filter", "created_after"]),
        ({"action": "cancel", "filter": {"key_prefix": "a\u0000"}}, ["body", "filter", "key_prefix"]),
        ({"action": "cancel", "filter": {"owner": "anonymous"}}, ["body", "filter"]),
        ({"action": "cancel", "filter": {"status": "PENDING"}, "dry_run": "yes"}, ["body", "dry_run"]),
        ({"action": "cancel", "filter": {"status": "PENDING"}, "force": True}, ["body", "force"]),
        ({"action": "cancel", "filter": {"task_id": ["not-a-uuid"]}}, ["body", "filter", "task_id", 0]),
        ({"action": "cancel", "filter": {"task_id": []}}, ["body", "filter", "task_id"]),
        # Found by schemathesis: a null was read as an absent field, against the schema.
        ({"action": "purge", "filter": {"task_id": None, "key_prefix": "0"}}, ["body", "filter", "task_id"]),
        (["cancel"], ["body"]),
    ],
)
def test_bad_bodies_are_422_problems_and_make_nothing(
    client: httpx.Client, db: sa.Engine, body: Any, loc: list[Any]
) -> None:
    resp = client.post("/bulk", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert resp.json()["errors"][0]["loc"] == loc
    assert count(db, "SELECT count(*) FROM bulk_operations") == 0


def test_an_unknown_or_malformed_operation_id_is_404(client: httpx.Client) -> None:
    for path in ("/bulk/not-a-uuid", "/bulk/00000000-0000-0000-0000-000000000000"):
        for method in ("GET", "DELETE"):
            resp = client.request(method, path)
            assert resp.status_code == 404 and resp.headers["Content-Type"] == "application/problem+json"


def test_a_time_beyond_utcs_years_is_the_edge_it_lies_beyond(client: httpx.Client) -> None:
    submit_many(client, [{"task_type": "test_noop"} for _ in range(2)])
    assert (
        bulk(client, "cancel", True, status="PENDING", created_after="0001-01-01T00:00:00+05:00").json()["count"] == 2
    )
    assert (
        bulk(client, "cancel", True, status="PENDING", created_before="0001-01-01T00:00:00+05:00").json()["count"] == 0
    )
    late = bulk(client, "cancel", True, status="PENDING", created_before="9999-12-31T23:00:00-05:00")
    assert late.status_code == 200 and late.json()["count"] == 2


def test_a_key_prefix_selects_the_tasks_submitted_with_such_idempotency_keys(
    client: httpx.Client, db: sa.Engine, start_reaper
) -> None:
    def keyed(key: str) -> str:
        resp = client.post("/tasks", json={"task_type": "test_noop"}, headers={"Idempotency-Key": key})
        assert resp.status_code == 202
        return str(resp.json()["task_id"])

    nightly = [keyed(f"nightly-{i}") for i in range(3)]
    other = [keyed(f"adhoc-{i}") for i in range(2)] + submit_many(client, [{"task_type": "test_noop"}])
    assert bulk(client, "cancel", True, key_prefix="nightly-").json()["count"] == 3
    assert bulk(client, "cancel", True, key_prefix="nightly_").json()["count"] == 0  # a prefix, not a LIKE pattern
    op = bulk(client, "cancel", key_prefix="nightly-").json()
    start_reaper()
    assert wait_for_bulk(client, op["bulk_id"])["done"] == 3
    assert statuses(db, nightly) == {"CANCELLED": 3}
    assert statuses(db, other) == {"PENDING": 3}


def test_a_list_of_task_ids_selects_exactly_those(client: httpx.Client, db: sa.Engine, start_reaper) -> None:
    ids = submit_many(client, [{"task_type": "test_noop"} for _ in range(6)])
    chosen = ids[1:4]
    assert bulk(client, "cancel", True, task_id=chosen).json()["count"] == 3
    op = bulk(client, "cancel", task_id=chosen).json()
    start_reaper()
    assert wait_for_bulk(client, op["bulk_id"])["done"] == 3
    assert statuses(db, chosen) == {"CANCELLED": 3}
    assert statuses(db, ids[:1] + ids[4:]) == {"PENDING": 3}


def test_running_tasks_get_the_cooperative_cancel_and_the_enforcer_ends_one_that_ignores_it(
    client: httpx.Client, db: sa.Engine, start_worker, start_reaper
) -> None:
    start_reaper()
    start_worker(concurrency=2)
    polite = client.post("/tasks", json={"task_type": "test_sleep", "seconds": 120, "steps": 1200}).json()["task_id"]
    deaf = client.post(
        "/tasks", json={"task_type": "test_sleep", "seconds": 120, "steps": 1200, "check_cancel": False}
    ).json()["task_id"]
    for task_id in (polite, deaf):
        wait_for_status(client, task_id, "RUNNING")
    op = bulk(client, "cancel", status="RUNNING", task_type="test_sleep").json()
    assert op["total"] == 2
    done = wait_for_bulk(client, op["bulk_id"])
    assert (done["done"], done["skipped"]) == (2, 0)
    # The flag, as DELETE /tasks/{id} sets it: the polite one stops at its next progress call, the
    # deaf one is ended by the reaper after TASKLIFT_CANCEL_GRACE_SECONDS (2 s here).
    assert wait_for_status(client, polite, "CANCELLED", timeout=30)["attempts"] == 1
    assert wait_for_status(client, deaf, "CANCELLED", timeout=60)["cancel_requested"] is True
    again = bulk(client, "cancel", True, status="RUNNING", task_type="test_sleep").json()
    assert again["count"] == 0


def test_a_reaper_killed_in_the_middle_leaves_the_rest_to_the_next_one_and_nothing_twice(
    client: httpx.Client, db: sa.Engine, start_reaper
) -> None:
    ids = submit_many(client, [{"task_type": "test_noop"} for _ in range(15_000)])
    op = bulk(client, "cancel", status="PENDING", task_type="test_noop").json()
    reaper = start_reaper()
    deadline = time.monotonic() + 60
    while (state := client.get(f"/bulk/{op['bulk_id']}").json())["processed"] < 500:
        assert time.monotonic() < deadline, state
        time.sleep(0.005)
    reaper.kill()  # SIGKILL: its open batch's transaction is rolled back with its connection
    stopped = client.get(f"/bulk/{op['bulk_id']}").json()
    assert stopped["status"] == "RUNNING" and 0 < stopped["processed"] < 15_000, stopped
    assert stopped["processed"] % 500 == 0  # whole batches only
    cancelled = statuses(db, ids).get("CANCELLED", 0)
    assert cancelled == stopped["done"]  # what the counts say is what is stored
    start_reaper()
    done = wait_for_bulk(client, op["bulk_id"])
    assert (done["status"], done["total"], done["done"], done["skipped"]) == ("SUCCESS", 15_000, 15_000, 0)
    assert statuses(db, ids) == {"CANCELLED": 15_000}
    twice = count(
        db,
        "SELECT count(*) FROM (SELECT task_id FROM task_events WHERE task_id = ANY(CAST(:ids AS uuid[]))"
        " AND data->>'status' = 'CANCELLED' GROUP BY task_id HAVING count(*) > 1) AS d",
        ids=ids,
    )
    assert twice == 0


def test_purge_takes_expired_tasks_and_retry_refuses_them(client: httpx.Client, db: sa.Engine, start_reaper) -> None:
    expiring = client.post("/tasks", json={"task_type": "test_noop", "ttl_seconds": 0.5}).json()["task_id"]
    kept = submit_many(client, [{"task_type": "test_noop"}])
    start_reaper()  # its expiry sweep ends the first EXPIRED (no worker runs)
    wait_for_status(client, expiring, "EXPIRED", timeout=30)
    assert bulk(client, "retry", status="EXPIRED").status_code == 422  # an expired task is never retried
    assert bulk(client, "purge", True, status="EXPIRED").json()["count"] == 1
    op = bulk(client, "purge", task_type="test_noop").json()  # no status: every finished state
    assert op["total"] == 1
    assert wait_for_bulk(client, op["bulk_id"])["done"] == 1
    assert client.get(f"/tasks/{expiring}").status_code == 404
    assert statuses(db, kept) == {"PENDING": 1}
