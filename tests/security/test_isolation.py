"""Tenant isolation: a task is its submitter's; others get 404 everywhere; admins see all."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import sqlalchemy as sa

from tests.security.conftest import submit


def test_another_principal_gets_404_for_status_stream_logs_cancel_and_retry(
    alice: httpx.Client, bob: httpx.Client, db: sa.Engine
) -> None:
    task_id = submit(alice)["task_id"]
    for method, path in [
        ("GET", f"/tasks/{task_id}"),
        ("GET", f"/tasks/{task_id}/stream"),
        ("GET", f"/tasks/{task_id}/logs"),
        ("GET", f"/tasks/{task_id}/output"),
        ("DELETE", f"/tasks/{task_id}"),
        ("POST", f"/tasks/{task_id}/retry"),
        ("GET", f"/operations/{task_id}"),
        ("GET", f"/v1/operations/{task_id}"),
        ("POST", f"/v1/operations/{task_id}:cancel"),
        ("POST", f"/tasks/{task_id}/signals/approval"),
        ("GET", f"/tasks/{task_id}/steps"),
    ]:
        resp = bob.request(method, path)
        assert resp.status_code == 404, (method, path, resp.text)
        assert resp.json()["detail"] == f"task {task_id} does not exist"  # the same words as a missing task
    assert alice.get(f"/tasks/{task_id}").json()["status"] == "PENDING"  # bob's cancel did nothing
    with db.connect() as conn:  # nor his signal
        assert conn.exec_driver_sql("SELECT count(*) FROM task_signals WHERE task_id = %s", (task_id,)).scalar() == 0


def test_lists_show_only_the_callers_tasks(alice: httpx.Client, bob: httpx.Client) -> None:
    mine = {submit(alice)["task_id"] for _ in range(3)}
    theirs = {submit(bob)["task_id"]}
    assert {t["task_id"] for t in alice.get("/tasks").json()["items"]} == mine
    assert {t["task_id"] for t in bob.get("/tasks", params={"status": "PENDING"}).json()["items"]} == theirs


def test_tasks_are_owned_by_the_key_principal(alice: httpx.Client, db: sa.Engine) -> None:
    task_id = submit(alice)["task_id"]
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT owner FROM tasks WHERE id = %s", (task_id,)).scalar() == "key:alice"


def test_an_admin_key_sees_and_cancels_every_principals_tasks(
    alice: httpx.Client, bob: httpx.Client, make_key: Callable[..., str], client_for: Callable[..., httpx.Client]
) -> None:
    ids = {submit(alice)["task_id"], submit(bob)["task_id"]}
    admin = client_for(make_key("ops", admin=True))
    assert {t["task_id"] for t in admin.get("/tasks").json()["items"]} == ids
    some = next(iter(ids))
    assert admin.get(f"/tasks/{some}/logs").status_code == 200
    assert admin.get(f"/tasks/{some}/output").status_code == 200
    assert admin.delete(f"/tasks/{some}").status_code == 204
    assert admin.post(f"/tasks/{some}/retry").status_code == 202
    assert admin.post(f"/tasks/{some}/signals/approval", json=1).json()["delivered"] == "kept"
    assert admin.get(f"/tasks/{some}/steps").status_code == 200


def test_idempotency_keys_are_scoped_to_the_principal(alice: httpx.Client, bob: httpx.Client) -> None:
    headers = {"Idempotency-Key": "order-42"}
    body = {"task_type": "test_noop"}
    first = alice.post("/tasks", json=body, headers=headers)
    again = alice.post("/tasks", json=body, headers=headers)
    other = bob.post("/tasks", json=body, headers=headers)
    assert again.headers.get("idempotent-replayed") == "true" and again.json()["task_id"] == first.json()["task_id"]
    assert other.status_code == 202 and "idempotent-replayed" not in other.headers
    assert other.json()["task_id"] != first.json()["task_id"]


def test_keys_sharing_a_principal_share_its_tasks_so_rotation_keeps_ownership(
    make_key: Callable[..., str], client_for: Callable[..., httpx.Client], db: sa.Engine
) -> None:
    old = client_for(make_key("ci-2025"))
    task_id = submit(old)["task_id"]
    new = client_for(make_key("ci-2026", principal="ci-2025"))
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE api_keys SET revoked_at = now() WHERE name = 'ci-2025'"))
    assert old.get(f"/tasks/{task_id}").status_code == 401
    assert new.get(f"/tasks/{task_id}").status_code == 200
