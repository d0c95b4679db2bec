"""Real processes, real exporters: the API and a prefork worker send OTLP/HTTP to a receiver here.

One web_scrape task against a page served by the test proves that ONE trace holds the API's
server span, the worker's consumer span and the worker's outbound HTTP call, with correct parents,
and that the context also reached the scraped page. The same run checks the metrics (over OTLP
from the worker, scraped from the API's /metrics) and the JSON log lines.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tasklift.embedded import free_port
from tests.conftest import Proc, wait_for_status
from tests.observability.collector import OtlpReceiver, ReceivedSpan
from tests.observability.conftest import Page

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5  # OTLP SpanKind values


def otel_env(otlp: OtlpReceiver, page: Page) -> dict[str, str]:
    """Standard OTEL_* settings pointing at the receiver (short batching: a quick test); ``page`` reachable."""
    return {
        "TASKLIFT_SCRAPE_ALLOWED_PORTS": json.dumps([page.port]),
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "TASKLIFT_SCRAPE_ALLOW_PRIVATE": "true",
        "TASKLIFT_ANONYMOUS": "true",
        "TASKLIFT_LOG_FORMAT": "json",
    }


@pytest.fixture
def traced_stack(
    spawn: Callable[..., Proc], start_worker: Callable[..., Proc], otlp: OtlpReceiver, page: Page
) -> tuple[str, Proc, Proc]:
    """An API process and a prefork worker that export to ``otlp``; returns (API URL, api, worker)."""
    env = otel_env(otlp, page)
    port = free_port()
    api = spawn("api", "api", "--port", str(port), env=env)
    api.wait_for_output("Uvicorn running", timeout=30)
    worker = start_worker(concurrency=1, env=env)
    return f"http://127.0.0.1:{port}", api, worker


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def scrape(http: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    resp = http.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(resp.text)
        for sample in family.samples
    }


def test_one_trace_holds_the_api_span_the_worker_span_and_the_outbound_http_span(
    traced_stack: tuple[str, Proc, Proc], otlp: OtlpReceiver, page: Page
) -> None:
    """Caller → API (tasklift-api) → Celery message → worker (tasklift-worker) → GET page: one trace."""
    base, _, _ = traced_stack
    with httpx.Client(base_url=base, timeout=30) as http:
        resp = http.post(
            "/tasks",
            json={"task_type": "web_scrape", "url": page.url},
            headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
        )
        assert resp.status_code == 202, resp.text
        task = resp.json()
        done = wait_for_status(http, task["task_id"], "SUCCESS", timeout=60)
    assert done["result"]["title"] == "Traced page"
    assert task["trace_id"] == done["trace_id"] == CALLER_TRACE

    def whole_trace(r: OtlpReceiver) -> list[ReceivedSpan] | None:
        spans = [s for s in r.spans if s.trace_id == CALLER_TRACE]
        kinds = {(s.service, s.kind) for s in spans}
        wanted = {("tasklift-api", SERVER), ("tasklift-worker", CONSUMER), ("tasklift-worker", CLIENT)}
        finished = any(s.name == "tasklift.finish" for s in spans)
        return spans if wanted <= kinds and finished else None

    spans = otlp.wait_for(whole_trace)

    def only(service: str, kind: int, name: str | None = None) -> ReceivedSpan:
        found = [s for s in spans if s.service == service and s.kind == kind and name in (None, s.name)]
        assert len(found) == 1, [(s.service, s.kind, s.name) for s in spans]
        return found[0]

    server = only("tasklift-api", SERVER, "POST /tasks")
    submit = only("tasklift-api", 1, "tasklift.submit")
    publish = only("tasklift-api", PRODUCER, "tasklift.io publish")
    process = only("tasklift-worker", CONSUMER, "tasklift.io process")
    fetches = [s for s in spans if s.kind == CLIENT and "db.system" not in s.attributes]  # SQL is CLIENT too
    assert [s.service for s in fetches] == ["tasklift-worker"]
    fetch = fetches[0]
    assert server.parent_span_id == CALLER_SPAN
    assert submit.parent_span_id == server.span_id
    assert publish.parent_span_id == submit.span_id
    assert process.parent_span_id == publish.span_id
    assert fetch.parent_span_id == process.span_id
    assert (fetch.attributes.get("url.full") or fetch.attributes.get("http.url")) == page.url
    assert process.attributes["tasklift.task_id"] == task["task_id"] and process.attributes["tasklift.attempt"] == 1
    # The context went on to the scraped site, as W3C traceparent.
    assert page.requests[0]["traceparent"].startswith(f"00-{CALLER_TRACE}-{fetch.span_id}-")


def test_metrics_reach_the_collector_from_the_worker_and_slash_metrics_from_the_api(
    traced_stack: tuple[str, Proc, Proc], otlp: OtlpReceiver, page: Page
) -> None:
    """Finished/duration/queue-wait come over OTLP from the worker; /metrics shows submits and streams."""
    base, _, _ = traced_stack
    with httpx.Client(base_url=base, timeout=30) as http:
        ids = [
            http.post("/tasks", json={"task_type": "web_scrape", "url": page.url}).json()["task_id"] for _ in range(3)
        ]
        failing = http.post("/tasks", json={"task_type": "test_fail"}).json()["task_id"]
        for task_id in ids:
            wait_for_status(http, task_id, "SUCCESS", timeout=60)
        wait_for_status(http, failing, "FAILED", timeout=60)
        samples = scrape(http)

    assert samples[("tasklift_tasks_submitted_total", frozenset({("task_type", "web_scrape")}))] == 3
    assert samples[("tasklift_tasks_submitted_total", frozenset({("task_type", "test_fail")}))] == 1
    assert samples[("tasklift_streams_open", frozenset())] == 0

    def worker_point(metric: str, at_least: float = 1, **attributes: str) -> Callable[[OtlpReceiver], Any]:
        def find(r: OtlpReceiver) -> Any:
            points = [
                p
                for p in r.points
                if p.service == "tasklift-worker" and p.metric == metric and attributes.items() <= p.attributes.items()
            ]
            latest = points[-1] if points else None  # cumulative: the last export has the total
            return latest if latest and latest.value >= at_least else None

        return find

    otlp.wait_for(worker_point("tasklift.tasks.finished", 3, task_type="web_scrape", outcome="SUCCESS"))
    otlp.wait_for(worker_point("tasklift.tasks.finished", 1, task_type="test_fail", outcome="FAILED"))
    otlp.wait_for(worker_point("tasklift.task.run.duration", 3, task_type="web_scrape", outcome="SUCCESS"))
    otlp.wait_for(worker_point("tasklift.task.queue_wait.duration", 3, task_type="web_scrape", queue="tasklift.io"))


def test_log_lines_are_json_and_a_task_s_lines_carry_its_id_attempt_and_trace(
    traced_stack: tuple[str, Proc, Proc], page: Page
) -> None:
    """Every API line is a JSON object with the task fields; the worker's lines in a task name it."""
    base, api, worker = traced_stack
    with httpx.Client(base_url=base, timeout=30) as http:
        task = http.post("/tasks", json={"task_type": "web_scrape", "url": page.url}).json()
        wait_for_status(http, task["task_id"], "SUCCESS", timeout=60)

    api_lines = [line for line in api.output().splitlines() if line.strip()]
    assert api_lines and all(line.startswith("{") for line in api_lines), api_lines
    for line in json_lines(api.output()):
        assert {"time", "level", "logger", "message", "task_id", "attempt", "trace_id"} <= set(line)

    in_task = [line for line in json_lines(worker.output()) if line["task_id"] == task["task_id"]]
    assert any("HTTP Request: GET" in line["message"] for line in in_task), worker.output()[-3000:]
    assert {(line["attempt"], line["trace_id"]) for line in in_task} == {(1, task["trace_id"])}


def test_a_solo_pool_worker_sets_up_telemetry_in_its_own_process(
    spawn: Callable[..., Proc], start_worker: Callable[..., Proc], otlp: OtlpReceiver, page: Page
) -> None:
    """Without prefork children (no worker_process_init), the worker process itself exports its spans."""
    env = otel_env(otlp, page)
    port = free_port()
    spawn("api", "api", "--port", str(port), env=env).wait_for_output("Uvicorn running", timeout=30)
    start_worker(env=env, pool="solo")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        task = http.post("/tasks", json={"task_type": "test_noop"}).json()
        wait_for_status(http, task["task_id"], "SUCCESS", timeout=60)

    def consumer(r: OtlpReceiver) -> ReceivedSpan | None:
        found = [s for s in r.spans if s.trace_id == task["trace_id"] and s.kind == CONSUMER]
        return found[0] if found else None

    span = otlp.wait_for(consumer)
    publish = otlp.wait_for(lambda r: next((s for s in r.spans if s.span_id == span.parent_span_id), None))
    assert span.service == "tasklift-worker" and publish.service == "tasklift-api" and publish.kind == PRODUCER
