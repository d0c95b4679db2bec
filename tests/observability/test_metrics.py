"""GET /metrics on the API: Prometheus text with submits, the backlog and the open streams."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tasklift import telemetry

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


def test_metrics_show_submits_the_waiting_backlog_and_open_streams(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No worker runs: three submitted tasks wait in the cpu queue while a client follows one of them."""
    monkeypatch.setattr(telemetry, "GAUGE_TTL_SECONDS", 0)  # read Redis/PostgreSQL on each scrape here
    before = scrape(client)
    ids = [client.post("/tasks", json={"task_type": "test_noop"}).json()["task_id"] for _ in range(3)]
    time.sleep(0.05)  # let the oldest task be measurably old

    with client.stream("GET", f"/tasks/{ids[0]}/stream") as stream:
        lines = stream.iter_lines()
        while next(lines) != "event: status":  # the snapshot is read after the hub subscription
            pass
        samples = scrape(client)
    after_stream = scrape(client)

    submitted = "tasklift_tasks_submitted_total"
    assert value(samples, submitted, task_type="test_noop") - value(before, submitted, task_type="test_noop") == 3
    assert value(samples, "tasklift_queue_depth", queue="tasklift.cpu") == 3
    assert value(samples, "tasklift_queue_depth", queue="tasklift.io") == 0
    assert value(samples, "tasklift_queue_oldest_age_seconds", queue="tasklift.cpu") > 0
    assert value(samples, "tasklift_tasks_running", lease="live") == 0
    assert value(samples, "tasklift_streams_open") == 1
    assert value(after_stream, "tasklift_streams_open") == 0
    assert any(name == "target_info" and ("service_name", "tasklift-api") in labels for name, labels in samples)


def test_gauges_that_read_redis_and_postgresql_reuse_a_reading_between_scrapes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scrape every second must not become a query every second: readings live for the TTL."""
    loads: list[int] = []

    def load() -> dict[tuple[tuple[str, str], ...], float]:
        loads.append(1)
        return {(("queue", "q"),): float(len(loads))}

    reading = telemetry._Cached(load)
    monkeypatch.setattr(telemetry, "GAUGE_TTL_SECONDS", 60)
    assert [o.value for o in reading.observations()] == [1.0]
    assert [o.value for o in reading.observations()] == [1.0] and len(loads) == 1
    monkeypatch.setattr(telemetry, "GAUGE_TTL_SECONDS", 0)
    assert [o.value for o in reading.observations()] == [2.0]


def test_a_gauge_whose_source_is_down_shows_no_sample_instead_of_failing_the_scrape() -> None:
    def down() -> dict[tuple[tuple[str, str], ...], float]:
        raise ConnectionError("redis is down")

    assert telemetry._Cached(down).observations() == []
