"""Waits and signals with real workers, the real reaper/dispatcher, PostgreSQL and Redis.

``ctx.wait_for`` suspends a task (WAITING) without holding its worker; ``POST /tasks/{id}/signals/{name}``
resumes it on any worker, its finished steps replayed (counted by their side effects); a signal sent
before the wait is kept, two racing signals resume it once, a timeout raises in the task, ``ctx.sleep``
wakes by itself, and a WAITING task can be cancelled.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tasklift.settings import get_settings
from tests.conftest import wait_for_status

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
MODULES = json.dumps(["tests.support.task_types", "tests.support.wait_types"])


@pytest.fixture(autouse=True)
def wait_types(tasklift_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    tasklift_env["TASKLIFT_TASK_MODULES"] = MODULES
    monkeypatch.setenv("TASKLIFT_TASK_MODULES", MODULES)
    get_settings.cache_clear()


def _effects(path: Path) -> Counter[str]:
    return Counter(path.read_text().split()) if path.exists() else Counter()


def _submit(client: httpx.Client, **body: Any) -> str:
    reply = client.post("/tasks", json=body)
    assert reply.status_code == 202, reply.text
    return str(reply.json()["task_id"])


def test_wait_holds_no_worker_and_a_signal_resumes_it_with_its_payload(
    client: httpx.Client, db: sa.Engine, start_worker: Any, start_reaper: Any, tmp_path: Path
) -> None:
    start_worker(concurrency=1)  # one slot: the second task runs only if the waiting one let it go
    start_reaper()
    path = tmp_path / "effects"
    task_id = _submit(client, task_type="test_wait", path=str(path), emit=3)
    waiting = wait_for_status(client, task_id, "WAITING")
    assert waiting["attempts"] == 1
    steps = client.get(f"/tasks/{task_id}/steps").json()
    assert [s["name"] for s in steps["steps"]] == ["before"]
    assert steps["wait"]["signal"] == "approval" and steps["wait"]["deadline"] is None
    assert client.get(f"/operations/{task_id}").json()["status"] == "Running"  # Azure: in progress
    assert client.get(f"/v1/operations/{task_id}").json()["done"] is False  # AIP-151
    other = _submit(client, task_type="test_noop")
    assert wait_for_status(client, other, "SUCCESS", timeout=20)["status"] == "SUCCESS"
    assert client.get(f"/tasks/{task_id}").json()["status"] == "WAITING"  # still, while the slot ran another
    output = client.get(f"/tasks/{task_id}/output").json()  # the chunks before the wait were written
    assert [c["data"] for c in output["chunks"]] == ["line 0\n", "line 1\n", "line 2\n"]

    reply = client.post(f"/tasks/{task_id}/signals/approval", json={"approved_by": "ada", "n": 1})
    assert reply.status_code == 202, reply.text
    assert reply.json()["delivered"] == "resumed"
    assert reply.json()["task"]["status"] in {"PENDING", "RUNNING", "SUCCESS"}
    done = wait_for_status(client, task_id, {"SUCCESS", "FAILED"})
    assert done["status"] == "SUCCESS", done
    assert done["result"] == {"payload": {"approved_by": "ada", "n": 1}, "second": None}
    assert done["attempts"] == 2
    assert _effects(path) == {"before": 1, "resumed": 1, "after": 1}  # "before" replayed, not re-run
    steps = client.get(f"/tasks/{task_id}/steps").json()
    assert [(s["name"], s["attempt"]) for s in steps["steps"]] == [("before", 1), ("wait#approval", 1), ("after", 2)]
    assert steps["wait"] is None
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM task_waits WHERE task_id = :t"), {"t": task_id}).scalar() == 0
        statuses = conn.execute(
            sa.text("SELECT data ->> 'status' FROM task_events WHERE task_id = :t AND kind = 'status' ORDER BY seq"),
            {"t": task_id},
        ).scalars()
        assert list(statuses) == ["PENDING", "RUNNING", "WAITING", "PENDING", "RUNNING", "SUCCESS"]


def test_a_signal_sent_before_the_wait_is_kept_and_taken_by_it(
    client: httpx.Client, start_worker: Any, start_reaper: Any, tmp_path: Path
) -> None:
    start_worker(concurrency=1)
    start_reaper()
    path = tmp_path / "effects"
    task_id = _submit(client, task_type="test_wait", path=str(path), gate=True)
    deadline = time.monotonic() + 30
    while not Path(f"{path}.gate").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.get(f"/tasks/{task_id}").json()["status"] == "RUNNING"  # in the step before the wait
    reply = client.post(f"/tasks/{task_id}/signals/approval", json="early")
    assert reply.status_code == 202, reply.text
    assert reply.json()["delivered"] == "kept"
    Path(f"{path}.go").write_text("go")
    done = wait_for_status(client, task_id, {"SUCCESS", "FAILED"})
    assert done["result"] == {"payload": "early", "second": None}
    assert done["attempts"] == 1  # taken at the wait: the task never suspended


def test_two_racing_signals_resume_once_and_the_second_is_kept_for_the_next_wait(
    client: httpx.Client, start_worker: Any, start_reaper: Any, tmp_path: Path, api: str
) -> None:
    start_worker(concurrency=2)
    start_reaper()
    path = tmp_path / "effects"
    task_id = _submit(client, task_type="test_wait", path=str(path), second_wait=True)
    wait_for_status(client, task_id, "WAITING")
    replies: dict[str, httpx.Response] = {}
    barrier = threading.Barrier(2)

    def send(payload: str) -> None:
        with httpx.Client(base_url=api, timeout=30) as http:
            barrier.wait()
            replies[payload] = http.post(f"/tasks/{task_id}/signals/approval", json=payload)

    threads = [threading.Thread(target=send, args=(p,)) for p in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert {r.status_code for r in replies.values()} == {202}
    delivered = {payload: r.json()["delivered"] for payload, r in replies.items()}
    assert sorted(delivered.values()) == ["kept", "resumed"], delivered
    first = next(p for p, d in delivered.items() if d == "resumed")
    second = next(p for p, d in delivered.items() if d == "kept")
    done = wait_for_status(client, task_id, {"SUCCESS", "FAILED"})
    assert done["result"] == {"payload": first, "second": second}
    assert _effects(path) == {"before": 1, "resumed": 1, "after": 1}  # resumed once
    assert done["attempts"] == 2  # the second wait took the kept signal without suspending


def test_a_wait_that_times_out_raises_in_the_task(
    client: httpx.Client, start_worker: Any, start_reaper: Any, tmp_path: Path
) -> None:
    start_worker(concurrency=2)
    start_reaper()
    handled = _submit(client, task_type="test_wait", path=str(tmp_path / "a"), timeout=1, handle_timeout=True)
    unhandled = _submit(client, task_type="test_wait", path=str(tmp_path / "b"), timeout=1)
    assert wait_for_status(client, handled, "WAITING")["status"] == "WAITING"
    started = time.monotonic()
    done = wait_for_status(client, handled, {"SUCCESS", "FAILED"}, timeout=20)
    assert time.monotonic() - started < 10
    assert done["status"] == "SUCCESS"
    assert done["result"]["payload"] == "timed out: no signal came before the wait's timeout"
    assert _effects(tmp_path / "a") == {"before": 1, "resumed": 1, "after": 1}
    failed = wait_for_status(client, unhandled, {"SUCCESS", "FAILED"}, timeout=20)
    assert failed["status"] == "FAILED"
    assert failed["error"]["type"] == "WaitTimeout"
    late = client.post(f"/tasks/{handled}/signals/approval", json=1)  # the task is over
    assert late.status_code == 409
    assert late.headers["content-type"].startswith("application/problem+json")


def test_sleep_suspends_and_wakes_by_itself(
    client: httpx.Client, start_worker: Any, start_reaper: Any, tmp_path: Path
) -> None:
    start_worker(concurrency=1)
    start_reaper()
    path = tmp_path / "effects"
    task_id = _submit(client, task_type="test_nap", path=str(path), seconds=1.5)
    waiting = wait_for_status(client, task_id, "WAITING")
    wait = client.get(f"/tasks/{task_id}/steps").json()["wait"]
    assert wait["signal"] is None and wait["step"] == "sleep#1" and wait["deadline"] is not None
    assert waiting["attempts"] == 1
    done = wait_for_status(client, task_id, {"SUCCESS", "FAILED"}, timeout=20)
    assert done["status"] == "SUCCESS", done
    assert 1.5 <= done["result"]["slept"] < 10
    assert done["attempts"] == 2
    assert _effects(path) == {"woke": 1}


def test_cancel_while_waiting_and_bad_signals(
    client: httpx.Client, db: sa.Engine, start_worker: Any, start_reaper: Any, tmp_path: Path
) -> None:
    start_worker(concurrency=1)
    start_reaper()
    path = tmp_path / "effects"
    task_id = _submit(client, task_type="test_wait", path=str(path))
    wait_for_status(client, task_id, "WAITING")
    bad_name = client.post(f"/tasks/{task_id}/signals/no%20spaces", json=1)
    assert bad_name.status_code == 422
    not_json = client.post(
        f"/tasks/{task_id}/signals/approval", content=b"{", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 400
    assert client.post("/tasks/00000000-0000-0000-0000-000000000000/signals/approval", json=1).status_code == 404
    assert client.get(f"/tasks/{task_id}").json()["status"] == "WAITING"  # bad input changed nothing
    assert client.delete(f"/tasks/{task_id}").status_code == 204
    assert client.get(f"/tasks/{task_id}").json()["status"] == "CANCELLED"
    reply = client.post(f"/tasks/{task_id}/signals/approval", json=1)
    assert reply.status_code == 409
    assert reply.headers["content-type"].startswith("application/problem+json")
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM task_waits WHERE task_id = :t"), {"t": task_id}).scalar() == 0
    time.sleep(1)
    assert client.get(f"/tasks/{task_id}").json()["status"] == "CANCELLED"
    assert _effects(path) == {"before": 1}  # never resumed


def test_the_python_client_and_the_cli_see_waiting_and_send_the_signal(
    api: str, tasklift_env: dict[str, str], start_worker: Any, start_reaper: Any, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    from tasklift.client import TaskliftClient
    from tests.infra.tools import REPO

    start_worker(concurrency=1)
    start_reaper()
    with TaskliftClient(api) as tl:
        task = tl.submit("test_wait", path=str(tmp_path / "effects"), second_wait=True)
        deadline = time.monotonic() + 30
        while tl.get(task.task_id).status != "WAITING" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tl.get(task.task_id).status == "WAITING"
        assert tl.steps(task.task_id)["wait"]["signal"] == "approval"
        assert tl.signal(task.task_id, "approval", {"from": "client"})["delivered"] == "resumed"
        env = {**os.environ, **tasklift_env, "PYTHONPATH": f"{REPO}:{REPO / 'shared'}", "COLUMNS": "200"}
        sent = subprocess.run(
            [sys.executable, "-m", "tasklift.cli", "signal", task.task_id, "approval", "-d", '{"from": "cli"}']
            + ["--url", api],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
        assert sent.returncode == 0, sent.stderr + sent.stdout
        assert sent.stdout.split(":")[0] in {"resumed", "kept"}  # the second wait, before or after it began
        done = tl.wait(task.task_id, timeout=30)
        assert done.status == "SUCCESS"
        assert done.result == {"payload": {"from": "client"}, "second": {"from": "cli"}}
        statuses = [e.status for e in tl.stream(task.task_id, last_event_id=0) if e.kind == "status"]
        assert statuses.count("WAITING") >= 1 and statuses[-1] == "SUCCESS"
