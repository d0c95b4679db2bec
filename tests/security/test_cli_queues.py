"""``tasklift queues pause|resume`` with an admin API key, against the real API with authentication on."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx

from tests.integration.test_client import _cli


def test_an_admin_pauses_and_resumes_a_queue_from_the_cli(
    secure_api: str, secure_env: dict[str, str], make_key: Callable[..., str]
) -> None:
    key = make_key("ops", admin=True)
    env = {**secure_env, "TASKLIFT_API_KEY": key}
    types = httpx.get(f"{secure_api}/task-types", headers={"Authorization": f"Bearer {key}"}).json()
    queue = next(t["queue"] for t in types if t["name"] == "test_noop")
    paused = _cli("queues", "pause", queue, "--url", secure_api, env=env)
    assert paused.returncode == 0, paused.stdout + paused.stderr
    assert json.loads(paused.stdout) == {"queue": queue, "paused": True, "pending": 0}
    resumed = _cli("queues", "resume", queue, "--url", secure_api, env=env)
    assert json.loads(resumed.stdout) == {"queue": queue, "paused": False, "pending": 0}
    other = {**secure_env, "TASKLIFT_API_KEY": make_key("alice")}
    refused = _cli("queues", "pause", queue, "--url", secure_api, env=other)
    assert refused.returncode == 2 and "403" in refused.stdout + refused.stderr
