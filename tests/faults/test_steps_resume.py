"""A worker SIGKILLed in the middle of step 3 of 5: the task resumes on another attempt from step 3,
steps 1 and 2 are not run again (counted by their side effect), and it ends SUCCESS within the
lease plus the reaper interval."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tasklift.settings import get_settings
from tests.conftest import wait_for_status
from tests.faults.conftest import pool_children

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
MODULES = json.dumps(["tests.support.task_types", "tests.support.step_types"])


@pytest.fixture(autouse=True)
def step_types(tasklift_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    tasklift_env["TASKLIFT_TASK_MODULES"] = MODULES
    monkeypatch.setenv("TASKLIFT_TASK_MODULES", MODULES)
    get_settings.cache_clear()


def test_sigkill_in_step_3_of_5_resumes_without_rerunning_steps_1_and_2(
    client: httpx.Client,
    db: sa.Engine,
    start_worker: Any,
    start_reaper: Any,
    tmp_path: Path,
    tasklift_env: dict[str, str],
) -> None:
    worker = start_worker(concurrency=1)
    start_reaper()
    path = tmp_path / "effects"
    marker = Path(f"{path}.in-slow-step")
    reply = client.post(
        "/tasks", json={"task_type": "test_steps", "path": str(path), "slow_step": 3, "slow_seconds": 60}
    )
    task_id = reply.json()["task_id"]
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    victim = int(marker.read_text())
    assert victim in {p.pid for p in pool_children(worker.pid)}
    assert Counter(path.read_text().split()) == {"step1": 1, "step2": 1, "step3": 1}
    os.kill(victim, signal.SIGKILL)  # mid step 3: no outcome, no ack, the lease just stops
    killed_at = time.monotonic()
    done = wait_for_status(client, task_id, "SUCCESS", timeout=60)
    resumed_in = time.monotonic() - killed_at
    assert done["result"]["ns"] == [1, 2, 3, 4, 5]
    assert done["attempts"] == 2
    assert Counter(path.read_text().split()) == {"step1": 1, "step2": 1, "step3": 2, "step4": 1, "step5": 1}
    with db.connect() as conn:
        attempts = conn.execute(
            sa.text("SELECT attempt FROM task_steps WHERE task_id = :t ORDER BY position"), {"t": task_id}
        ).scalars()
        assert list(attempts) == [1, 1, 2, 2, 2]
    lease = float(tasklift_env["TASKLIFT_LEASE_SECONDS"])
    reaper = float(tasklift_env["TASKLIFT_REAPER_INTERVAL_SECONDS"])
    print(f"resumed and finished {resumed_in:.2f} s after the kill (lease {lease} s + reaper {reaper} s)")
    assert resumed_in < lease + reaper + 5
