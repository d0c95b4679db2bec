"""`tasklift dev` as a newcomer meets it: restarts what dies, refuses a second copy, names a bad module."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tasklift.embedded import free_port, wait_for_port
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(180)


def _dev(
    tmp_path: Path, env: dict[str, str], *args: str, log: str = "dev.log", port: int = 0
) -> subprocess.Popen[bytes]:
    full = {**os.environ, **env, "TASKLIFT_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "300"}
    full["PYTHONPATH"] = f"{REPO}:{REPO / 'shared'}"
    with open(tmp_path / log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tasklift.cli", "dev", "--port", str(port or free_port()), *args],
            env=full, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp_path,
        )  # fmt: skip


def _wait_for(path: Path, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"no {text!r} in:\n{path.read_text(errors='replace')[-3000:]}"
        time.sleep(0.2)


def _reaper(dev: subprocess.Popen[bytes]) -> psutil.Process:
    return next(p for p in psutil.Process(dev.pid).children() if "reaper" in p.cmdline())


def test_a_child_that_dies_is_restarted_and_a_second_dev_is_refused(tmp_path: Path, tasklift_env) -> None:
    dev = _dev(tmp_path, tasklift_env)
    try:
        _wait_for(tmp_path / "dev.log", "Press Ctrl-C to stop everything")
        _wait_for(tmp_path / "dev.log", "reaper started")
        first = _reaper(dev)
        first.kill()
        _wait_for(tmp_path / "dev.log", "reaper exited with -9; restarting it in 1 s")
        _wait_for(tmp_path / "dev.log", "starting reaper again")
        assert _reaper(dev).pid != first.pid and dev.poll() is None, "the stack stayed up"

        second = _dev(tmp_path, tasklift_env, log="second.log")
        assert second.wait(60) == 1
        text = (tmp_path / "second.log").read_text()
        assert f"another `tasklift dev` (pid {dev.pid}) is already running" in text and "Traceback" not in text
    finally:
        dev.send_signal(signal.SIGINT)
        assert dev.wait(60) == 0
    assert "stopped; data kept in" in (tmp_path / "dev.log").read_text()


def test_a_task_module_that_does_not_import_is_named_in_one_line(tmp_path: Path, tasklift_env) -> None:
    env = {**tasklift_env, "TASKLIFT_TASK_MODULES": json.dumps(["myapp.tasks"])}
    dev = _dev(tmp_path, env)
    assert dev.wait(60) == 1
    text = (tmp_path / "dev.log").read_text()
    assert "cannot be imported" in text and "myapp" in text and "Traceback" not in text


def test_task_modules_of_the_folder_dev_starts_in_are_importable(tmp_path: Path, tasklift_env) -> None:
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "tasks.py").write_text(
        "from tasklift import task\nfrom tasklift.tasks.registry import TaskInput\n\n"
        "@task('my_report', input=TaskInput)\ndef my_report(ctx, inp):\n    return {'ok': True}\n"
    )
    env = {**tasklift_env, "TASKLIFT_TASK_MODULES": json.dumps(["myapp.tasks"])}
    dev = _dev(tmp_path, env)
    try:
        _wait_for(tmp_path / "dev.log", "Press Ctrl-C to stop everything")
        assert dev.poll() is None
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(60)


def test_under_dev_on_aws_a_stream_of_a_long_task_answers_in_windows_not_500(tmp_path: Path, tasklift_env) -> None:
    # The template's TASKLIFT_SSE_WINDOW_SECONDS (20 s) must reach the stream function under `dev`
    # too: a live stream through Mangum is buffered until API Gateway's 30 s cut, which answers 500.
    port = free_port()
    dev = _dev(tmp_path, tasklift_env, "--host", "aws", port=port)
    try:
        _wait_for(tmp_path / "dev.log", "Press Ctrl-C to stop everything", timeout=120)
        wait_for_port(port, 60)
        url = f"http://127.0.0.1:{port}"
        task = httpx.post(f"{url}/tasks", json={"task_type": "test_sleep", "seconds": 60, "steps": 60}, timeout=30)
        assert task.status_code == 202, task.text
        started = time.monotonic()
        stream = httpx.get(f"{url}/tasks/{task.json()['task_id']}/stream", timeout=60)
        took = time.monotonic() - started
        assert stream.status_code == 200, stream.text
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert "retry:" in stream.text and "event: status" in stream.text
        assert took < 29, f"the window ended after {took:.1f} s"
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(90)
