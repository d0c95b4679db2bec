"""One trace per task, in process: the HTTP core, submit, publish (real Redis message) and run."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tasklift import telemetry
from tasklift.http import routes
from tasklift.http.runtime import ApiRuntime
from tasklift.http.types import HttpRequest, HttpResponse
from tasklift.logs import JsonFormatter, TaskContextFilter
from tasklift.queue.runtime import WorkerRuntime
from tasklift.settings import get_settings

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def anonymous(tasklift_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests without credentials are the anonymous caller (as under ``tasklift dev``)."""
    monkeypatch.setenv("TASKLIFT_ANONYMOUS", "true")
    get_settings.cache_clear()


def post_task(runtime: ApiRuntime, body: dict[str, Any], **headers: str) -> HttpRequest:
    return HttpRequest(
        "POST",
        "/tasks",
        headers={"content-type": "application/json", **headers},
        body=json.dumps(body).encode(),
        base_url="http://testserver",
        runtime=runtime,
    )


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent else None


def pop_message(queue: str) -> dict[str, Any]:
    """Take the Celery message tasklift published off its Redis list (what a worker would receive)."""
    raw = redis.Redis.from_url(get_settings().redis_url or "").rpop(queue)
    assert raw is not None, f"nothing was published to {queue}"
    return json.loads(raw)


def run_delivery(message: dict[str, Any]) -> None:
    """Run ``tasklift.run`` in this process on the delivered message, with its headers."""
    from tasklift.queue.worker_tasks import run

    headers = message["headers"]
    run.apply(args=[headers["id"]], headers=headers, routing_key=message["properties"]["delivery_info"]["routing_key"])


@pytest.mark.usefixtures("worker_runtime")  # the delivery runs in this process
async def test_submit_publish_and_run_form_one_trace_of_parent_and_child_spans(
    anonymous: None, runtime: ApiRuntime, spans: InMemorySpanExporter, db: sa.Engine
) -> None:
    """Caller → POST /tasks → submit → publish → (message headers) → run → claim/finish, one trace."""
    resp = await routes.dispatch(
        post_task(runtime, {"task_type": "test_noop"}, traceparent=f"00-{CALLER_TRACE}-{CALLER_SPAN}-01")
    )
    assert resp.status == 202, resp.body
    task = json.loads(resp.body)
    message = pop_message("tasklift.cpu")
    assert message["headers"]["traceparent"].startswith(f"00-{CALLER_TRACE}-")
    run_delivery(message)

    finished = list(spans.get_finished_spans())
    assert {format(s.context.trace_id, "032x") for s in finished} == {CALLER_TRACE}, [s.name for s in finished]
    server = one(finished, "POST /tasks")
    assert server.kind == SpanKind.SERVER and server.parent is not None and server.parent.is_remote
    assert format(server.parent.span_id, "016x") == CALLER_SPAN
    assert server.attributes["http.response.status_code"] == 202
    submit = one(finished, "tasklift.submit")
    publish = one(finished, "tasklift.cpu publish")
    process = one(finished, "tasklift.cpu process")
    claim, finish = one(finished, "tasklift.claim"), one(finished, "tasklift.finish")
    assert parent_of(submit) == server.context.span_id
    assert publish.kind == SpanKind.PRODUCER and parent_of(publish) == submit.context.span_id
    assert process.kind == SpanKind.CONSUMER and parent_of(process) == publish.context.span_id
    assert parent_of(claim) == parent_of(finish) == process.context.span_id
    assert finish.attributes["tasklift.outcome"] == "SUCCESS"
    assert process.attributes["tasklift.attempt"] == 1 and process.attributes["tasklift.outcome"] == "SUCCESS"
    sql = [s for s in finished if s.kind == SpanKind.CLIENT and s.attributes.get("db.system") == "postgresql"]
    assert any(parent_of(s) == submit.context.span_id for s in sql)  # the insert, in submit's trace
    assert any(parent_of(s) == claim.context.span_id for s in sql)

    with db.connect() as conn:
        stored = conn.execute(sa.text("SELECT trace_id, traceparent, status FROM tasks")).one()
    assert task["trace_id"] == stored.trace_id == CALLER_TRACE
    assert stored.traceparent == f"00-{CALLER_TRACE}-{submit.context.span_id:016x}-01"
    assert stored.status == "SUCCESS"


async def test_a_task_submitted_without_a_caller_trace_starts_its_own_and_stores_it(
    anonymous: None, runtime: ApiRuntime, spans: InMemorySpanExporter, db: sa.Engine
) -> None:
    """No traceparent header: the server span is a new root; its 32-hex trace id is stored and returned."""
    resp = await routes.dispatch(post_task(runtime, {"task_type": "test_noop"}))
    task = json.loads(resp.body)
    server = one(list(spans.get_finished_spans()), "POST /tasks")
    assert server.parent is None
    assert task["trace_id"] == format(server.context.trace_id, "032x")
    assert len(task["trace_id"]) == 32 and int(task["trace_id"], 16) != 0


async def test_the_outbox_dispatcher_continues_the_trace_stored_with_the_task(
    anonymous: None, runtime: ApiRuntime, worker_runtime: WorkerRuntime, spans: InMemorySpanExporter, db: sa.Engine
) -> None:
    """A message published later by another process (the reaper's dispatcher) parents on
    tasks.traceparent: same trace."""
    submitted = await runtime.service.submit("anonymous", {"task_type": "test_noop"})
    submit = one(list(spans.get_finished_spans()), "tasklift.submit")
    pop_message("tasklift.cpu")
    await runtime.enqueuer.mark_now()  # the inline publish is marked in the background: write the mark now
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT published_at IS NOT NULL FROM task_outbox")).scalar()
    with db.begin() as conn:  # as if the inline publish had been lost (crash, broker outage)
        conn.execute(sa.text("UPDATE task_outbox SET published_at = NULL, available_at = now()"))
    spans.clear()

    assert worker_runtime.broker.dispatch_due(worker_runtime.engine) == 1

    publish = one(list(spans.get_finished_spans()), "tasklift.cpu publish")
    assert publish.parent is not None and publish.parent.span_id == submit.context.span_id
    assert publish.context.trace_id == submit.context.trace_id
    assert format(publish.context.trace_id, "032x") == submitted.task["trace_id"]
    assert pop_message("tasklift.cpu")["headers"]["traceparent"].split("-")[2] == f"{publish.context.span_id:016x}"


@pytest.mark.usefixtures("worker_runtime")  # the delivery runs in this process
async def test_a_manual_retry_runs_in_the_task_trace_and_links_the_retry_request(
    anonymous: None, runtime: ApiRuntime, spans: InMemorySpanExporter, db: sa.Engine
) -> None:
    """POST /tasks/{id}/retry publishes under the task's own trace; the request's span is linked."""
    resp = await routes.dispatch(post_task(runtime, {"task_type": "test_fail"}))
    task = json.loads(resp.body)
    run_delivery(pop_message("tasklift.cpu"))
    spans.clear()

    retry = HttpRequest("POST", f"/tasks/{task['task_id']}/retry", base_url="http://testserver", runtime=runtime)
    assert (await routes.dispatch(retry)).status == 202

    finished = list(spans.get_finished_spans())
    request = one(finished, "POST /tasks/{task_id}/retry")
    publish = one(finished, "tasklift.cpu publish")
    assert format(publish.context.trace_id, "032x") == task["trace_id"] != format(request.context.trace_id, "032x")
    assert [link.context.span_id for link in publish.links] == [request.context.span_id]


def test_database_calls_are_traced_inside_an_operation_and_silent_outside_one(
    engine: sa.Engine, spans: InMemorySpanExporter
) -> None:
    """Heartbeats and sweeps query outside any trace: no root spans; inside a span, SQL is a child."""
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    assert spans.get_finished_spans() == ()

    with telemetry.span("operation") as outer, engine.connect() as conn:
        conn.exec_driver_sql("SELECT 2")
    sql = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CLIENT]
    assert len(sql) == 1 and parent_of(sql[0]) == outer.get_span_context().span_id
    assert sql[0].attributes["db.system"] == "postgresql"


async def test_probes_and_scrapes_make_no_spans(
    anonymous: None, runtime: ApiRuntime, spans: InMemorySpanExporter
) -> None:
    """/healthz, /readyz and /metrics are called every few seconds; tracing them would be noise."""
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await routes.dispatch(HttpRequest("GET", path, runtime=runtime))).status == 200
    assert spans.get_finished_spans() == ()


async def test_request_log_lines_carry_the_task_id_and_the_trace_id(
    tasklift_env: dict[str, str], spans: InMemorySpanExporter
) -> None:
    """A line logged while serving /tasks/{id} names the task and the request's trace (JSON format)."""
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Capture()
    handler.addFilter(TaskContextFilter())
    handler.setFormatter(JsonFormatter())

    async def broken(req: HttpRequest) -> HttpResponse:
        raise RuntimeError("disk on fire")

    route = routes.Route("GET", "/tasks/{task_id}", broken, "get_task")
    logging.getLogger().addHandler(handler)
    try:
        req = HttpRequest("GET", "/tasks/0b6c0d4e-0000-4000-8000-000000000001")
        req.path_params = {"task_id": "0b6c0d4e-0000-4000-8000-000000000001"}
        assert (await routes.handle(route, req)).status == 500
    finally:
        logging.getLogger().removeHandler(handler)

    server = one(list(spans.get_finished_spans()), "GET /tasks/{task_id}")
    line = json.loads(next(line for line in lines if "unhandled error" in line))
    assert line["task_id"] == "0b6c0d4e-0000-4000-8000-000000000001"
    assert line["trace_id"] == format(server.context.trace_id, "032x")
    assert line["span_id"] == format(server.context.span_id, "016x")
    assert line["level"] == "ERROR" and "RuntimeError: disk on fire" in line["exception"]
    assert set(line) >= {"time", "logger", "message", "attempt", "pid"}
