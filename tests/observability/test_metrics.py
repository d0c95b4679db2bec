"""Prometheus text: submits and open streams from the API's GET /metrics, the backlog from the reaper."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tasklift.embedded import free_port
from tasklift.telemetry import gauges

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(http: httpx.Client) -> Samples:
    resp = http.get("/metrics")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain; version=")  # the Prometheus text format
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(resp.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_the_api_shows_submits_and_open_streams_and_no_backlog(client: httpx.Client) -> None:
    """No worker runs: three submitted tasks while a client follows one of them; the backlog is the reaper's."""
    before = scrape(client)
    ids = [client.post("/tasks", json={"task_type": "test_noop"}).json()["task_id"] for _ in range(3)]

    with client.stream("GET", f"/tasks/{ids[0]}/stream") as stream:
        lines = stream.iter_lines()
        while next(lines) != "event: status":  # the snapshot is read after the hub subscription
            pass
        samples = scrape(client)
    after_stream = scrape(client)

    submitted = "tasklift_tasks_submitted_total"
    assert value(samples, submitted, task_type="test_noop") - value(before, submitted, task_type="test_noop") == 3
    assert value(samples, "tasklift_streams_open") == 1
    assert value(after_stream, "tasklift_streams_open") == 0
    assert not [name for name, _ in samples if name.startswith(("tasklift_queue_", "tasklift_tasks_running"))]
    assert any(name == "target_info" and ("service_name", "tasklift-api") in labels for name, labels in samples)


def test_the_reaper_reports_the_waiting_backlog(client: httpx.Client, start_reaper: Callable[..., Any]) -> None:
    """Three tasks wait in the cpu queue (no worker): the reaper's Prometheus endpoint shows depth and age."""
    for _ in range(3):
        assert client.post("/tasks", json={"task_type": "test_noop"}).status_code == 202
    time.sleep(0.05)  # let the oldest task be measurably old
    port = free_port()
    env = {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": str(port)}
    start_reaper(env={**env, "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1"})
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as reaper:
        samples = scrape(reaper)
    assert value(samples, "tasklift_queue_depth", queue="tasklift.cpu") == 3
    assert value(samples, "tasklift_queue_depth", queue="tasklift.io") == 0
    assert value(samples, "tasklift_queue_oldest_age_seconds", queue="tasklift.cpu") > 0
    assert value(samples, "tasklift_tasks_running", lease="live") == 0
    assert ("tasklift_tasks_running", frozenset({("lease", "expired")})) in samples
    assert any(name == "target_info" and ("service_name", "tasklift-reaper") in labels for name, labels in samples)


def test_gauges_that_read_redis_and_postgresql_reuse_a_reading_between_scrapes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scrape every second must not become a query every second: readings live for the TTL."""
    loads: list[int] = []

    def load() -> dict[tuple[tuple[str, str], ...], float]:
        loads.append(1)
        return {(("queue", "q"),): float(len(loads))}

    reading = gauges.Cached(load)
    monkeypatch.setattr(gauges, "GAUGE_TTL_SECONDS", 60)
    assert [o.value for o in reading.observations()] == [1.0]
    assert [o.value for o in reading.observations()] == [1.0] and len(loads) == 1
    monkeypatch.setattr(gauges, "GAUGE_TTL_SECONDS", 0)
    assert [o.value for o in reading.observations()] == [2.0]


def test_a_gauge_whose_source_is_down_shows_no_sample_instead_of_failing_the_scrape() -> None:
    def down() -> dict[tuple[tuple[str, str], ...], float]:
        raise ConnectionError("redis is down")

    assert gauges.Cached(down).observations() == []
