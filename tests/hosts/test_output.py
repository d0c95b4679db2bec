"""Output chunks (``ctx.emit``) on every host: the ASGI server, the Azure emulator (live SSE) and the
AWS emulator (bounded windows, Mangum buffers) deliver the same chunks in the same order on the
stream, and GET /tasks/{id}/output reads them back page by page."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tasklift.settings import get_settings
from tests.conftest import wait_for_status
from tests.hosts.conftest import HOSTS, Host
from tests.hosts.eventsource import EventSource
from tests.integration.test_output import chunks_of

MODULES = json.dumps(["tests.support.task_types", "tests.support.step_types"])


@pytest.fixture(autouse=True)
def step_types(tasklift_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    tasklift_env["TASKLIFT_TASK_MODULES"] = MODULES
    monkeypatch.setenv("TASKLIFT_TASK_MODULES", MODULES)
    get_settings.cache_clear()


def test_every_host_delivers_the_same_output_chunks_on_the_stream_and_at_get_output(
    start_host: Callable[..., Host], start_worker: Any
) -> None:
    hosts = [start_host(kind) for kind in HOSTS]
    start_worker(concurrency=1)
    with httpx.Client(base_url=hosts[0].url, timeout=30) as http:
        task_id = http.post("/tasks", json={"task_type": "test_emit", "count": 1500, "rate": 1000}).json()["task_id"]
        expected = [(i + 1, f"tok{i} ") for i in range(1500)]

        def follow(host: Host) -> list[Any]:
            return EventSource(f"{host.url}/tasks/{task_id}/stream", last_event_id="0", deadline=60).run()

        with ThreadPoolExecutor(len(hosts)) as pool:
            streams = list(pool.map(follow, hosts))
        wait_for_status(http, task_id, "SUCCESS")
    for host, events in zip(hosts, streams, strict=True):
        assert chunks_of(events) == expected, host
    for host in hosts:
        with httpx.Client(base_url=host.url, timeout=30) as http:
            read: list[tuple[int, Any]] = []
            after = 0
            while True:
                page = http.get(f"/tasks/{task_id}/output", params={"after": after, "limit": 1000}).json()
                read += [(c["index"], c["data"]) for c in page["chunks"]]
                after = page["next_after"]
                if page["complete"]:
                    break
            assert read == expected, host
