"""A task's webhook deliveries are its owner's (docs/webhooks.md): another tenant sees no log and
cannot redeliver (404, as for the task itself); an admin may do both."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tasklift.settings import get_settings
from tests.security.conftest import submit


@pytest.fixture
def loopback_callbacks(secure_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """Callbacks may name loopback (tests); nothing listens there, nothing has to."""
    monkeypatch.setenv("TASKLIFT_WEBHOOK_ALLOW_PRIVATE", "true")
    monkeypatch.setenv("TASKLIFT_WEBHOOK_ALLOWED_PORTS", "[9]")
    get_settings.cache_clear()
    return "http://127.0.0.1:9/hook"


def test_another_tenant_gets_404_for_the_deliveries_and_their_redelivery(
    loopback_callbacks: str,
    alice: httpx.Client,
    bob: httpx.Client,
    make_key: Callable[..., str],
    client_for: Callable[..., httpx.Client],
) -> None:
    task = submit(alice, callback_url=loopback_callbacks)  # no worker: it stays PENDING
    assert alice.delete(f"/tasks/{task['task_id']}").status_code == 204  # CANCELLED: a delivery is recorded
    [delivery] = alice.get(f"/tasks/{task['task_id']}/deliveries").json()["items"]
    assert delivery["event_type"] == "task.cancelled" and delivery["state"] == "pending"
    redeliver = f"/tasks/{task['task_id']}/deliveries/{delivery['id']}:redeliver"

    for resp in (bob.get(f"/tasks/{task['task_id']}/deliveries"), bob.post(redeliver)):
        assert resp.status_code == 404, resp.text
        assert resp.headers["content-type"] == "application/problem+json"
        assert resp.json()["detail"] == f"task {task['task_id']} does not exist"  # as for a task that is not there
    assert alice.post(redeliver).status_code == 202

    admin = client_for(make_key("ops", admin=True))
    assert [d["id"] for d in admin.get(f"/tasks/{task['task_id']}/deliveries").json()["items"]] == [delivery["id"]]
    assert admin.post(redeliver).status_code == 202
