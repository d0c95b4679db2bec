"""The Python client's and the CLI's schedule commands against a real API, reaper and PostgreSQL."""

from __future__ import annotations

import json
import time

import pytest

from tasklift.client import TaskliftClient, TaskliftError
from tests.integration.test_client import _cli


def test_the_client_creates_lists_pauses_resumes_and_deletes(api: str, start_reaper, start_worker) -> None:
    start_worker(concurrency=1)
    start_reaper()
    with TaskliftClient(api) as tl:
        made = tl.create_schedule("tick", "test_noop", interval_seconds=1, ttl_seconds=30)
        sid = made["schedule_id"]
        assert tl.get_schedule(sid)["ttl_seconds"] == 30
        assert [s["schedule_id"] for s in tl.list_schedules()["items"]] == [sid]
        deadline = time.monotonic() + 20
        while not tl.schedule_runs(sid)["items"] and time.monotonic() < deadline:
            time.sleep(0.1)
        [first, *_] = tl.schedule_runs(sid)["items"]
        assert tl.wait(first["task_id"], timeout=20).status == "SUCCESS"
        assert tl.pause_schedule(sid)["paused"] is True
        assert tl.resume_schedule(sid)["next_fire_at"] is not None
        with pytest.raises(TaskliftError) as raised:
            tl.create_schedule("tick", "test_noop", cron="* * * * *")
        assert raised.value.status == 409
        tl.delete_schedule(sid)
        with pytest.raises(TaskliftError) as missing:
            tl.get_schedule(sid)
        assert missing.value.status == 404


def test_the_cli_creates_lists_and_pauses_a_schedule(api: str, tasklift_env) -> None:
    made = _cli(
        "schedules", "create", "nightly", "test_sleep", "seconds=0.1",
        "--cron", "30 2 * * *", "--timezone", "Europe/Berlin", "--priority", "3", "--url", api,
        env=tasklift_env,
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    schedule = json.loads(made.stdout)
    assert schedule["payload"] == {"seconds": 0.1} and schedule["cron"] == "30 2 * * *" and schedule["priority"] == 3
    listed = _cli("schedules", "list", "--url", api, env=tasklift_env)
    assert [s["name"] for s in json.loads(listed.stdout)["items"]] == ["nightly"]
    paused = _cli("schedules", "pause", schedule["schedule_id"], "--url", api, env=tasklift_env)
    assert json.loads(paused.stdout)["paused"] is True
    bad = _cli("schedules", "create", "x", "test_noop", "--cron", "99 * * * *", "--url", api, env=tasklift_env)
    assert bad.returncode == 2 and "422" in bad.stdout + bad.stderr and "cron" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr
    gone = _cli("schedules", "delete", schedule["schedule_id"], "--url", api, env=tasklift_env)
    assert (
        gone.returncode == 0
        and json.loads(_cli("schedules", "list", "--url", api, env=tasklift_env).stdout)["items"] == []
    )
