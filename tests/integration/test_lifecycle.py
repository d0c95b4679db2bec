"""Submit → run → outcome through the real API, PostgreSQL, Redis and a real Celery worker."""

from __future__ import annotations

import time
import uuid

import httpx
import sqlalchemy as sa

from tests.conftest import wait_for_status


def submit(client: httpx.Client, body: dict, **headers: str) -> dict:
    resp = client.post("/tasks", json=body, headers=headers)
    assert resp.status_code == 202, resp.text
    return resp.json()


def test_submit_answers_202_with_location_and_a_pending_task(client: httpx.Client) -> None:
    resp = client.post("/tasks", json={"vector_data": [1, 2, 3], "metadata": {"source": "ui"}, "duration": 1})
    assert resp.status_code == 202
    task = resp.json()
    assert task["status"] == "PENDING" and task["task_type"] == "vector_processing"
    assert resp.headers["Location"] == f"/tasks/{task['task_id']}"
    assert resp.headers["Operation-Location"] == f"{client.base_url}/tasks/{task['task_id']}".replace(
        "//tasks", "/tasks"
    )
    assert resp.headers["Azure-AsyncOperation"] == f"{client.base_url}/operations/{task['task_id']}".replace(
        "//operations", "/operations"
    )  # the Azure status monitor (tests/integration/test_operations.py)
    assert resp.headers["Retry-After"] == "1"
    assert task["metadata"] == {"source": "ui"}
    assert task["links"]["stream"] == f"/tasks/{task['task_id']}/stream"
    uuid.UUID(task["task_id"])


def test_a_task_runs_to_success_with_the_demo_result(client: httpx.Client, start_worker) -> None:
    start_worker()
    task = submit(client, {"vector_data": [0.1, 0.2], "metadata": {"k": 1}, "duration": 2, "step_seconds": 0.2})
    running = wait_for_status(client, task["task_id"], {"RUNNING", "SUCCESS"})
    assert running["attempts"] == 1
    done = wait_for_status(client, task["task_id"], "SUCCESS")
    assert done["result"] == {"processed_vectors": 2, "status": "indexed", "metadata_processed": {"k": 1}}
    assert done["progress"]["percent"] == 100
    assert done["completed_at"] and done["started_at"] and done["error"] is None
    logs = client.get(f"/tasks/{task['task_id']}/logs").json()
    assert logs[0]["message"].startswith("Task started") and logs[-1]["message"] == "Task processing complete."
    assert [line["seq"] for line in logs] == sorted(line["seq"] for line in logs)
    later = client.get(f"/tasks/{task['task_id']}/logs", params={"after": logs[0]["seq"]}).json()
    assert later == logs[1:]


def test_a_failing_task_is_failed_with_its_error_and_no_stack_trace(client: httpx.Client, start_worker) -> None:
    start_worker()
    task = submit(client, {"task_type": "test_fail", "message": "disk on fire"})
    done = wait_for_status(client, task["task_id"], "FAILED")
    assert done["error"] == {"type": "ValueError", "message": "disk on fire"}
    assert "Traceback" not in str(done)
    assert client.get(f"/tasks/{task['task_id']}").headers.get("Retry-After") is None


def test_retryable_errors_are_retried_with_backoff_then_succeed(
    client: httpx.Client, start_worker, start_reaper
) -> None:
    start_worker()
    start_reaper()
    task = submit(client, {"task_type": "test_flaky", "fail_times": 2})
    done = wait_for_status(client, task["task_id"], "SUCCESS", timeout=30)
    assert done["attempts"] == 3 and done["result"] == {"attempt": 3}
    messages = [line["message"] for line in client.get(f"/tasks/{task['task_id']}/logs").json()]
    assert sum("retry in" in m for m in messages) == 2


def test_cancel_of_a_pending_task_means_it_never_runs(client: httpx.Client, start_worker, db: sa.Engine) -> None:
    task = submit(client, {"task_type": "test_effect", "key": "never"})
    assert client.delete(f"/tasks/{task['task_id']}").status_code == 204
    assert client.delete(f"/tasks/{task['task_id']}").status_code == 204  # idempotent
    start_worker()  # the message is still queued: the worker must drop it
    marker = submit(client, {"task_type": "test_effect", "key": "marker"})
    wait_for_status(client, marker["task_id"], "SUCCESS")
    body = client.get(f"/tasks/{task['task_id']}").json()
    assert body["status"] == "CANCELLED" and body["attempts"] == 0 and body["started_at"] is None
    with db.connect() as conn:
        keys = [r[0] for r in conn.execute(sa.text("SELECT key FROM test_effects"))]
    assert keys == ["marker"]


def test_cancel_of_a_running_task_stops_it_at_its_next_progress_check(client: httpx.Client, start_worker) -> None:
    start_worker()
    task = submit(client, {"task_type": "test_sleep", "seconds": 30, "steps": 300})
    wait_for_status(client, task["task_id"], "RUNNING")
    started = time.monotonic()
    resp = client.delete(f"/tasks/{task['task_id']}")
    assert resp.status_code == 202 and resp.json()["cancel_requested"] is True
    done = wait_for_status(client, task["task_id"], "CANCELLED", timeout=10)
    assert time.monotonic() - started < 3
    assert done["completed_at"] is not None


def test_a_task_that_ignores_cancel_is_terminated_after_the_grace_period(
    client: httpx.Client, start_worker, start_reaper
) -> None:
    start_worker()
    start_reaper()
    task = submit(client, {"task_type": "test_sleep", "seconds": 60, "steps": 1, "check_cancel": False})
    wait_for_status(client, task["task_id"], "RUNNING")
    assert client.delete(f"/tasks/{task['task_id']}").status_code == 202
    done = wait_for_status(client, task["task_id"], "CANCELLED", timeout=15)
    assert done["result"] is None


def test_cancel_of_a_finished_task_is_a_conflict(client: httpx.Client, start_worker) -> None:
    start_worker()
    task = submit(client, {"task_type": "test_noop"})
    wait_for_status(client, task["task_id"], "SUCCESS")
    resp = client.delete(f"/tasks/{task['task_id']}")
    assert resp.status_code == 409 and resp.headers["content-type"] == "application/problem+json"


def test_unknown_tasks_are_404_problems_everywhere(client: httpx.Client) -> None:
    for path in (f"/tasks/{uuid.uuid4()}", "/tasks/not-a-uuid", f"/tasks/{uuid.uuid4()}/logs"):
        resp = client.get(path)
        assert resp.status_code == 404, path
        assert resp.headers["content-type"] == "application/problem+json"
        assert resp.json()["status"] == 404
    assert client.delete(f"/tasks/{uuid.uuid4()}").status_code == 404


def test_a_task_is_stored_with_its_events_in_order(client: httpx.Client, start_worker, db: sa.Engine) -> None:
    start_worker()
    task = submit(client, {"task_type": "test_sleep", "seconds": 0.3, "steps": 3})
    wait_for_status(client, task["task_id"], "SUCCESS")
    with db.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT seq, kind, data->>'status' FROM task_events WHERE task_id = :t ORDER BY seq"),
            {"t": task["task_id"]},
        ).all()
    seqs = [r[0] for r in rows]
    assert seqs == list(range(1, len(rows) + 1))
    statuses = [r[2] for r in rows if r[1] == "status"]
    assert statuses == ["PENDING", "RUNNING", "SUCCESS"]
    assert any(r[1] == "progress" for r in rows)
