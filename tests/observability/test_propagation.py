"""Without any exporter configured, the same SDK tracer runs: the caller's trace goes on into
the stored row and the Celery message, with its tracestate and baggage (the W3C propagators)."""

from __future__ import annotations

import json
import os

import pytest
import redis
import sqlalchemy as sa

from tasklift import telemetry
from tasklift.http import routes
from tasklift.http.runtime import ApiRuntime
from tasklift.http.types import HttpRequest
from tasklift.settings import get_settings

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def anonymous(tasklift_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert not any(name.endswith("_EXPORTER") or "ENDPOINT" in name for name in os.environ if name.startswith("OTEL_"))
    assert telemetry.tracer_provider() is not None, "these tests need the OpenTelemetry SDK on"
    monkeypatch.setenv("TASKLIFT_ANONYMOUS", "true")
    get_settings.cache_clear()


def submit_request(runtime: ApiRuntime, **headers: str) -> HttpRequest:
    return HttpRequest(
        "POST",
        "/tasks",
        headers={"content-type": "application/json", **headers},
        body=b'{"task_type": "test_noop"}',
        base_url="http://testserver",
        path_params={},
        runtime=runtime,
    )


def message_headers(queue: str = "tasklift.cpu") -> dict[str, str]:
    raw = redis.Redis.from_url(get_settings().redis_url or "").rpop(queue)
    assert raw is not None, f"nothing was published to {queue}"
    return dict(json.loads(raw)["headers"])


async def submit(runtime: ApiRuntime, **headers: str) -> dict[str, str]:
    route = next(r for r in routes.ROUTES if r.name == "submit_task")
    resp = await routes.handle(route, submit_request(runtime, **headers))
    assert resp.status == 202, resp.body
    return dict(json.loads(resp.body))


async def test_the_callers_trace_goes_on_into_the_row_and_the_message(
    anonymous: None, runtime: ApiRuntime, db: sa.Engine
) -> None:
    task = await submit(runtime, traceparent=f"00-{CALLER_TRACE}-{CALLER_SPAN}-01")
    assert task["trace_id"] == CALLER_TRACE
    version, trace_id, span_id, flags = message_headers()["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", CALLER_TRACE, "01")  # same trace, sampled as the caller's
    assert span_id not in (CALLER_SPAN, "0" * 16)  # our producer span, under the caller's
    with db.connect() as conn:
        stored = conn.execute(sa.text("SELECT traceparent FROM tasks")).scalar_one()
    assert stored.split("-")[1] == CALLER_TRACE


async def test_the_callers_tracestate_and_baggage_go_on_in_the_message(anonymous: None, runtime: ApiRuntime) -> None:
    caller = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    for baggage in ("user=42", None):
        extra = {"baggage": baggage} if baggage else {}
        await submit(runtime, traceparent=caller, tracestate="vendor=abc", **extra)
        headers = message_headers()
        assert headers["tracestate"] == "vendor=abc"
        assert headers.get("baggage") == baggage  # what the W3C baggage propagator writes, or nothing


async def test_each_request_without_a_trace_starts_its_own(anonymous: None, runtime: ApiRuntime) -> None:
    traces = []
    for _ in range(2):
        task = await submit(runtime)
        assert len(task["trace_id"]) == 32 and int(task["trace_id"], 16) != 0
        assert message_headers()["traceparent"].split("-")[1] == task["trace_id"]
        traces.append(task["trace_id"])
    assert traces[0] != traces[1]
