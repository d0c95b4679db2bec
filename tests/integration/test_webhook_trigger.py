"""The trigger of migration 0012_hooks records a delivery in the transaction of each transition into
a terminal state, whichever statement makes it (here: the reaper's lease recovery, which has no
other hook), and nothing for the transitions in between; its migration goes down and up again."""

from __future__ import annotations

import uuid

import httpx
import pytest
import sqlalchemy as sa

from tasklift.settings import get_settings
from tasklift.store import leases

URL = "https://93.184.215.14/hook"  # a public address: accepted with the production rules, never contacted


@pytest.fixture
def callback_task(tasklift_env: dict[str, str], client: httpx.Client, db: sa.Engine) -> uuid.UUID:
    """A task with a callback, RUNNING with an expired lease (as after a worker's death)."""
    get_settings.cache_clear()
    resp = client.post("/tasks", json={"task_type": "test_noop", "callback_url": URL})
    assert resp.status_code == 202, resp.text
    task_id = uuid.UUID(resp.json()["task_id"])
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE tasks SET status = 'RUNNING', attempts = 1, started_at = now(),"
                " lease_expires_at = now() - interval '1 second' WHERE id = :id"
            ),
            {"id": task_id},
        )
    return task_id


def _deliveries(db: sa.Engine) -> list[sa.Row]:
    with db.connect() as conn:
        return list(conn.execute(sa.text("SELECT event_type, task, state FROM webhook_deliveries ORDER BY created_at")))


def test_the_reapers_requeue_records_nothing_and_its_final_failure_one_delivery(
    callback_task: uuid.UUID, db: sa.Engine
) -> None:
    with db.begin() as conn:
        assert leases.recover_expired(conn, callback_task, 1, max_redispatches=1) is not None  # → PENDING
    assert _deliveries(db) == []
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE tasks SET status = 'RUNNING', attempts = 2 WHERE id = :id"), {"id": callback_task})
        assert leases.recover_expired(conn, callback_task, 2, max_redispatches=1) is not None  # → FAILED
    [delivery] = _deliveries(db)
    assert delivery.event_type == "task.failed" and delivery.state == "pending"
    assert delivery.task["status"] == "FAILED" and delivery.task["error"]["type"] == "LeaseExpired"
    assert "input" not in delivery.task  # the snapshot leaves the input out


def test_a_transition_that_rolls_back_records_nothing(callback_task: uuid.UUID, db: sa.Engine) -> None:
    with pytest.raises(RuntimeError), db.begin() as conn:
        assert leases.recover_expired(conn, callback_task, 1, max_redispatches=0) is not None  # → FAILED
        raise RuntimeError("the transaction fails after the transition")
    assert _deliveries(db) == []


def test_migration_0012_hooks_downgrades_and_upgrades_again(db: sa.Engine) -> None:
    from alembic import command

    from tasklift.store.migrate import alembic_config, upgrade

    command.downgrade(alembic_config(), "0011_bulk")
    with db.connect() as conn:
        for name in ("task_callbacks", "webhook_deliveries"):
            assert conn.execute(sa.text("SELECT to_regclass(:n)"), {"n": name}).scalar() is None
        assert (
            conn.execute(sa.text("SELECT count(*) FROM pg_trigger WHERE tgname = 'tasks_record_webhook'")).scalar() == 0
        )
    upgrade()
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('webhook_deliveries')")).scalar() == "webhook_deliveries"
        assert (
            conn.execute(sa.text("SELECT count(*) FROM pg_trigger WHERE tgname = 'tasks_record_webhook'")).scalar() == 1
        )


def test_an_expiry_records_a_task_expired_delivery(tasklift_env: dict[str, str], client: httpx.Client, db) -> None:
    """The reaper's expiry sweep (docs/flow-control.md) is a terminal transition too: task.expired."""
    from tasklift.store import flow

    get_settings.cache_clear()
    resp = client.post("/tasks", json={"task_type": "test_noop", "callback_url": URL, "ttl_seconds": 0.2})
    assert resp.status_code == 202, resp.text
    with db.begin() as conn:
        conn.execute(sa.text("SELECT pg_sleep(0.3)"))
    with db.begin() as conn:
        [(row, _event)] = flow.expire_due(conn)
    assert row["status"] == "EXPIRED"
    [delivery] = _deliveries(db)
    assert delivery.event_type == "task.expired" and delivery.task["status"] == "EXPIRED"
