"""The Python client's and the CLI's bulk operations and queue commands against a real API, the
reaper and PostgreSQL: ``tasklift bulk cancel --status PENDING --type x [--dry-run]`` and
``tasklift queues pause|resume``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from tasklift.client import TaskliftClient, TaskliftError
from tests.integration.test_client import _cli


def pending(db: sa.Engine, task_type: str) -> int:
    with db.connect() as conn:
        sql = "SELECT count(*) FROM tasks WHERE task_type = :t AND status = 'PENDING'"
        return int(conn.execute(sa.text(sql), {"t": task_type}).scalar_one())


def test_the_client_counts_runs_and_follows_a_bulk_operation(api: str, db: sa.Engine, start_reaper) -> None:
    with TaskliftClient(api) as tl:
        ids = [tl.submit("test_noop").task_id for _ in range(6)]
        since = datetime.now(UTC) - timedelta(minutes=1)
        assert tl.bulk("cancel", dry_run=True, status="PENDING", task_type="test_noop", created_after=since) == {
            "action": "cancel",
            "filter": {"status": ["PENDING"], "task_type": ["test_noop"], "created_after": since.isoformat()},
            "dry_run": True,
            "count": 6,
        }
        op = tl.bulk("cancel", status="PENDING", task_type="test_noop")
        assert op["status"] == "PENDING" and op["total"] == 6
        start_reaper()
        seen: list[str] = []
        final = tl.wait_bulk(op["bulk_id"], timeout=30, on_progress=lambda state: seen.append(state["status"]))
        assert final["status"] == "SUCCESS" and final["done"] == 6 and seen[-1] == "SUCCESS"
        assert tl.bulk_status(op["bulk_id"]) == final
        assert {tl.get(task_id).status for task_id in ids} == {"CANCELLED"}
        retried = tl.wait_bulk(tl.bulk("retry", status="CANCELLED")["bulk_id"], timeout=30)
        assert retried["done"] == 6 and {tl.get(task_id).status for task_id in ids} == {"PENDING"}
        with pytest.raises(TaskliftError) as caught:
            tl.bulk("cancel", status="SUCCESS")
        assert caught.value.status == 422 and caught.value.problem["errors"][0]["loc"] == ["body", "filter", "status"]
        with pytest.raises(TaskliftError) as caught:
            tl.cancel_bulk(final["bulk_id"])  # it finished by itself
        assert caught.value.status == 409


def test_the_cli_bulk_cancels_by_status_and_type_printing_progress(
    api: str, tasklift_env, db: sa.Engine, start_reaper
) -> None:
    with TaskliftClient(api) as tl:
        for _ in range(5):
            tl.submit("test_noop")
        for _ in range(3):
            tl.submit("test_sleep")
    args = ("bulk", "cancel", "--status", "PENDING", "--type", "test_noop", "--url", api)
    dry = _cli(*args, "--dry-run", env=tasklift_env)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "5 tasks would be cancelled" in dry.stdout and pending(db, "test_noop") == 5
    start_reaper()
    done = _cli(*args, env=tasklift_env)
    assert done.returncode == 0, done.stdout + done.stderr
    bulk_id, summary = done.stdout.strip().splitlines()[0], json.loads(done.stdout.strip().splitlines()[-1])
    assert summary == {"status": "SUCCESS", "total": 5, "done": 5, "skipped": 0, "failed": 0}
    assert "cancel SUCCESS" in done.stderr + done.stdout  # the progress line
    with TaskliftClient(api) as tl:
        assert tl.bulk_status(bulk_id)["done"] == 5
    assert pending(db, "test_noop") == 0 and pending(db, "test_sleep") == 3
    bad = _cli("bulk", "cancel", "--status", "SUCCESS", "--url", api, env=tasklift_env)
    assert bad.returncode == 2 and "422" in bad.stdout + bad.stderr and "Traceback" not in bad.stdout + bad.stderr


def test_the_client_and_the_cli_list_operations_newest_first_a_page_at_a_time(
    api: str, tasklift_env, start_reaper
) -> None:
    with TaskliftClient(api) as tl:
        tl.submit("test_noop")
        made = [tl.bulk("cancel", status="PENDING", task_type="test_noop")["bulk_id"] for _ in range(3)]
        first = tl.list_bulk(limit=2)
        assert [op["bulk_id"] for op in first["items"]] == made[:0:-1] and first["next_cursor"]
        second = tl.list_bulk(limit=2, cursor=first["next_cursor"])
        assert [op["bulk_id"] for op in second["items"]] == made[:1] and second["next_cursor"] is None
        assert tl.list_bulk(status="SUCCESS")["items"] == []
        start_reaper()
        for bulk_id in made:
            tl.wait_bulk(bulk_id, timeout=30)
        assert [op["bulk_id"] for op in tl.list_bulk(status="SUCCESS")["items"]] == made[::-1]
        for params, loc in (({"status": "DONE"}, "status"), ({"cursor": "bm90LWEtY3Vyc29y"}, "cursor")):
            with pytest.raises(TaskliftError) as caught:
                tl.list_bulk(**params)
            assert caught.value.status == 422 and caught.value.problem["errors"][0]["loc"] == ["query", loc]
    listed = _cli("bulk", "list", "--limit", "2", "--url", api, env=tasklift_env)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    lines = [json.loads(line) for line in listed.stdout.strip().splitlines()]
    assert [line["bulk_id"] for line in lines] == made[:0:-1] and {line["status"] for line in lines} == {"SUCCESS"}


def test_the_cli_pauses_and_resumes_a_queue(api: str, tasklift_env) -> None:
    # Anonymous callers are not admins: the CLI shows the 403 problem in one line.
    refused = _cli("queues", "pause", "cpu", "--url", api, env=tasklift_env)
    assert refused.returncode == 2 and "403" in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr
