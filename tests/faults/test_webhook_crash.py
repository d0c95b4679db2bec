"""A reaper killed in the middle of a webhook POST loses nothing and doubles nothing at once: its
claim is a lease, so another reaper sends the delivery again once that lease is over, with the same
webhook-id (the receiver's dedup keeps one), and not before (docs/webhooks.md)."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tasklift.embedded import free_port
from tasklift.settings import get_settings
from tests.support.webhook_receiver import Receiver, Server

pytestmark = pytest.mark.timeout(120)

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
TIMEOUT = 1.0
LEASE = TIMEOUT * 5 + 5  #: queue/webhooks.Deliverer.round's claim


def test_a_reaper_killed_mid_post_is_covered_by_the_next_after_its_lease(
    tasklift_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    client: httpx.Client,
    db: sa.Engine,
    start_reaper: Callable[..., Any],
) -> None:
    port = free_port()
    env = {
        "TASKLIFT_WEBHOOK_SECRETS": SECRET,
        "TASKLIFT_WEBHOOK_ALLOW_PRIVATE": "true",
        "TASKLIFT_WEBHOOK_ALLOWED_PORTS": f"[{port}]",
        "TASKLIFT_WEBHOOK_TIMEOUT_SECONDS": str(TIMEOUT),
        "TASKLIFT_WEBHOOK_INTERVAL_SECONDS": "0.1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    receiver = Receiver(SECRET, slow_seconds=3)
    receiver.plan = ["slow"]  # the first POST hangs at the receiver, after it was read
    with Server(receiver, port):
        first = start_reaper(env=env)
        task_id = client.post(
            "/tasks", json={"task_type": "test_noop", "callback_url": f"http://127.0.0.1:{port}/hook"}
        )
        task_id = task_id.json()["task_id"]
        assert client.delete(f"/tasks/{task_id}").status_code == 204
        deadline = time.monotonic() + 20
        while not receiver.wire:
            assert time.monotonic() < deadline, first.output()[-3000:]
            time.sleep(0.01)
        first.kill()  # within the POST's timeout: no outcome was recorded
        killed_at = time.monotonic()
        start_reaper(env=env)
        deadline = time.monotonic() + LEASE + 20
        while len(receiver.wire) < 2:
            assert time.monotonic() < deadline, "the delivery was never sent again"
            time.sleep(0.05)
        resent_after = time.monotonic() - killed_at
        deadline = time.monotonic() + 10
        while client.get(f"/tasks/{task_id}/deliveries").json()["items"][0]["state"] != "delivered":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    [delivery] = client.get(f"/tasks/{task_id}/deliveries").json()["items"]
    assert receiver.wire == [delivery["id"]] * 2 and list(receiver.events) == [delivery["id"]]
    assert delivery["attempts"] == 2 and delivery["last_status"] == 204
    assert LEASE - TIMEOUT - 1 < resent_after < LEASE + 5, resent_after  # after the lease, not at once
