"""A collector that is down must never break or slow a request, a task, or a shutdown."""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tasklift.embedded import free_port
from tests.conftest import Proc, wait_for_status

REQUESTS = 40


@pytest.fixture
def silent_collector() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung collector): exports wait for their timeout."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)  # the kernel completes handshakes; nobody ever reads or replies
        yield int(sock.getsockname()[1])


def start_api(spawn: Callable[..., Proc], env: dict[str, str]) -> tuple[Proc, str]:
    port = free_port()
    proc = spawn("api", "api", "--port", str(port), env={"TASKLIFT_ANONYMOUS": "true", **env})
    proc.wait_for_output("Uvicorn running", timeout=30)
    return proc, f"http://127.0.0.1:{port}"


def submit_latencies(urls: list[str], count: int) -> list[list[float]]:
    """Submit ``count`` tasks to each URL, interleaved (so both see the same machine load); seconds each."""
    timings: list[list[float]] = [[] for _ in urls]
    clients = [httpx.Client(base_url=url, timeout=30) for url in urls]
    try:
        for _ in range(5):  # warm up: connections, the first engine checkout, lazy imports
            for http in clients:
                assert http.post("/tasks", json={"task_type": "test_noop"}).status_code == 202
        for _ in range(count):
            for http, times in zip(clients, timings, strict=True):
                started = time.perf_counter()
                resp = http.post("/tasks", json={"task_type": "test_noop"})
                times.append(time.perf_counter() - started)
                assert resp.status_code == 202, resp.text
    finally:
        for http in clients:
            http.close()
    return timings


@pytest.mark.parametrize("collector", ["refused", "silent"])
def test_a_dead_collector_neither_fails_nor_slows_requests_tasks_or_shutdown(
    spawn: Callable[..., Proc],
    start_worker: Callable[..., Proc],
    closed_port: int,
    silent_collector: int,
    collector: str,
) -> None:
    """Exports go to a closed port (refused) or a port that never answers: the API answers as fast as
    an API that exports nothing, the worker still runs tasks, and the API still stops promptly."""
    port = closed_port if collector == "refused" else silent_collector
    dead = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # export all the time while we measure
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
    }
    baseline, baseline_url = start_api(spawn, {})
    exporting, exporting_url = start_api(spawn, dead)

    quiet, noisy = submit_latencies([baseline_url, exporting_url], REQUESTS)

    median_quiet, median_noisy = statistics.median(quiet), statistics.median(noisy)
    print(
        f"\nsubmit latency, collector {collector}: median {median_noisy * 1000:.1f} ms vs {median_quiet * 1000:.1f} ms"
    )
    assert median_noisy < median_quiet * 1.5 + 0.010, (median_noisy, median_quiet)
    assert max(noisy) < 1.0, "a request waited for an export"

    start_worker(concurrency=1, env=dead)
    with httpx.Client(base_url=exporting_url, timeout=30) as http:
        task = http.post("/tasks", json={"task_type": "test_noop"}).json()
        assert len(task["trace_id"]) == 32  # ids are made and stored whether or not they can be sent
        wait_for_status(http, task["task_id"], "SUCCESS", timeout=60)

    started = time.monotonic()
    exporting.stop(timeout=30)
    assert time.monotonic() - started < 10, "shutdown hung on the dead collector"
    assert "Finished server process" in exporting.output()  # a graceful stop, not the kill after the timeout
