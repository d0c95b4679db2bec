"""The Python client and the CLI against a real API: error answers are problems, never tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from tasklift.client import TaskliftClient, TaskliftError
from tests.conftest import REPO


def test_a_stream_of_an_unknown_task_raises_its_404_problem(api: str) -> None:
    with TaskliftClient(api) as tl, pytest.raises(TaskliftError) as caught:
        next(iter(tl.stream(str(uuid.uuid4()))))
    assert caught.value.status == 404
    assert caught.value.problem["title"] and caught.value.problem["status"] == 404


def test_a_stream_of_a_malformed_id_raises_its_problem(api: str) -> None:
    with TaskliftClient(api) as tl, pytest.raises(TaskliftError) as caught:
        list(tl.stream("not-a-task-id"))
    assert 400 <= caught.value.status < 500


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tasklift.cli", *args],
        env={**os.environ, **env, "PYTHONPATH": f"{REPO}:{REPO / 'shared'}", "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_cli_follow_draws_the_task_to_success(api: str, tasklift_env, start_worker) -> None:
    start_worker(concurrency=1)
    done = _cli(
        "submit", "test_sleep", "-f", "seconds=0.5", "-f", "steps=5", "--follow", "--url", api, env=tasklift_env
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "SUCCESS" in done.stderr and '"steps": 5' in done.stdout  # the bar on stderr, the result on stdout


def test_cli_errors_are_one_problem_line_not_a_traceback(api: str, tasklift_env) -> None:
    done = _cli("status", str(uuid.uuid4()), "--url", api, env=tasklift_env)
    assert done.returncode == 2
    assert "404" in done.stdout + done.stderr and "Traceback" not in done.stdout + done.stderr


def test_the_client_submits_a_batch_and_reads_the_operation_monitor(api: str, start_worker) -> None:
    with TaskliftClient(api) as client:
        answer = client.submit_batch(
            [{"task": {"task_type": "test_noop"}, "idempotency_key": "c1"}, {"task": {"task_type": "nope"}}]
        )
        assert [item["status"] for item in answer["items"]] == [202, 422] and answer["accepted"] == 1
        task_id = answer["items"][0]["task"]["task_id"]
        assert client.operation(task_id)["status"] == "NotStarted"
        start_worker()
        assert client.wait(task_id, timeout=30).status == "SUCCESS"
        assert client.operation(task_id)["status"] == "Succeeded"
