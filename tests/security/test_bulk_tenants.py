"""Bulk operations and tenants: a caller's bulk cancel touches only its own tasks, naming another
owner is 403, another caller's operation is 404 (and not in its GET /bulk); an admin targets one owner or every owner.
Real API with authentication on, PostgreSQL, Redis and the reaper."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import sqlalchemy as sa

from tests.security.conftest import submit


def wait_for_bulk(http: httpx.Client, bulk_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = http.get(f"/bulk/{bulk_id}").json()
        if body["status"] not in ("PENDING", "RUNNING"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"bulk operation {bulk_id} stayed {body.get('status')}")


def owners_by_status(db: sa.Engine) -> dict[tuple[str, str], int]:
    with db.connect() as conn:
        rows = conn.exec_driver_sql("SELECT owner, status, count(*) FROM tasks GROUP BY owner, status").all()
    return {(owner, status): n for owner, status, n in rows}


def test_a_tenant_cancels_only_its_own_tasks_and_cannot_name_or_see_another(
    alice: httpx.Client,
    bob: httpx.Client,
    make_key: Callable[..., str],
    client_for: Callable[..., httpx.Client],
    start_reaper,
    db: sa.Engine,
) -> None:
    for _ in range(4):
        submit(alice)
        submit(bob)
    carol = client_for(make_key("carol"))
    for _ in range(2):
        submit(carol)
    start_reaper()

    body = {"action": "cancel", "filter": {"status": "PENDING"}}
    assert alice.post("/bulk", json={**body, "dry_run": True}).json()["count"] == 4  # not bob's 4
    refused = alice.post("/bulk", json={"action": "cancel", "filter": {"status": "PENDING", "owner": "key:bob"}})
    assert refused.status_code == 403 and refused.headers["Content-Type"] == "application/problem+json"
    mine = alice.post("/bulk", json={"action": "cancel", "filter": {"status": "PENDING", "owner": "key:alice"}})
    assert mine.status_code == 202
    op = mine.json()
    assert wait_for_bulk(alice, op["bulk_id"])["done"] == 4
    assert owners_by_status(db) == {
        ("key:alice", "CANCELLED"): 4,
        ("key:bob", "PENDING"): 4,
        ("key:carol", "PENDING"): 2,
    }
    # Another caller's operation does not exist for bob, to read or to stop.
    assert bob.get(f"/bulk/{op['bulk_id']}").status_code == 404
    assert bob.delete(f"/bulk/{op['bulk_id']}").status_code == 404

    admin = client_for(make_key("ops", admin=True))
    assert admin.get(f"/bulk/{op['bulk_id']}").json()["done"] == 4  # an admin sees every operation
    one = admin.post("/bulk", json={"action": "cancel", "filter": {"status": "PENDING", "owner": "key:bob"}}).json()
    assert one["total"] == 4 and wait_for_bulk(admin, one["bulk_id"])["done"] == 4
    assert owners_by_status(db)[("key:carol", "PENDING")] == 2
    every = admin.post("/bulk", json={"action": "retry", "filter": {"status": "CANCELLED"}}).json()
    assert every["total"] == 8 and wait_for_bulk(admin, every["bulk_id"])["done"] == 8
    assert owners_by_status(db) == {("key:alice", "PENDING"): 4, ("key:bob", "PENDING"): 4, ("key:carol", "PENDING"): 2}
    # GET /bulk lists one's own operations; an admin's lists everyone's, newest first.
    assert [item["bulk_id"] for item in alice.get("/bulk").json()["items"]] == [op["bulk_id"]]
    assert bob.get("/bulk").json() == {"items": [], "next_cursor": None}
    listed = [item["bulk_id"] for item in admin.get("/bulk").json()["items"]]
    assert listed == [every["bulk_id"], one["bulk_id"], op["bulk_id"]]


def test_a_bulk_operation_needs_credentials(secure_api: str) -> None:
    with httpx.Client(base_url=secure_api) as anonymous:
        resp = anonymous.post("/bulk", json={"action": "cancel", "filter": {"status": "PENDING"}})
        assert resp.status_code == 401
