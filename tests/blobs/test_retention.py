"""Retention: the reaper purges finished tasks past retention_days with their events, log lines and
blobs (blobs first, idempotently), and ``tasklift export`` writes them out beforehand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tasklift.blobs import BlobStoreError, claims
from tasklift.blobs.local import LocalBlobStore
from tasklift.tasks import retention
from tests.blobs.conftest import Backend
from tests.conftest import REPO

LARGE = "r" * (300 * 1024)  # over the 256 KiB threshold: the input goes to blob storage


def finished_task(client: httpx.Client, data: str = LARGE) -> str:
    """A task with a large input, CANCELLED before it ran (finished, with events and an input blob)."""
    resp = client.post("/tasks", json={"task_type": "blob_echo", "data": data})
    assert resp.status_code == 202, resp.text[:300]
    task_id: str = resp.json()["task_id"]
    assert client.delete(f"/tasks/{task_id}").status_code == 204
    return task_id


def backdate(db: sa.Engine, task_id: str, days: float) -> None:
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE tasks SET created_at = created_at - make_interval(days => :d),"
                " completed_at = completed_at - make_interval(days => :d) WHERE id = :id"
            ),
            {"d": days, "id": task_id},
        )


def counts(db: sa.Engine, task_id: str) -> dict[str, int]:
    with db.connect() as conn:
        return {
            table: conn.execute(
                sa.text(f"SELECT count(*) FROM {table} WHERE {column} = :id"), {"id": task_id}
            ).scalar_one()
            for table, column in (("tasks", "id"), ("task_events", "task_id"), ("task_outbox", "task_id"))
        }


def test_the_reaper_purges_old_finished_tasks_with_their_events_logs_and_blobs(
    backend: Backend, client: httpx.Client, db: sa.Engine, start_reaper
) -> None:
    store = backend.store()
    old = finished_task(client)
    recent = finished_task(client)
    waiting = client.post("/tasks", json={"task_type": "blob_echo", "data": LARGE}).json()["task_id"]
    backdate(db, old, 40)
    backdate(db, waiting, 40)  # old but never finished: not retention's business
    store.put(claims.result_key(old, 3), b'{"stray": "a refused attempt"}')  # blobs no row points to go too
    with db.begin() as conn:  # and a log line
        conn.execute(
            sa.text(
                "INSERT INTO task_events (task_id, seq, kind, data) SELECT id, last_seq + 1, 'log',"
                ' \'{"level": "INFO", "message": "bye"}\'::jsonb FROM tasks WHERE id = :id'
            ),
            {"id": old},
        )
    assert counts(db, old)["task_events"] >= 3 and len(list(store.keys(claims.task_prefix(old)))) == 2

    start_reaper(env={**backend.env, "TASKLIFT_RETENTION_DAYS": "30", "TASKLIFT_RETENTION_INTERVAL_SECONDS": "0.5"})
    deadline = time.monotonic() + 30
    while counts(db, old)["tasks"] and time.monotonic() < deadline:
        time.sleep(0.2)

    assert counts(db, old) == {"tasks": 0, "task_events": 0, "task_outbox": 0}
    assert list(store.keys(claims.task_prefix(old))) == []
    assert client.get(f"/tasks/{old}").status_code == 404
    assert client.get(f"/tasks/{old}/result").status_code == 404
    for kept in (recent, waiting):
        assert counts(db, kept)["tasks"] == 1 and store.exists(claims.input_key(kept))


class FailingDeletes(LocalBlobStore):
    def delete(self, key: str) -> None:
        raise BlobStoreError("storage is down")


def test_a_purge_deletes_blobs_before_rows_so_a_failure_leaves_nothing_unreachable(
    local_backend: Backend, client: httpx.Client, db: sa.Engine
) -> None:
    store = local_backend.store()
    task_id = finished_task(client)
    backdate(db, task_id, 40)
    with pytest.raises(BlobStoreError):
        retention.purge_batch(db, 30, FailingDeletes(Path(local_backend.env["TASKLIFT_BLOB_LOCAL_DIR"])))
    assert counts(db, task_id)["tasks"] == 1 and store.exists(claims.input_key(task_id))  # rows kept: retried later
    assert retention.purge_batch(db, 30, store) == 1
    assert counts(db, task_id)["tasks"] == 0 and list(store.keys(claims.task_prefix(task_id))) == []
    assert retention.purge_batch(db, 30, store) == 0  # idempotent


def test_retention_days_zero_keeps_everything(local_backend: Backend, client: httpx.Client, db: sa.Engine) -> None:
    task_id = finished_task(client)
    backdate(db, task_id, 3650)
    assert retention.purge_expired(db, local_backend.store(), days=0) == 0
    assert counts(db, task_id)["tasks"] == 1


@pytest.fixture
def export(local_backend: Backend, tasklift_env: dict[str, str]) -> Iterator[Any]:
    """Runs ``tasklift export ARGS`` as a process; returns (parsed stdout lines, stderr)."""

    def run(*args: str) -> tuple[list[dict[str, Any]], str]:
        env = {**os.environ, **tasklift_env, **local_backend.env, "PYTHONPATH": f"{REPO}:{REPO / 'shared'}"}
        done = subprocess.run(
            [sys.executable, "-m", "tasklift.cli", "export", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return [json.loads(line) for line in done.stdout.splitlines()], done.stderr

    yield run


def test_export_writes_finished_tasks_before_a_date_as_json_lines_with_blobs_inlined(
    export: Any, client: httpx.Client, db: sa.Engine
) -> None:
    old = finished_task(client)
    finished_task(client)  # finished today: after the cut-off
    backdate(db, old, 40)
    before = (datetime.now(UTC) - timedelta(days=30)).date().isoformat()

    lines, stderr = export("--before", before, "--events")
    assert [line["id"] for line in lines] == [old] and "exported 1 tasks" in stderr
    assert lines[0]["input"] == {"data": LARGE, "result_bytes": 0} and lines[0]["status"] == "CANCELLED"
    assert [event["kind"] for event in lines[0]["events"]] == ["status", "status"]

    refs, _ = export("--before", before, "--no-blobs")
    assert claims.is_ref(refs[0]["input"]) and "events" not in refs[0]
