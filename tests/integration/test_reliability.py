"""Retry by hand, idempotency keys, fencing and graceful shutdown (API.md, DESIGN.md mechanisms)."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import sqlalchemy as sa

from tasklift.queue.runtime import WorkerRuntime
from tasklift.store import leases
from tests.conftest import wait_for_status


def test_a_failed_task_can_be_retried_by_hand_keeping_its_id_and_events(client: httpx.Client, start_worker) -> None:
    start_worker()
    task_id = client.post("/tasks", json={"task_type": "test_fail"}).json()["task_id"]
    failed = wait_for_status(client, task_id, "FAILED")
    resp = client.post(f"/tasks/{task_id}/retry")
    assert resp.status_code == 202 and resp.json()["task_id"] == task_id and resp.json()["status"] == "PENDING"
    again = wait_for_status(client, task_id, "FAILED")
    assert again["attempts"] == failed["attempts"] + 1
    logs = client.get(f"/tasks/{task_id}/logs").json()
    assert [line["message"] for line in logs] == ["about to fail", "about to fail"]


def test_a_cancelled_task_can_be_retried_and_then_runs(client: httpx.Client, start_worker) -> None:
    task_id = client.post("/tasks", json={"task_type": "test_noop"}).json()["task_id"]
    assert client.delete(f"/tasks/{task_id}").status_code == 204
    assert client.post(f"/tasks/{task_id}/retry").status_code == 202
    start_worker()
    done = wait_for_status(client, task_id, "SUCCESS")
    assert done["cancel_requested"] is False and done["attempts"] == 1


def test_only_finished_unsuccessful_tasks_can_be_retried(client: httpx.Client, start_worker) -> None:
    pending = client.post("/tasks", json={"task_type": "test_noop"}).json()["task_id"]
    assert client.post(f"/tasks/{pending}/retry").status_code == 409
    start_worker()
    wait_for_status(client, pending, "SUCCESS")
    resp = client.post(f"/tasks/{pending}/retry")
    assert resp.status_code == 409 and resp.headers["content-type"] == "application/problem+json"
    assert client.post("/tasks/00000000-0000-0000-0000-000000000000/retry").status_code == 404


def test_idempotency_key_replays_the_original_202(client: httpx.Client) -> None:
    body = {"task_type": "test_noop"}
    first = client.post("/tasks", json=body, headers={"Idempotency-Key": "order-42"})
    again = client.post("/tasks", json=body, headers={"Idempotency-Key": "order-42"})
    assert first.status_code == again.status_code == 202
    assert again.json()["task_id"] == first.json()["task_id"]
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert again.headers["Location"] == first.headers["Location"]
    assert len(client.get("/tasks").json()["items"]) == 1


def test_idempotency_key_with_a_different_body_is_422(client: httpx.Client) -> None:
    client.post("/tasks", json={"task_type": "test_noop"}, headers={"Idempotency-Key": "k1"})
    resp = client.post("/tasks", json={"task_type": "test_fail"}, headers={"Idempotency-Key": "k1"})
    assert resp.status_code == 422 and resp.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    too_long = client.post("/tasks", json={"task_type": "test_noop"}, headers={"Idempotency-Key": "x" * 256})
    assert too_long.status_code == 422


def test_idempotency_key_still_in_flight_is_409_with_retry_after(client: httpx.Client, db: sa.Engine) -> None:
    """A reserved key whose request has not created its task yet (its transaction is still open)."""
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO idempotency_keys (owner, key, request_hash, expires_at)"
                " VALUES ('anonymous', 'busy', :h, now() + interval '1 hour')"
            ),
            {"h": __import__("tasklift.tasks.service", fromlist=["x"]).request_fingerprint({"task_type": "test_noop"})},
        )
    resp = client.post("/tasks", json={"task_type": "test_noop"}, headers={"Idempotency-Key": "busy"})
    assert resp.status_code == 409 and resp.headers["Retry-After"]


def test_twenty_concurrent_submits_with_one_key_create_one_task(client: httpx.Client) -> None:
    def post(_: int) -> httpx.Response:
        return client.post("/tasks", json={"task_type": "test_noop"}, headers={"Idempotency-Key": "burst"})

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(post, range(20)))
    assert {r.status_code for r in answers} == {202}
    assert len({r.json()["task_id"] for r in answers}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in answers) == 19
    assert len(client.get("/tasks").json()["items"]) == 1


def test_expired_idempotency_keys_are_cleaned_up(
    client: httpx.Client, db: sa.Engine, worker_runtime: WorkerRuntime
) -> None:
    client.post("/tasks", json={"task_type": "test_noop"}, headers={"Idempotency-Key": "old"})
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'"))
    from tasklift.queue.reaper import cleanup

    assert cleanup(worker_runtime) == 1  # the reaper's job, with a runtime as the reaper builds one
    fresh = client.post("/tasks", json={"task_type": "test_noop"}, headers={"Idempotency-Key": "old"})
    assert fresh.status_code == 202 and "Idempotent-Replayed" not in fresh.headers


def test_writes_from_a_stale_attempt_are_refused(client: httpx.Client, engine: sa.Engine) -> None:
    """Fencing: once attempt 2 holds the task, attempt 1 can neither report progress nor finish it."""
    from tasklift.tasks.states import TaskStatus

    task_id = client.post("/tasks", json={"task_type": "test_noop"}).json()["task_id"]
    import uuid

    tid = uuid.UUID(task_id)
    with engine.begin() as conn:
        first = leases.take_lease(conn, tid, "w1", lease=30)
    assert first is not None and first[0]["attempts"] == 1
    with engine.begin() as conn:  # attempt 1 "dies"; its lease is taken over
        conn.execute(
            sa.text("UPDATE tasks SET lease_expires_at = now() - interval '1 s' WHERE id = :t"), {"t": task_id}
        )
        assert leases.recover_expired(conn, tid, 1, max_redispatches=5) is not None
        second = leases.take_lease(conn, tid, "w2", lease=30)
    assert second is not None and second[0]["attempts"] == 2
    with engine.begin() as conn:
        assert leases.record_progress(conn, tid, 1, {"percent": 50}, lease=30) is None
        assert leases.finish(conn, tid, 1, TaskStatus.SUCCESS, result={"stale": True}) is None
        assert leases.heartbeat(conn, tid, 1, lease=30) is None
        assert leases.lock_for_attempt(conn, tid, 1) is False
        assert leases.finish(conn, tid, 2, TaskStatus.SUCCESS, result={"fresh": True}) is not None
    assert client.get(f"/tasks/{task_id}").json()["result"] == {"fresh": True}


def test_sigterm_lets_a_worker_finish_its_current_task(client: httpx.Client, start_worker, db: sa.Engine) -> None:
    """Graceful shutdown: the running task completes within the soft-shutdown timeout, nothing is lost."""
    worker = start_worker(concurrency=1)
    task_id = client.post("/tasks", json={"task_type": "test_effect", "key": "k", "seconds": 2}).json()["task_id"]
    wait_for_status(client, task_id, "RUNNING")
    worker.popen.send_signal(signal.SIGTERM)
    done = wait_for_status(client, task_id, "SUCCESS", timeout=20)
    assert done["attempts"] == 1
    worker.popen.wait(20)
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM test_effects")).scalar() == 1


def test_sigterm_on_the_api_ends_open_streams_so_clients_reconnect_elsewhere(spawn, client: httpx.Client) -> None:
    from tasklift.embedded import free_port

    port = free_port()
    api = spawn("api", "api", "--port", str(port))
    api.wait_for_output("Uvicorn running", timeout=30)
    task_id = client.post("/tasks", json={"task_type": "test_noop"}).json()["task_id"]  # no worker: stays PENDING
    with httpx.stream("GET", f"http://127.0.0.1:{port}/tasks/{task_id}/stream", timeout=30) as resp:
        chunks = resp.iter_text()
        assert "event: status" in next(c for c in chunks if "event:" in c)
        started = time.monotonic()
        api.popen.send_signal(signal.SIGTERM)
        rest = "".join(chunks)  # the server drains: the stream ends cleanly (no broken chunk) …
    assert "event:" not in rest  # … without inventing events
    assert time.monotonic() - started < 5
    # uvicorn re-raises the signal after its graceful shutdown, so the exit status reports SIGTERM.
    assert api.popen.wait(15) in (0, -signal.SIGTERM)
    assert "ASGI callable returned without completing response" not in api.output()
