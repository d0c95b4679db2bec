"""``tasklift dev`` sends webhooks (docs/webhooks.md): its reaper runs the deliverer, signed with the
secret it keeps in its data folder, to a receiver on this machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tasklift.embedded import free_port
from tests.conftest import REPO, wait_for_status
from tests.support.webhook_receiver import Receiver, Server

pytestmark = pytest.mark.timeout(180)


def test_dev_delivers_a_signed_webhook_to_a_local_receiver(tmp_path: Path, tasklift_env: dict[str, str]) -> None:
    api_port, hook_port = free_port(), free_port()
    env = {**os.environ, **tasklift_env, "TASKLIFT_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "300"}
    env |= {"PYTHONPATH": f"{REPO}:{REPO / 'shared'}", "TASKLIFT_WEBHOOK_ALLOWED_PORTS": f"[{hook_port}]"}
    log = tmp_path / "dev.log"
    with open(log, "wb") as out:
        dev = subprocess.Popen(
            [sys.executable, "-m", "tasklift.cli", "dev", "--port", str(api_port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp_path,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while "reaper started" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline and dev.poll() is None, log.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        secret = (tmp_path / "data" / "webhook-secret").read_text().strip()
        assert secret.startswith("whsec_") and (tmp_path / "data" / "webhook-secret").stat().st_mode & 0o077 == 0
        receiver = Receiver(secret)
        with Server(receiver, hook_port), httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as api:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if api.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
                time.sleep(0.3)
            body = {"task_type": "test_noop", "callback_url": f"http://127.0.0.1:{hook_port}/hook"}
            task_id = api.post("/tasks", json=body).json()["task_id"]
            wait_for_status(api, task_id, "SUCCESS", timeout=60)
            deadline = time.monotonic() + 30
            while not receiver.events:
                assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
                time.sleep(0.2)
        [event] = receiver.events.values()
        assert event["type"] == "task.succeeded" and event["data"]["task_id"] == task_id
        assert receiver.refused == []
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(60)
