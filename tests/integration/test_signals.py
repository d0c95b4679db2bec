"""Signals and waits at the API and the store: what a signal does to a task that is not waiting,
the refusals (nothing stored), the steps listing, and the dispatcher's wake-up with two dispatchers.
(The worker-side scenarios are tests/faults/test_waits.py.)"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tasklift.settings import get_settings
from tasklift.store import signals, waits
from tests.conftest import wait_for_status

MODULES = json.dumps(["tests.support.task_types", "tests.support.wait_types"])


@pytest.fixture(autouse=True)
def wait_types(tasklift_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    tasklift_env["TASKLIFT_TASK_MODULES"] = MODULES
    monkeypatch.setenv("TASKLIFT_TASK_MODULES", MODULES)
    get_settings.cache_clear()


def _kept(db: sa.Engine, task_id: str) -> list[Any]:
    with db.connect() as conn:
        rows = conn.execute(sa.text("SELECT payload FROM task_signals WHERE task_id = :t ORDER BY id"), {"t": task_id})
        return list(rows.scalars())


def test_signals_to_a_task_that_is_not_waiting_are_kept_in_order_up_to_the_limit(
    client: httpx.Client, db: sa.Engine, tmp_path: Path
) -> None:
    task_id = client.post("/tasks", json={"task_type": "test_wait", "path": str(tmp_path / "e")}).json()["task_id"]
    steps = client.get(f"/tasks/{task_id}/steps")
    assert steps.status_code == 200
    assert steps.json() == {"task_id": task_id, "status": "PENDING", "steps": [], "wait": None}
    first = client.post(f"/tasks/{task_id}/signals/approval", json={"n": 0})
    assert first.status_code == 202
    assert first.json()["delivered"] == "kept" and first.json()["task"]["status"] == "PENDING"
    assert client.post(f"/tasks/{task_id}/signals/approval").json()["delivered"] == "kept"  # no body: null
    for n in range(2, signals.MAX_KEPT):
        assert client.post(f"/tasks/{task_id}/signals/other:{n % 3}", json=n).status_code == 202
    full = client.post(f"/tasks/{task_id}/signals/approval", json="one too many")
    assert full.status_code == 409
    assert full.headers["content-type"].startswith("application/problem+json")
    kept = _kept(db, task_id)
    assert len(kept) == signals.MAX_KEPT and kept[:3] == [{"n": 0}, None, 2]


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/signals/not%20a%20name", b"1", 422),
        ("/signals/" + "x" * 201, b"1", 422),
        ("/signals/approval", b"{", 400),
        ("/signals/approval", b'{"a": "\\u0000"}', 422),
        ("/signals/approval", b'"' + b"x" * 300_000 + b'"', 413),
    ],
)
def test_refused_signals_store_nothing(
    client: httpx.Client, db: sa.Engine, tmp_path: Path, path: str, body: bytes, status: int
) -> None:
    task_id = client.post("/tasks", json={"task_type": "test_wait", "path": str(tmp_path / "e")}).json()["task_id"]
    reply = client.post(f"/tasks/{task_id}{path}", content=body, headers={"content-type": "application/json"})
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert _kept(db, task_id) == []
    form = client.post(f"/tasks/{task_id}/signals/approval", content=b"a=1", headers={"content-type": "text/plain"})
    assert form.status_code == 415


def test_unknown_tasks_are_404(client: httpx.Client) -> None:
    for task_id in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        assert client.post(f"/tasks/{task_id}/signals/approval", json=1).status_code == 404
        assert client.get(f"/tasks/{task_id}/steps").status_code == 404


def test_two_dispatchers_wake_a_due_sleep_once_and_it_runs_on(
    client: httpx.Client, db: sa.Engine, start_worker: Any, start_reaper: Any, tmp_path: Path
) -> None:
    start_worker(concurrency=1)  # no reaper yet: nothing wakes the task but the two sweeps below
    reply = client.post("/tasks", json={"task_type": "test_nap", "path": str(tmp_path / "e"), "seconds": 0.5})
    task_id = reply.json()["task_id"]
    wait_for_status(client, task_id, "WAITING")
    time.sleep(0.6)
    with db.connect() as one, db.connect() as two:
        first = one.begin()
        woken = waits.wake_due(one)
        second = two.begin()
        assert waits.wake_due(two) == []  # the first holds the row: SKIP LOCKED passes it by
        first.commit()
        assert waits.wake_due(two) == []  # and once committed it is PENDING: not due any more
        second.commit()
    assert [(e.task_id, e.data["status"]) for e in woken] == [(task_id, "PENDING")]
    with db.connect() as conn:
        result = conn.execute(
            sa.text("SELECT result FROM task_steps WHERE task_id = :t AND name = 'sleep#1'"), {"t": task_id}
        ).scalar()
        assert result == {"slept": True}
    start_reaper()  # the dispatcher publishes the intent the wake-up armed
    done = wait_for_status(client, task_id, {"SUCCESS", "FAILED"})
    assert done["status"] == "SUCCESS" and done["attempts"] == 2


def test_a_wait_inside_a_transaction_is_refused(client: httpx.Client, start_worker: Any, tmp_path: Path) -> None:
    start_worker(concurrency=1)
    reply = client.post("/tasks", json={"task_type": "test_wait", "path": str(tmp_path / "e"), "in_transaction": True})
    done = wait_for_status(client, reply.json()["task_id"], {"SUCCESS", "FAILED"})
    assert done["status"] == "FAILED"
    assert done["error"]["type"] == "RuntimeError" and "ctx.transaction()" in done["error"]["message"]


def test_a_retried_wait_transaction_finds_the_outcome_its_first_try_recorded(
    client: httpx.Client, db: sa.Engine, tmp_path: Path
) -> None:
    """A try whose COMMIT went through but whose reply was lost is run again: the second try must not
    suspend a task whose wait already took its signal."""
    task_id = client.post("/tasks", json={"task_type": "test_wait", "path": str(tmp_path / "e")}).json()["task_id"]
    wait = waits.Wait("wait#approval", 2, "1", "approval", None)
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO task_steps (task_id, name, position, version, attempt, result, duration_ms)"
                " VALUES (:t, 'wait#approval', 2, '1', 1, '{\"signal\": 7}', 0)"
            ),
            {"t": task_id},
        )
        assert waits.begin_wait(conn, uuid.UUID(task_id), 1, wait, 3.0) == ("recorded", {"signal": 7}, None)
    assert client.get(f"/tasks/{task_id}").json()["status"] == "PENDING"  # nothing else changed
