"""The Azure emulator honours FUNCTIONS_WORKER_PROCESS_COUNT: that many worker processes, one port."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import httpx
import psutil

from tests.conftest import wait_for_status
from tests.hosts.conftest import Host


def _workers(host: Host) -> list[psutil.Process]:
    children = psutil.Process(host.proc.popen.pid).children(recursive=True)
    return [p for p in children if "spawn_main" in " ".join(p.cmdline())]  # not the resource tracker


def test_azure_runs_the_configured_number_of_worker_processes(start_host: Callable[..., Host], start_worker) -> None:
    host = start_host("azure", env={"FUNCTIONS_WORKER_PROCESS_COUNT": "3"})
    deadline = time.monotonic() + 60
    while len(_workers(host)) < 3:
        assert time.monotonic() < deadline, [p.cmdline() for p in _workers(host)]
        time.sleep(0.2)
    assert len(_workers(host)) == 3
    start_worker()
    ids = []
    for _ in range(12):  # a new connection each time: the kernel spreads them over the workers
        resp = httpx.post(f"{host.url}/tasks", json={"task_type": "test_noop"}, timeout=30)
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["task_id"])
    with httpx.Client(base_url=host.url, timeout=30) as http:
        for task_id in ids:
            assert wait_for_status(http, task_id, "SUCCESS")["status"] == "SUCCESS"
        assert http.get("/docs").status_code == 200


def test_a_bad_worker_process_count_is_one_line() -> None:
    env = {"FUNCTIONS_WORKER_PROCESS_COUNT": "11", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "tasklift.cli", "emulate", "azure", "--port", "1"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode != 0
    assert "FUNCTIONS_WORKER_PROCESS_COUNT must be 1-10, not '11'" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr + done.stdout
