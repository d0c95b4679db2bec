"""The README's first screen, run as written: the curl walk-through, your own task type, a stream,
the CLI's --follow and the Python client, against a real `tasklift dev`.

The commands are taken from README.md itself (its fenced blocks), so the test breaks when the
README drifts from what tasklift does. Only two things are substituted: the port (the test's own,
for localhost:8000) and the task id a reader would paste (`ID=6f1c…`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tasklift.embedded import free_port, wait_for_port
from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

README = (REPO / "README.md").read_text()
TASKLIFT = str(Path(sys.executable).parent / "tasklift")


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


def _blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section, re.S)


def _bash(script: str, port: int, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = script.replace("localhost:8000", f"localhost:{port}").replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=120, env=env
    )  # fmt: skip


def _wait_terminal(url: str, task_id: str, timeout: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        task = httpx.get(f"{url}/tasks/{task_id}", timeout=10).json()
        if task["status"] in ("SUCCESS", "FAILED", "CANCELLED"):
            return task  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, task
        time.sleep(0.3)


def test_the_readme_runs_as_written(tmp_path: Path, tasklift_env: dict[str, str]) -> None:
    # "Write your own task type": the module exactly as printed, saved where the README says.
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "tasks.py").write_text(_blocks(_section("Write your own task type"), "python")[0])
    port = free_port()
    env = {
        **os.environ,
        **tasklift_env,
        "TASKLIFT_TASK_MODULES": json.dumps(["myapp.tasks"]),
        "TASKLIFT_DATA_DIR": str(tmp_path / "data"),
        "TASKLIFT_API_URL": f"http://127.0.0.1:{port}",
        "PATH": f"{Path(TASKLIFT).parent}:{os.environ['PATH']}",
        "COLUMNS": "200",
    }
    with open(tmp_path / "dev.log", "wb") as log:
        dev = subprocess.Popen(
            [TASKLIFT, "dev", "--port", str(port)], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, 120, dev)
        # The curl walk-through, with the id a reader would paste from the first answer.
        walk = _blocks(_section("Walk-through with curl"), "sh")[0]
        first, rest = walk.split("\nID=", 1)
        submitted = _bash(first, port, env)
        assert submitted.returncode == 0 and "HTTP/1.1 202 Accepted" in submitted.stdout, submitted
        task_id = re.search(r'"task_id":\s*"([0-9a-f-]{36})"', submitted.stdout)
        assert task_id, submitted.stdout
        rest = f"ID={task_id[1]}" + rest.split("\n", 1)[1].join(["\n", ""])
        walked = _bash(rest, port, env)
        assert walked.returncode == 0, walked
        out = walked.stdout
        assert '"status": "PENDING"' in out or '"status":"PENDING"' in out or "RUNNING" in out, out
        assert re.search(r"HTTP/1.1 20[24]", out), "cancel answered 202 or 204"
        assert '"web_scrape"' in out and '"input_schema"' in out, "task types listed"
        assert _wait_terminal(url, task_id[1])["status"] == "CANCELLED"

        # Your own task type runs (its curl line), and a stream of it ends with its terminal event.
        own = _blocks(_section("Write your own task type"), "sh")[0]
        curl = own[own.index("curl") :]
        answer = _bash(curl, port, env)
        assert answer.returncode == 0, answer
        report = json.loads(answer.stdout)
        assert report["task_type"] == "monthly_report" and report["status"] == "PENDING"
        follow = _blocks(_section("Follow a task live"), "sh")[0].splitlines()
        streamed = _bash(f"ID={report['task_id']}\n{follow[0]}", port, env)
        assert streamed.returncode == 0 and "event: status" in streamed.stdout, streamed
        assert '"status":"SUCCESS"' in streamed.stdout, streamed.stdout  # the stream ends with the task
        assert _wait_terminal(url, report["task_id"])["result"] == {"url": "…"}

        # The CLI's --follow prints a bar and ends with the task.
        cli = _bash(follow[1], port, env)
        assert cli.returncode == 0, cli
        assert "SUCCESS" in cli.stdout + cli.stderr, cli

        # The Python client's loop ends once the task does (web_scrape fails here: no DNS).
        snippet = _blocks(_section("Follow a task live"), "python")[0].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        client = subprocess.run(
            [sys.executable, "-c", snippet], capture_output=True, text=True, timeout=120, env=env
        )  # fmt: skip
        assert client.returncode == 0, client
        kinds = [line.split(" ", 1)[0] for line in client.stdout.splitlines()]
        assert kinds and kinds[-1] == "status" and re.search(r"'(SUCCESS|FAILED)'", client.stdout.splitlines()[-1])
    finally:
        dev.send_signal(signal.SIGINT)
        assert dev.wait(90) == 0, (tmp_path / "dev.log").read_text()[-3000:]
