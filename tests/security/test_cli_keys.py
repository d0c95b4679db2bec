"""`tasklift keys` and `tasklift dev --auth`: keys made on the command line work against the same database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tasklift.embedded import free_port
from tests.conftest import REPO, Proc


def tasklift(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the ``tasklift`` CLI to completion; stdout and stderr captured."""
    full_env = {**os.environ, **env, "PYTHONPATH": f"{REPO}:{REPO / 'shared'}"}
    return subprocess.run(
        [sys.executable, "-m", "tasklift.cli", *args], env=full_env, capture_output=True, text=True, timeout=timeout
    )


def test_keys_create_prints_the_key_on_its_last_line_and_it_authenticates(
    secure_env: dict[str, str], secure_api: str
) -> None:
    done = tasklift("keys", "create", "--name", "deploy-bot", env=secure_env)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip().splitlines()[-1]
    assert key.startswith("tl_") and key not in done.stderr
    assert httpx.get(f"{secure_api}/tasks", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_keys_revoke_refuses_the_key_and_list_never_shows_it(secure_env: dict[str, str], secure_api: str) -> None:
    key = tasklift("keys", "create", "--name", "old", "--admin", env=secure_env).stdout.strip().splitlines()[-1]
    assert tasklift("keys", "revoke", "old", env=secure_env).returncode == 0
    assert httpx.get(f"{secure_api}/tasks", headers={"X-API-Key": key}).status_code == 401
    listing = tasklift("keys", "list", env={**secure_env, "COLUMNS": "200"})
    assert listing.returncode == 0 and "old" in listing.stdout and "key:old" in listing.stdout
    assert key not in listing.stdout and key[:10] in listing.stdout  # the prefix, to recognise it
    assert tasklift("keys", "revoke", "nobody", env=secure_env).returncode == 1
    assert tasklift("keys", "create", "--name", "old", env=secure_env).returncode == 1  # names are never reused


@pytest.mark.parametrize("name", ["", "has space", "x" * 101, "-leading-dash", "semi;colon"])
def test_keys_create_refuses_odd_names(secure_env: dict[str, str], name: str) -> None:
    assert tasklift("keys", "create", "--name", name, env=secure_env).returncode != 0


def test_keys_use_the_database_of_a_running_dev_stack_through_its_state_file(
    secure_env: dict[str, str], secure_api: str, tmp_path: Path
) -> None:
    state = {"pid": os.getpid(), "database_url": secure_env["TASKLIFT_DATABASE_URL"]}  # this process: alive
    (tmp_path / "dev.json").write_text(json.dumps(state))
    env = {k: v for k, v in secure_env.items() if k != "TASKLIFT_DATABASE_URL"} | {"TASKLIFT_DATA_DIR": str(tmp_path)}
    done = tasklift("keys", "create", "--name", "via-dev", env={**env, "TASKLIFT_DATABASE_URL": ""})
    assert done.returncode == 0, done.stderr
    assert "running `tasklift dev`" in done.stderr
    key = done.stdout.strip().splitlines()[-1]
    assert httpx.get(f"{secure_api}/tasks", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_keys_start_the_embedded_postgres_when_no_dev_stack_runs(tmp_path: Path) -> None:
    env = {"TASKLIFT_DATABASE_URL": "", "TASKLIFT_DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    (tmp_path / "dev.json").write_text(json.dumps({"pid": 2**22 + 1, "database_url": "postgresql://gone/x"}))  # stale
    assert tasklift("keys", "create", "--name", "laptop", env=env).returncode == 0
    listing = tasklift("keys", "list", env=env)
    assert "laptop" in listing.stdout and "starting the embedded PostgreSQL" in listing.stderr
    assert (tmp_path / "postgres" / "PG_VERSION").exists()


def test_dev_auth_refuses_anonymous_callers_and_accepts_a_key_made_while_it_runs(
    spawn: Callable[..., Proc], tmp_path: Path, tasklift_env: dict[str, str]
) -> None:
    port = free_port()
    data = tmp_path / "data"
    stack_env = {
        "TASKLIFT_DATABASE_URL": "",  # embedded engines, as on a laptop
        "TASKLIFT_REDIS_URL": "",
        "TASKLIFT_DATA_DIR": str(data),
        "TASKLIFT_ANONYMOUS": "true",  # --auth wins over it
    }
    dev = spawn("dev", "dev", "--auth", "--port", str(port), "--concurrency", "1", env=stack_env)
    dev.wait_for_output("authentication is ON", timeout=90)
    api = f"http://127.0.0.1:{port}"
    dev.wait_for_output("Press Ctrl-C", timeout=30)
    state = json.loads((data / "dev.json").read_text())
    assert state["pid"] == dev.pid and (data / "dev.json").stat().st_mode & 0o077 == 0
    assert (data / "stream-signing-key").stat().st_mode & 0o077 == 0
    for _ in range(100):
        try:
            if httpx.get(f"{api}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    assert httpx.get(f"{api}/tasks").status_code == 401
    key = tasklift("keys", "create", "--name", "me", env=stack_env).stdout.strip().splitlines()[-1]
    task = httpx.post(f"{api}/tasks", json={"duration": 1}, headers={"Authorization": f"Bearer {key}"})
    assert task.status_code == 202 and "access_token=" in task.json()["links"]["stream"]
    dev.stop()
    assert not (data / "dev.json").exists()
