"""Large inputs and results through the real API, PostgreSQL, Redis and a Celery worker, with each
blob backend: the bytes go to blob storage, Redis and the tasks table carry only references."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa

from tasklift.blobs import claims
from tasklift.queue.runtime import WorkerRuntime
from tests.blobs.conftest import Backend, RedisMonitor
from tests.conftest import wait_for_status

TEN_MB = 10 * 1024 * 1024


def submit(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    resp = client.post("/tasks", json=body)
    assert resp.status_code == 202, resp.text[:500]
    return resp.json()


def queued_messages(redis_url: str, queue: str) -> list[dict[str, Any]]:
    """The Celery messages waiting in a queue (a Redis list), decoded."""
    raw = redis.Redis.from_url(redis_url).lrange(queue, 0, -1)
    return [json.loads(item) for item in raw]


class EventListener:
    """Subscribes to one task's pub/sub channel and keeps the raw payloads."""

    def __init__(self, redis_url: str, task_id: str) -> None:
        self.payloads: list[bytes] = []
        self._pubsub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(f"tasklift:task:{task_id}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.2)
            if message is not None:
                self.payloads.append(message["data"])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._pubsub.close()


def test_a_10_mb_input_and_result_round_trip_through_blob_storage_not_redis(
    backend: Backend,
    redis_monitor: RedisMonitor,
    tasklift_env: dict[str, str],
    client: httpx.Client,
    start_worker,
    db: sa.Engine,
) -> None:
    data = secrets.token_hex(TEN_MB // 2)  # 10 MB of JSON string
    task = submit(client, {"task_type": "blob_echo", "data": data, "result_bytes": TEN_MB})
    task_id = task["task_id"]

    # The input is in blob storage before the 202; the row holds a reference of a few hundred bytes.
    with db.connect() as conn:
        row = conn.execute(
            sa.text("SELECT input, pg_column_size(input) AS size FROM tasks WHERE id = :id"), {"id": task_id}
        ).one()
    assert claims.is_ref(row.input) and row.input["$blob"]["size"] > TEN_MB and row.size < 1024
    store = backend.store()
    assert store.exists(row.input["$blob"]["key"])

    # The Celery message carries the task id and nothing else.
    [message] = queued_messages(tasklift_env["TASKLIFT_REDIS_URL"], "tasklift.cpu")
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert args == [task_id] and kwargs == {} and len(json.dumps(message)) < 8 * 1024

    listener = EventListener(tasklift_env["TASKLIFT_REDIS_URL"], task_id)
    try:
        start_worker(concurrency=1, env=backend.env)
        done = wait_for_status(client, task_id, {"SUCCESS", "FAILED"}, timeout=90)
    finally:
        listener.close()
    assert done["status"] == "SUCCESS", done["error"]
    assert done["result"] is None and done["result_url"] == f"/tasks/{task_id}/result"

    # The task saw exactly the input that was submitted.
    expected_sha = hashlib.sha256(data.encode()).hexdigest()
    with db.connect() as conn:
        result_ref = conn.execute(sa.text("SELECT result FROM tasks WHERE id = :id"), {"id": task_id}).scalar_one()
    assert claims.is_ref(result_ref) and store.exists(result_ref["$blob"]["key"])

    # The events published on Redis carry the blob's reference (the claim check), never the data;
    # nothing big crossed Redis. (The URL is the HTTP edge's: the stream below shows it.)
    events = [json.loads(p) for p in listener.payloads]
    terminal = [e for e in events if e["data"]["status"] == "SUCCESS"]
    assert terminal and terminal[-1]["data"]["result"] == result_ref
    assert max(len(p) for p in listener.payloads) < 4096
    assert any(task_id in c["command"] and c["command"].startswith("LPUSH") for c in redis_monitor.commands)
    assert redis_monitor.largest() < 64 * 1024, "a command of the size of the payload went through Redis"

    # A new stream's terminal snapshot names the URL too.
    stream = client.get(f"/tasks/{task_id}/stream")
    snapshot = next(line for line in stream.text.splitlines() if line.startswith("data:"))
    assert json.loads(snapshot[5:])["result_url"] == f"/tasks/{task_id}/result" and len(stream.text) < 4096

    # GET /tasks/{id}/result: a 303 to a signed URL (S3, Azure) or the bytes streamed (local).
    resp = client.get(done["result_url"])
    if backend.name == "local":
        assert resp.status_code == 200 and resp.headers["content-length"] == str(result_ref["$blob"]["size"])
    else:
        assert resp.status_code == 303 and resp.headers["location"].startswith("http")
        resp = httpx.get(resp.headers["location"], timeout=60)  # no credentials: the URL is signed
        assert resp.status_code == 200
    result = resp.json()
    assert result["input_length"] == len(data) and result["input_sha256"] == expected_sha
    assert len(result["data"]) == TEN_MB


def test_a_small_result_stays_inline_and_the_result_endpoint_returns_it(
    local_backend: Backend, client: httpx.Client, start_worker
) -> None:
    start_worker(concurrency=1, env=local_backend.env)
    task = submit(client, {"task_type": "blob_echo", "data": "hello", "result_bytes": 10})
    done = wait_for_status(client, task["task_id"], "SUCCESS", timeout=60)
    assert done["result"]["input_length"] == 5 and done["result_url"] is None
    resp = client.get(f"/tasks/{task['task_id']}/result")
    assert resp.status_code == 200 and resp.json() == done["result"]
    assert list(local_backend.store().keys(claims.task_prefix(task["task_id"]))) == []


def test_the_result_endpoint_is_404_like_get_task_and_409_before_success(
    local_backend: Backend, client: httpx.Client
) -> None:
    for missing in (str(uuid.uuid4()), "not-a-uuid"):
        resp = client.get(f"/tasks/{missing}/result")
        assert resp.status_code == 404 and resp.headers["content-type"] == "application/problem+json"
        assert client.get(f"/tasks/{missing}").status_code == 404
    task = submit(client, {"task_type": "test_noop"})
    pending = client.get(f"/tasks/{task['task_id']}/result")
    assert pending.status_code == 409 and pending.headers["retry-after"] == "1"
    client.delete(f"/tasks/{task['task_id']}")
    cancelled = client.get(f"/tasks/{task['task_id']}/result")
    assert cancelled.status_code == 409 and "retry-after" not in cancelled.headers


def test_a_result_whose_blob_is_gone_is_410(local_backend: Backend, client: httpx.Client, db: sa.Engine) -> None:
    task = submit(client, {"task_type": "test_noop"})
    ref = {"$blob": {"key": f"tasks/{task['task_id']}/result-1.json", "size": 2, "sha256": "0" * 64}}
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE tasks SET status = 'SUCCESS', result = CAST(:r AS jsonb), completed_at = now() WHERE id = :id"
            ),
            {"r": json.dumps(ref), "id": task["task_id"]},
        )
    assert client.get(f"/tasks/{task['task_id']}").json()["result_url"] == f"/tasks/{task['task_id']}/result"
    assert client.get(f"/tasks/{task['task_id']}/result").status_code == 410


def test_an_input_under_the_threshold_stays_in_the_row(
    local_backend: Backend, client: httpx.Client, db: sa.Engine
) -> None:
    task = submit(client, {"task_type": "blob_echo", "data": "small"})
    with db.connect() as conn:
        stored = conn.execute(sa.text("SELECT input FROM tasks WHERE id = :id"), {"id": task["task_id"]}).scalar_one()
    assert stored == {"data": "small", "result_bytes": 0}


def test_a_large_input_over_max_large_body_bytes_is_413_and_creates_nothing(
    local_backend: Backend, client: httpx.Client, db: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasklift.settings import get_settings

    monkeypatch.setenv("TASKLIFT_MAX_LARGE_BODY_BYTES", str(2 * 1024 * 1024))
    get_settings.cache_clear()
    assert submit(client, {"task_type": "blob_echo", "data": "x" * (1536 * 1024)})  # 1.5 MB: over 1 MiB, accepted
    resp = client.post("/tasks", json={"task_type": "blob_echo", "data": "x" * (3 * 1024 * 1024)})
    assert resp.status_code == 413
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM tasks")).scalar_one() == 1


@contextlib.contextmanager
def api_started_now() -> Iterator[httpx.Client]:
    """A client on an API started with the settings as they are now: the API runtime makes its
    blob store from the settings when the server starts (tasklift.http.runtime)."""
    from tasklift.http.asgi import create_app
    from tests.conftest import ServerThread  # noqa: PLC0415

    server = ServerThread(create_app()).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            yield http
    finally:
        server.stop()


def test_a_blob_store_failure_on_submit_is_503_and_creates_no_task(
    local_backend: Backend, db: sa.Engine, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    from tasklift.settings import get_settings

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("blobs cannot live under a file")
    monkeypatch.setenv("TASKLIFT_BLOB_LOCAL_DIR", str(not_a_folder))
    get_settings.cache_clear()
    with api_started_now() as client:
        resp = client.post("/tasks", json={"task_type": "blob_echo", "data": "x" * (300 * 1024)})
        assert resp.status_code == 503 and resp.headers["retry-after"] == "5"
        assert resp.json()["type"].endswith("blob-store-unavailable")
        inline = client.post("/tasks", json={"task_type": "blob_echo", "data": "small"})
        assert inline.status_code == 202  # a small input does not need the blob store
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM tasks")).scalar_one() == 1


def test_an_idempotent_replay_leaves_no_second_input_blob(local_backend: Backend, client: httpx.Client) -> None:
    body = {"task_type": "blob_echo", "data": "y" * (300 * 1024)}
    first = client.post("/tasks", json=body, headers={"Idempotency-Key": "k1"})
    again = client.post("/tasks", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    store = local_backend.store()
    assert [key.split("/")[1] for key in store.keys("tasks/")] == [first.json()["task_id"]]


def test_an_input_that_poses_as_a_blob_reference_is_422(local_backend: Backend, client: httpx.Client) -> None:
    forged = {"$blob": {"key": "tasks/someone-else/input.json", "size": 1, "sha256": "0" * 64}}
    resp = client.post("/tasks", json={"task_type": "blob_open", **forged})
    assert resp.status_code == 422 and resp.json()["errors"][0]["loc"] == ["body", "$blob"]


def test_a_misconfigured_blob_backend_fails_only_large_inputs(
    local_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasklift.settings import get_settings

    monkeypatch.setenv("TASKLIFT_BLOB_BACKEND", "s3")  # and no bucket
    monkeypatch.delenv("TASKLIFT_BLOB_S3_BUCKET", raising=False)
    get_settings.cache_clear()
    with api_started_now() as client:
        assert client.post("/tasks", json={"task_type": "blob_echo", "data": "small"}).status_code == 202
        assert client.post("/tasks", json={"task_type": "blob_echo", "data": "x" * (300 * 1024)}).status_code == 503


def test_an_outcome_whose_commit_reply_was_lost_keeps_its_result_blob(
    local_backend: Backend, db: sa.Engine, monkeypatch: pytest.MonkeyPatch, worker_runtime: WorkerRuntime
) -> None:
    """The outcome's COMMIT goes through, its reply is lost, the retry is refused: the blob stays."""
    from sqlalchemy.exc import OperationalError

    from tasklift.events.bus import EventAnnouncer
    from tasklift.queue import runner
    from tasklift.settings import redis_url
    from tasklift.store import leases
    from tasklift.tasks.context import TaskContext
    from tasklift.tasks.states import TaskStatus
    from tests.support.store import insert_tasks, new_task

    task_id = uuid.uuid4()
    insert_tasks(new_task("test_noop", "cpu", task_id=task_id))
    with worker_runtime.writer.connect() as conn:
        assert leases.take_lease(conn, task_id, "w1", 60) is not None
    value = {"rows": ["x" * 1024] * 2048}  # 2 MiB: over the blob threshold
    result = claims.check_in(value, claims.result_key(task_id, 1), worker_runtime.blobs)
    assert claims.is_ref(result)

    real_finish, tries = leases.finish, []

    def commit_then_lose_the_reply(*args: Any, **kwargs: Any) -> Any:
        tries.append(real_finish(*args, **kwargs))
        if len(tries) == 1:
            raise OperationalError("UPDATE tasks …", {}, Exception("server closed the connection unexpectedly"))
        return tries[-1]

    monkeypatch.setattr(leases, "finish", commit_then_lose_the_reply)
    ctx = TaskContext(
        task_id=task_id,
        attempt=1,
        task_type="test_noop",
        engine=worker_runtime.engine,
        writer=worker_runtime.writer,
        announcer=EventAnnouncer(redis_url()),
        lease_seconds=60,
        progress_interval=1,
    )
    announced: list[Any] = []
    monkeypatch.setattr(ctx, "announce", lambda events=(): announced.extend(events))
    runner._finish(worker_runtime, ctx, TaskStatus.SUCCESS, result=result)

    assert tries[0] is not None and tries[1] is None  # committed, then the retry was refused
    with db.connect() as conn:
        stored = conn.execute(sa.text("SELECT status, result FROM tasks WHERE id = :id"), {"id": task_id}).one()
    assert stored.status == "SUCCESS" and stored.result == result
    assert claims.check_out(stored.result, worker_runtime.blobs) == value  # the blob the row points to is still there
    assert [e.data["status"] for e in announced] == ["SUCCESS"]  # and the terminal event still goes out
