"""The webhook deliverer (tasklift.queue.webhooks) on the real database and a real receiver: several
deliverers share the work without sending a row twice (SKIP LOCKED claims), a receiver that never
accepts is given up after the retry window (and can be redelivered), redirects are not followed.

The deliverers run in this process (their threads, the test's database); the deliveries come from
the API's cancel of PENDING tasks, through the trigger (no worker needed).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tasklift.embedded import free_port
from tasklift.queue.webhooks import Deliverer
from tasklift.settings import database_url, get_settings
from tasklift.store.db import make_engine
from tests.conftest import REPO
from tests.support.webhook_receiver import Receiver, Server

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def port(tasklift_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> int:
    chosen = free_port()
    for name, value in {
        "TASKLIFT_WEBHOOK_SECRETS": SECRET,
        "TASKLIFT_WEBHOOK_ALLOW_PRIVATE": "true",
        "TASKLIFT_WEBHOOK_ALLOWED_PORTS": f"[{chosen}]",
        "TASKLIFT_WEBHOOK_TIMEOUT_SECONDS": "1",
        "TASKLIFT_WEBHOOK_RETRY_SCHEDULE": "[0.2]",
        "TASKLIFT_WEBHOOK_RETRY_HOURS": "0.0006",  # about 2 s
        "TASKLIFT_WEBHOOK_INTERVAL_SECONDS": "0.1",
        "TASKLIFT_WEBHOOK_CONCURRENCY": "4",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return chosen


@pytest.fixture
def deliverers(port: int) -> Iterator[Callable[[int], None]]:
    """``start(n)``: n deliverers, each with its own engine, until the test ends."""
    stop = threading.Event()
    started: list[tuple[Deliverer, threading.Thread]] = []

    def start(count: int) -> None:
        for _ in range(count):
            deliverer = Deliverer(make_engine(database_url(), pool_size=2), get_settings())
            started.append((deliverer, deliverer.start(stop)))

    yield start
    stop.set()
    for deliverer, thread in started:
        thread.join(10)
        deliverer.close()
        deliverer.engine.dispose()


def _cancelled_tasks(client: httpx.Client, url: str, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        task_id = client.post("/tasks", json={"task_type": "test_noop", "callback_url": url}).json()["task_id"]
        assert client.delete(f"/tasks/{task_id}").status_code == 204  # PENDING → CANCELLED: one delivery
        ids.append(task_id)
    return ids


def _states(db: sa.Engine) -> list[Any]:
    with db.connect() as conn:
        query = "SELECT id, state, attempts, last_status, last_error FROM webhook_deliveries"
        return list(conn.execute(sa.text(query)))


def test_three_deliverers_send_each_webhook_exactly_once_to_a_healthy_receiver(
    port: int, client: httpx.Client, db: sa.Engine, deliverers: Callable[[int], None]
) -> None:
    receiver = Receiver(SECRET)
    with Server(receiver, port):
        _cancelled_tasks(client, f"http://127.0.0.1:{port}/hook", 60)
        deliverers(3)
        _wait(lambda: all(row.state == "delivered" for row in _states(db)), 30, "every delivery")
    rows = _states(db)
    assert len(rows) == 60 and all(row.attempts == 1 for row in rows)
    assert sorted(receiver.wire) == sorted(row.id for row in rows)  # each once on the wire: no claim shared
    assert receiver.refused == []


def test_a_receiver_that_never_accepts_is_given_up_after_the_window_and_redelivery_revives_it(
    port: int, client: httpx.Client, db: sa.Engine, deliverers: Callable[[int], None]
) -> None:
    receiver = Receiver(SECRET)
    receiver.plan = ["500"] * 1000
    with Server(receiver, port):
        [task_id] = _cancelled_tasks(client, f"http://127.0.0.1:{port}/hook", 1)
        deliverers(1)
        _wait(lambda: _states(db)[0].state == "failed", 20, "the delivery to be given up")
        [row] = _states(db)
        assert row.last_status == 500 and row.attempts >= 3
        assert row.last_error.startswith("HTTP 500: xxx") and len(row.last_error) <= 220  # an excerpt only
        assert set(receiver.wire) == {row.id}
        [shown] = client.get(f"/tasks/{task_id}/deliveries").json()["items"]
        assert shown["state"] == "failed" and shown["next_attempt_at"] is None

        receiver.plan = []
        assert client.post(f"/tasks/{task_id}/deliveries/{row.id}:redeliver").status_code == 202
        _wait(lambda: _states(db)[0].state == "delivered", 20, "the redelivery")
    assert _states(db)[0].last_status == 204


def test_a_redirect_is_not_followed_but_retried_as_a_failure(
    port: int, client: httpx.Client, db: sa.Engine, deliverers: Callable[[int], None]
) -> None:
    receiver = Receiver(SECRET)
    receiver.plan = ["redirect"]
    with Server(receiver, port):
        _cancelled_tasks(client, f"http://127.0.0.1:{port}/hook", 1)
        deliverers(1)
        _wait(lambda: _states(db)[0].state == "delivered", 20, "the retry after the redirect")
    [row] = _states(db)
    assert row.attempts == 2 and len(receiver.wire) == 2  # the 307 was one attempt; nothing went to its Location


def test_the_python_client_lists_and_redelivers(port: int, api: str, client: httpx.Client) -> None:
    from tasklift.client import TaskliftClient, TaskliftError

    [task_id] = _cancelled_tasks(client, f"http://127.0.0.1:{port}/hook", 1)
    with TaskliftClient(api) as tl:
        [delivery] = tl.deliveries(task_id)
        assert delivery["event_type"] == "task.cancelled" and delivery["state"] == "pending"
        again = tl.redeliver(task_id, delivery["id"])
        assert again["id"] == delivery["id"] and again["state"] == "pending"
        with pytest.raises(TaskliftError) as refused:
            tl.redeliver(task_id, "msg_none")
    assert refused.value.status == 404


def test_without_a_secret_nothing_is_sent_and_the_reaper_says_why(
    port: int, client: httpx.Client, db: sa.Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("TASKLIFT_WEBHOOK_SECRETS")
    get_settings.cache_clear()
    receiver = Receiver(SECRET)
    with Server(receiver, port):
        deliverer = Deliverer(make_engine(database_url(), pool_size=1), get_settings())
        try:
            assert deliverer.round() == 0  # nothing due yet: nothing to say
            assert "TASKLIFT_WEBHOOK_SECRETS" not in caplog.text
            _cancelled_tasks(client, f"http://127.0.0.1:{port}/hook", 1)
            assert deliverer.round() == 0 and deliverer.round() == 0
        finally:
            deliverer.close()
            deliverer.engine.dispose()
    [row] = _states(db)
    assert row.state == "pending" and row.attempts == 0 and receiver.wire == []
    assert caplog.text.count("webhooks wait: TASKLIFT_WEBHOOK_SECRETS is not set") == 1


def test_the_cli_submits_with_a_callback_lists_and_redelivers(
    port: int, api: str, client: httpx.Client, tasklift_env: dict[str, str]
) -> None:
    from tests.integration.test_client import _cli

    env = {**tasklift_env, **{k: v for k, v in os.environ.items() if k.startswith("TASKLIFT_WEBHOOK_")}}
    hook = f"http://127.0.0.1:{port}/hook"
    done = _cli("submit", "test_noop", "-f", f"callback_url={hook}", "--url", api, env=env)
    assert done.returncode == 0, done.stderr
    task_id = done.stdout.strip()
    assert client.delete(f"/tasks/{task_id}").status_code == 204
    listed = _cli("deliveries", task_id, "--url", api, env=env)
    assert listed.returncode == 0, listed.stderr
    [line] = listed.stdout.strip().splitlines()
    delivery_id, event_type, state = line.split()[:3]
    assert delivery_id.startswith("msg_") and (event_type, state) == ("task.cancelled", "pending")
    again = _cli("deliveries", task_id, "--redeliver", delivery_id, "--url", api, env=env)
    assert again.returncode == 0 and again.stdout.strip() == f"{delivery_id} due again now"
    missing = _cli("deliveries", task_id, "--redeliver", "msg_none", "--url", api, env=env)
    assert missing.returncode == 2 and "404" in missing.stdout + missing.stderr


NODE_MODULES = REPO / ".cache" / "standardwebhooks-node"  #: npm's standardwebhooks, installed once
NODE_PACKAGE = "standardwebhooks@1.3.0"


def _node_standardwebhooks() -> Path:
    """npm's standardwebhooks, installed once into .cache (as tests/blobs installs Azurite)."""
    installed = NODE_MODULES / "node_modules"
    if not (installed / "standardwebhooks" / "package.json").exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is missing: a receiver in Node verifies webhooks here (apt-get install nodejs npm)")
        done = subprocess.run(
            [npm, "install", "--prefix", str(NODE_MODULES), "--no-audit", "--no-fund", NODE_PACKAGE],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            pytest.fail(f"npm install {NODE_PACKAGE} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return installed


def test_a_receiver_in_node_verifies_with_the_npm_standardwebhooks_package(
    port: int, client: httpx.Client, deliverers: Callable[[int], None], tmp_path: Path
) -> None:
    modules = _node_standardwebhooks()
    log = tmp_path / "node.log"
    script = REPO / "tests" / "support" / "webhook_receiver.cjs"
    with open(log, "w") as out:
        node = subprocess.Popen(["node", str(script), str(port), SECRET, str(modules)], stdout=out, stderr=out)
    try:
        _wait(lambda: "listening" in log.read_text(), 20, "the Node receiver")
        ids = _cancelled_tasks(client, f"http://127.0.0.1:{port}/hook", 3)
        deliverers(1)
        _wait(lambda: log.read_text().count("verified ") == 3, 20, "three verified deliveries")
    finally:
        node.terminate()
        node.wait(10)
    output = log.read_text().splitlines()
    assert not [line for line in output if line.startswith("refused")], output
    verified = [line.split()[1:] for line in output if line.startswith("verified ")]
    assert sorted(task for _, kind, task in verified if kind == "task.cancelled") == sorted(ids), output
    assert len({msg_id for msg_id, _, _ in verified}) == 3


def test_a_host_that_does_not_resolve_is_a_failed_attempt_retried(
    port: int, client: httpx.Client, db: sa.Engine, deliverers: Callable[[int], None]
) -> None:
    _cancelled_tasks(client, f"http://hooks.example.invalid:{port}/hook", 1)  # RFC 2606: never resolves
    deliverers(1)
    _wait(lambda: _states(db)[0].attempts >= 2, 20, "two attempts")
    [row] = _states(db)
    assert row.last_status is None and row.last_error.startswith("refused: cannot resolve hooks.example.invalid")
