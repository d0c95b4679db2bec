"""Signed completion webhooks (issue 22 part 1; docs/webhooks.md), end to end on real engines.

Real API (uvicorn), PostgreSQL, Redis, Celery worker and ``tasklift reaper`` (whose deliverer
thread sends the webhooks); the receiver is a Starlette app on loopback that verifies with the
``standardwebhooks`` library from PyPI and dedupes by ``webhook-id``.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import trustme

from tasklift.embedded import free_port
from tasklift.settings import get_settings
from tests.conftest import wait_for_status
from tests.support.task_types import HOOKED_URL
from tests.support.webhook_receiver import Receiver, Server


def _secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


NEW_SECRET, OLD_SECRET = _secret(), _secret()


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Path]:
    """A CA the deliverer trusts with a certificate for 127.0.0.1, and a certificate of a CA it does not."""
    trusted, stranger = trustme.CA(), trustme.CA()
    paths = {"ca": tmp_path / "ca.pem", "good": tmp_path / "good.pem", "bad": tmp_path / "bad.pem"}
    trusted.cert_pem.write_to_path(str(paths["ca"]))
    trusted.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(paths["good"]))
    stranger.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(paths["bad"]))
    return paths


@pytest.fixture
def hooks_env(tasklift_env: dict[str, str], certs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Webhooks on: loopback allowed (tests), a rotating secret pair, short timeouts and back-off."""
    port = free_port()
    env = {
        "TASKLIFT_WEBHOOK_SECRETS": f"{NEW_SECRET},{OLD_SECRET}",
        "TASKLIFT_WEBHOOK_ALLOW_PRIVATE": "true",
        "TASKLIFT_WEBHOOK_ALLOWED_PORTS": f"[{port}]",
        "TASKLIFT_WEBHOOK_TIMEOUT_SECONDS": "1",
        "TASKLIFT_WEBHOOK_RETRY_SCHEDULE": "[0.3, 0.6, 1.0]",
        "TASKLIFT_WEBHOOK_INTERVAL_SECONDS": "0.2",
        "TASKLIFT_WEBHOOK_CA_BUNDLE": str(certs["ca"]),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return {"env": env, "port": port, "url": f"https://127.0.0.1:{port}/hook"}


def _deliveries(client: httpx.Client, task_id: str) -> list[dict[str, Any]]:
    resp = client.get(f"/tasks/{task_id}/deliveries")
    assert resp.status_code == 200, resp.text
    return resp.json()["items"]


def test_a_flaky_receiver_gets_every_delivery_once_per_webhook_id_signed_under_a_rotated_secret(
    hooks_env: dict[str, Any],
    certs: dict[str, Path],
    client: httpx.Client,
    start_worker: Callable[..., Any],
    start_reaper: Callable[..., Any],
) -> None:
    """Down, then the wrong TLS certificate, then 500s and answers slower than the timeout: every
    terminal event still arrives, verified by standardwebhooks with the OLD secret of the rotation
    (the receiver has not switched yet), each webhook-id processed once."""
    start_worker()
    start_reaper(env=hooks_env["env"])
    url = hooks_env["url"]
    submitted = {
        client.post("/tasks", json={"task_type": "test_noop", "callback_url": url}).json()["task_id"]: "SUCCESS",
        client.post("/tasks", json={"task_type": "test_noop", "callback_url": url}).json()["task_id"]: "SUCCESS",
        client.post("/tasks", json={"task_type": "test_fail", "callback_url": url}).json()["task_id"]: "FAILED",
    }
    running = client.post("/tasks", json={"task_type": "test_sleep", "seconds": 30, "callback_url": url}).json()
    wait_for_status(client, running["task_id"], "RUNNING")
    assert client.delete(f"/tasks/{running['task_id']}").status_code == 202
    submitted[running["task_id"]] = "CANCELLED"
    no_hook = client.post("/tasks", json={"task_type": "test_noop"}).json()["task_id"]
    for task_id, status in submitted.items():
        wait_for_status(client, task_id, status)
    wait_for_status(client, no_hook, "SUCCESS")

    # Down: nothing listens; each delivery fails and is retried.
    _wait(lambda: all(d["attempts"] >= 2 for t in submitted for d in _deliveries(client, t)), 20, "failed attempts")
    first = _deliveries(client, next(iter(submitted)))[0]
    assert first["state"] == "pending" and first["last_status"] is None and first["last_error"]

    receiver = Receiver(OLD_SECRET, slow_seconds=2.5)
    # The wrong certificate: the deliverer does not trust it, sends nothing the receiver can read.
    with Server(receiver, hooks_env["port"], certs["bad"]):
        before = {t: _deliveries(client, t)[0]["attempts"] for t in submitted}
        _wait(lambda: all(_deliveries(client, t)[0]["attempts"] > before[t] for t in submitted), 20, "TLS failures")
        assert "CERTIFICATE" in _deliveries(client, next(iter(submitted)))[0]["last_error"].upper()
    assert receiver.wire == []

    receiver.plan = ["500", "500", "slow", "slow"]
    with Server(receiver, hooks_env["port"], certs["good"]):
        _wait(
            lambda: all(d["state"] == "delivered" for t in submitted for d in _deliveries(client, t)),
            40,
            "every delivery delivered",
        )
    assert receiver.refused == []
    assert _deliveries(client, no_hook) == []
    ids = {d["id"]: t for t in submitted for d in _deliveries(client, t)}
    assert len(ids) == len(submitted)  # one terminal delivery per task
    assert set(receiver.events) == set(ids)  # every one arrived; the dedup keeps one per id
    assert len(receiver.wire) > len(ids)  # at least once: the 500s and the timeouts were sent again
    names = {"SUCCESS": "task.succeeded", "FAILED": "task.failed", "CANCELLED": "task.cancelled"}
    for msg_id, task_id in ids.items():
        event = receiver.events[msg_id]
        assert event["type"] == names[submitted[task_id]]
        assert event["data"]["task_id"] == task_id and event["data"]["status"] == submitted[task_id]
        shown = client.get(f"/tasks/{task_id}").json()
        shown.pop("paused")  # read with its queue's state; the webhook is the task alone
        assert event["data"] == shown
        signatures = receiver.headers[msg_id]["webhook-signature"].split(" ")
        assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)  # both secrets sign
    failed = next(t for t, s in submitted.items() if s == "FAILED")
    assert receiver.events[next(i for i, t in ids.items() if t == failed)]["data"]["error"]["message"]


def test_redelivery_sends_the_same_webhook_id_again_and_progress_milestones_are_opt_in(
    hooks_env: dict[str, Any],
    certs: dict[str, Path],
    client: httpx.Client,
    start_worker: Callable[..., Any],
    start_reaper: Callable[..., Any],
) -> None:
    start_worker()
    start_reaper(env=hooks_env["env"])
    receiver = Receiver(NEW_SECRET)
    with Server(receiver, hooks_env["port"], certs["good"]):
        body = {"task_type": "test_noop", "callback_url": hooks_env["url"], "callback_events": ["terminal"]}
        task_id = client.post("/tasks", json=body).json()["task_id"]
        wait_for_status(client, task_id, "SUCCESS")
        _wait(lambda: [d["state"] for d in _deliveries(client, task_id)] == ["delivered"], 20, "the delivery")
        [delivery] = _deliveries(client, task_id)
        assert delivery["attempts"] == 1 and delivery["last_status"] == 204 and delivery["delivered_at"]
        assert receiver.wire == [delivery["id"]]

        resp = client.post(f"/tasks/{task_id}/deliveries/{delivery['id']}:redeliver")
        assert resp.status_code == 202 and resp.json()["state"] == "pending"
        _wait(lambda: receiver.wire == [delivery["id"]] * 2, 20, "the redelivery")
        _wait(lambda: _deliveries(client, task_id)[0]["state"] == "delivered", 20, "the redelivery's mark")
        assert _deliveries(client, task_id)[0]["attempts"] == 2
        missing = client.post(f"/tasks/{task_id}/deliveries/msg_nope:redeliver")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"

        progress = {"task_type": "test_sleep", "seconds": 1, "callback_url": hooks_env["url"]}
        progress["callback_events"] = ["terminal", "progress"]
        with_progress = client.post("/tasks", json=progress).json()["task_id"]
        wait_for_status(client, with_progress, "SUCCESS")
        _wait(
            lambda: (
                {d["event_type"] for d in _deliveries(client, with_progress)} >= {"task.succeeded"}
                and all(d["state"] == "delivered" for d in _deliveries(client, with_progress))
            ),
            20,
            "the progress task's deliveries",
        )
    kinds = [d["event_type"] for d in _deliveries(client, with_progress)]
    assert kinds[-1] == "task.succeeded" and "task.progress" in kinds, kinds
    percents = [receiver.events[d["id"]]["data"]["progress"]["percent"] for d in _deliveries(client, with_progress)]
    assert percents[:-1] == sorted(percents[:-1]) and all(0 < p < 100 for p in percents[:-1]), percents


@pytest.fixture
def strict_env(tasklift_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The production defaults: https only, public addresses only, port 443."""
    monkeypatch.delenv("TASKLIFT_WEBHOOK_ALLOW_PRIVATE", raising=False)
    get_settings.cache_clear()
    yield


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"callback_url": "http://example.com/hook"}, "callback_url"),  # not https
        ({"callback_url": "https://127.0.0.1/hook"}, "callback_url"),  # loopback
        ({"callback_url": "https://169.254.169.254/latest/meta-data"}, "callback_url"),  # cloud metadata
        ({"callback_url": "https://10.1.2.3/hook"}, "callback_url"),  # private
        ({"callback_url": "https://[::ffff:127.0.0.1]/hook"}, "callback_url"),  # IPv4-mapped loopback
        ({"callback_url": "https://user:pw@93.184.215.14/hook"}, "callback_url"),  # credentials
        ({"callback_url": "https://93.184.215.14:8443/hook"}, "callback_url"),  # a port not allowed
        ({"callback_url": "ftp://93.184.215.14/hook"}, "callback_url"),
        ({"callback_url": "not a url"}, "callback_url"),
        ({"callback_url": 42}, "callback_url"),
        ({"callback_url": "https://93.184.215.14/" + "a" * 3000}, "callback_url"),
        ({"callback_url": "https://93.184.215.14/hook", "callback_events": ["bogus"]}, "callback_events"),
        ({"callback_url": "https://93.184.215.14/hook", "callback_events": []}, "callback_events"),
        ({"callback_url": "https://93.184.215.14/hook", "callback_events": "terminal"}, "callback_events"),
        ({"callback_events": ["terminal"]}, "callback_events"),  # events without a URL
    ],
)
def test_refused_callbacks_are_422_and_create_no_task(
    strict_env: None, client: httpx.Client, db: sa.Engine, body: dict[str, Any], field: str
) -> None:
    resp = client.post("/tasks", json={"task_type": "test_noop", **body})
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["errors"][0]["loc"] == ["body", field]
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM tasks")).scalar() == 0


def test_a_public_https_callback_is_accepted_and_stored_with_its_events(
    strict_env: None, client: httpx.Client, db: sa.Engine
) -> None:
    body = {"task_type": "test_noop", "callback_url": "https://93.184.215.14/hook", "callback_events": ["progress"]}
    resp = client.post("/tasks", json=body)
    assert resp.status_code == 202, resp.text
    assert resp.json()["links"]["deliveries"] == f"/tasks/{resp.json()['task_id']}/deliveries"
    with db.connect() as conn:
        row = conn.execute(sa.text("SELECT url, events FROM task_callbacks")).one()
    assert row.url == "https://93.184.215.14/hook" and row.events == ["progress"]


def test_a_task_types_default_callback_applies_unless_the_submit_names_one(
    strict_env: None, client: httpx.Client, db: sa.Engine
) -> None:
    by_default = client.post("/tasks", json={"task_type": "test_hooked"}).json()["task_id"]
    own = {"task_type": "test_hooked", "callback_url": "https://93.184.215.15/mine", "callback_events": ["terminal"]}
    overridden = client.post("/tasks", json=own).json()["task_id"]
    with db.connect() as conn:
        rows = {str(r.task_id): (r.url, r.events) for r in conn.execute(sa.text("SELECT * FROM task_callbacks"))}
    assert rows == {
        by_default: (HOOKED_URL, ["terminal", "progress"]),
        overridden: ("https://93.184.215.15/mine", ["terminal"]),
    }


def test_batch_items_carry_their_own_callbacks_and_a_refused_one_fails_only_its_item(
    strict_env: None, client: httpx.Client, db: sa.Engine
) -> None:
    items = [
        {"task": {"task_type": "test_noop", "callback_url": "https://93.184.215.14/a"}},
        {"task": {"task_type": "test_noop", "callback_url": "https://10.0.0.1/internal"}},
        {"task": {"task_type": "test_noop"}},
    ]
    resp = client.post("/tasks:batch", json={"items": items})
    assert resp.status_code == 200, resp.text
    results = resp.json()["items"]
    assert [r["status"] for r in results] == [202, 422, 202]
    assert results[1]["problem"]["errors"][0]["loc"] == ["body", "items", 1, "task", "callback_url"]
    with db.connect() as conn:
        rows = list(conn.execute(sa.text("SELECT task_id, url FROM task_callbacks")))
    assert [(str(r.task_id), r.url) for r in rows] == [(results[0]["task"]["task_id"], "https://93.184.215.14/a")]


def test_a_host_that_does_not_resolve_now_is_accepted_and_left_to_the_deliveries(
    strict_env: None, client: httpx.Client, db: sa.Engine
) -> None:
    """DNS may be down, or answer otherwise where the deliverer runs: each delivery vets it again."""
    resp = client.post("/tasks", json={"task_type": "test_noop", "callback_url": "https://hooks.example.invalid/h"})
    assert resp.status_code == 202, resp.text
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT url FROM task_callbacks")).scalar() == "https://hooks.example.invalid/h"
