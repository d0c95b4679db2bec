"""Durable steps (``ctx.step``) with real workers and PostgreSQL: a retry after FAILED replays the
finished steps, a changed task version is reported instead of mixed, a fenced-off attempt records
nothing, and names follow the documented rules. (The SIGKILL-mid-step test is in tests/faults.)"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tasklift.events.bus import EventAnnouncer
from tasklift.settings import get_settings, redis_url
from tasklift.store import leases
from tasklift.store.db import make_engine
from tasklift.tasks.context import LeaseLost, TaskContext
from tasklift.tasks.steps import StepMismatch, StepVersionChanged
from tests.conftest import wait_for_status
from tests.support.store import insert_tasks, new_task

MODULES = json.dumps(["tests.support.task_types", "tests.support.step_types"])


@pytest.fixture(autouse=True)
def step_types(tasklift_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """This process (the API) and the workers it starts know the step task types; blobs in tmp_path."""
    extra = {"TASKLIFT_TASK_MODULES": MODULES, "TASKLIFT_BLOB_LOCAL_DIR": str(tmp_path / "blobs")}
    tasklift_env.update(extra)
    for key, value in extra.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()


def runs(path: Path) -> Counter[str]:
    """How often each step really ran (each run appends its name to the file)."""
    return Counter(path.read_text().split()) if path.exists() else Counter()


def submit(client: httpx.Client, **fields: Any) -> str:
    reply = client.post("/tasks", json={"task_type": "test_steps", **fields})
    assert reply.status_code == 202, reply.text
    return str(reply.json()["task_id"])


def steps_of(db: sa.Engine, task_id: str) -> list[dict[str, Any]]:
    with db.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT name, position, version, attempt, result FROM task_steps WHERE task_id = :t ORDER BY position"
            ),
            {"t": task_id},
        ).mappings()
        return [dict(row) for row in rows]


def test_a_retry_after_failed_replays_the_finished_steps_and_continues(
    client: httpx.Client, db: sa.Engine, start_worker: Any, start_reaper: Any, tmp_path: Path
) -> None:
    start_worker(concurrency=1)
    start_reaper()
    path = tmp_path / "effects"
    Path(f"{path}.fail").touch()
    task_id = submit(client, path=str(path), steps=5, fail_after=2, big=True)
    failed = wait_for_status(client, task_id, "FAILED")
    assert failed["error"]["type"] == "ValueError"
    assert runs(path) == {"step1": 1, "step2": 1}
    recorded = steps_of(db, task_id)
    assert [(s["name"], s["position"], s["attempt"]) for s in recorded] == [("work", 1, 1), ("work#2", 2, 1)]
    assert all("$blob" in s["result"] for s in recorded), "a large step result goes to blob storage"

    Path(f"{path}.fail").unlink()
    assert client.post(f"/tasks/{task_id}/retry").status_code == 202
    done = wait_for_status(client, task_id, "SUCCESS")
    assert runs(path) == {f"step{n}": 1 for n in range(1, 6)}, "steps 1-2 were replayed, not run again"
    # A replayed result reads exactly like a fresh one: the JSON value (tuples as lists, blobs checked out).
    assert done["result"] == {"ns": [1, 2, 3, 4, 5], "tuples": [[n, n] for n in range(1, 6)], "pads": [300_000] * 5}
    assert [s["attempt"] for s in steps_of(db, task_id)] == [1, 1, 2, 2, 2]
    with db.connect() as conn:
        events = conn.execute(
            sa.text("SELECT data FROM task_events WHERE task_id = :t AND kind = 'step' ORDER BY seq"), {"t": task_id}
        ).scalars()
        assert [(e["step"], e["position"], e["attempt"]) for e in events] == [
            ("work", 1, 1), ("work#2", 2, 1), ("work#3", 3, 2), ("work#4", 4, 2), ("work#5", 5, 2),
        ]  # fmt: skip


def test_a_changed_task_version_is_reported_at_the_first_step_not_mixed(
    client: httpx.Client, start_worker: Any, start_reaper: Any, tmp_path: Path
) -> None:
    first = start_worker(concurrency=1)
    start_reaper()
    path = tmp_path / "effects"
    Path(f"{path}.fail").touch()
    task_id = submit(client, path=str(path), steps=3, fail_after=2)
    wait_for_status(client, task_id, "FAILED")
    first.stop()
    start_worker(concurrency=1, env={"TEST_STEP_VERSION": "2"})  # the code changed under the task
    Path(f"{path}.fail").unlink()
    assert client.post(f"/tasks/{task_id}/retry").status_code == 202
    failed = wait_for_status(client, task_id, "FAILED")
    assert failed["error"]["type"] == "StepVersionChanged"
    assert "version '2'" in failed["error"]["message"] and "'1'" in failed["error"]["message"]
    assert runs(path) == {"step1": 1, "step2": 1}, "no step of version 2 ran beside the recorded ones"


# --- in process: fencing and naming ---------------------------------------------------------------


@pytest.fixture
def writer(tasklift_env: dict[str, str]) -> Any:
    made = make_engine(tasklift_env["TASKLIFT_DATABASE_URL"], 5, autocommit=True)
    yield made
    made.dispose()


def running(writer: sa.Engine) -> uuid.UUID:
    [task_id] = insert_tasks(new_task("test_noop", "cpu"))
    with writer.connect() as conn:
        assert leases.take_lease(conn, task_id, "w1", 30) is not None
    return task_id


def context(task_id: uuid.UUID, db: sa.Engine, writer: sa.Engine, attempt: int = 1, version: str = "1") -> TaskContext:
    return TaskContext(
        task_id=task_id, attempt=attempt, task_type="test_noop", engine=db, writer=writer,
        announcer=EventAnnouncer(redis_url()), lease_seconds=30, progress_interval=0.1, version=version,
    )  # fmt: skip


def take_over(writer: sa.Engine, task_id: uuid.UUID, attempt: int) -> None:
    """What the reaper and a second worker do to an expired lease: re-dispatch, then a new attempt."""
    with writer.begin() as conn:
        assert leases.recover_expired(conn, task_id, attempt, max_redispatches=5) is not None
    with writer.connect() as conn:
        assert leases.take_lease(conn, task_id, "w2", 30) is not None


def test_an_attempt_that_lost_its_lease_records_no_step(db: sa.Engine, writer: sa.Engine) -> None:
    task_id = running(writer)
    stale = context(task_id, db, writer, attempt=1)
    assert stale.step("a", lambda: 1) == 1
    take_over(writer, task_id, 1)
    calls = []
    with pytest.raises(LeaseLost):
        stale.step("b", lambda: calls.append(1) or 2)
    assert calls == [1], "the step ran (its effect cannot be undone) but its result was refused"
    assert [s["name"] for s in steps_of(db, str(task_id))] == ["a"]
    current = context(task_id, db, writer, attempt=2)
    assert current.step("a", lambda: pytest.fail("replayed, not run")) == 1
    assert current.step("b", lambda: 3) == 3


def test_step_names_repeat_as_name_n_and_must_be_deterministic(db: sa.Engine, writer: sa.Engine) -> None:
    task_id = running(writer)
    ctx = context(task_id, db, writer)
    assert [ctx.step("fetch", lambda n=n: n) for n in range(3)] == [0, 1, 2]
    ctx.step("parse", lambda: "p")
    assert [s["name"] for s in steps_of(db, str(task_id))] == ["fetch", "fetch#2", "fetch#3", "parse"]
    rerun = context(task_id, db, writer)
    assert rerun.step("fetch", lambda: pytest.fail("replayed")) == 0
    with pytest.raises(StepMismatch, match="'fetch#2'.*'other'"):
        rerun.step("other", lambda: "x")  # position 2 was recorded as fetch#2
    for bad in ("", "a#b"):
        with pytest.raises(ValueError, match="step name"):
            context(task_id, db, writer).step(bad, lambda: 1)


def test_a_step_that_raises_records_nothing_and_a_non_json_result_is_refused(db: sa.Engine, writer: sa.Engine) -> None:
    task_id = running(writer)
    ctx = context(task_id, db, writer)
    with pytest.raises(ZeroDivisionError):
        ctx.step("divide", lambda: 1 / 0)
    with pytest.raises(TypeError, match="JSON"):
        ctx.step("object", object)
    assert steps_of(db, str(task_id)) == []
    assert context(task_id, db, writer).step("divide", lambda: 0.5) == 0.5


def test_a_version_mismatch_is_detected_in_process_too(db: sa.Engine, writer: sa.Engine) -> None:
    task_id = running(writer)
    context(task_id, db, writer, version="1").step("a", lambda: 1)
    with pytest.raises(StepVersionChanged, match="version '2'"):
        context(task_id, db, writer, version="2").step("a", lambda: pytest.fail("must not run"))


def test_migration_0006_steps_downgrades_and_upgrades_again(db: sa.Engine) -> None:
    from alembic import command

    from tasklift.store.migrate import alembic_config, upgrade

    command.downgrade(alembic_config(), "0005")
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('task_steps')")).scalar() is None
        assert conn.execute(sa.text("SELECT to_regclass('ix_task_events_output')")).scalar() is None
    upgrade()
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('task_steps')")).scalar() == "task_steps"
        assert conn.execute(sa.text("SELECT to_regclass('ix_task_events_output')")).scalar() == "ix_task_events_output"


def test_steps_do_not_nest(db: sa.Engine, writer: sa.Engine) -> None:
    task_id = running(writer)
    ctx = context(task_id, db, writer)
    with pytest.raises(RuntimeError, match="do not nest"):
        ctx.step("outer", lambda: ctx.step("inner", lambda: 1))
    assert steps_of(db, str(task_id)) == []
    assert ctx.step("after", lambda: 2) == 2  # the context is usable again
