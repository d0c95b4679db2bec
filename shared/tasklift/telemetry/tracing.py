"""Spans and trace context: the request, submit, publish and run spans, and the W3C ids tasks store.

Every span is made by the SDK's tracer (:func:`tracer`), exporter or not; context crosses
processes through ``opentelemetry.propagate`` (request and message headers).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import tasklift.telemetry.setup as setup
from tasklift import logs

T = TypeVar("T")

#: Routes served without a server span (probes and scrapes would drown the task traces).
UNTRACED_ROUTES = frozenset({"healthz", "readyz", "metrics"})

_W3C = TraceContextTextMapPropagator()  #: the stored ``tasks.traceparent`` is W3C whatever OTEL_PROPAGATORS says
#: When the current attempt was claimed (set by ``metrics.task_started``, cleared per delivery).
run_started: ContextVar[float | None] = ContextVar("tasklift_run_started", default=None)


def tracer() -> trace.Tracer:
    """tasklift's tracer (configures the process on first use)."""
    state = setup.state()
    if state.tracer is None:
        from tasklift.version import __version__

        state.tracer = trace.get_tracer(setup.SCOPE, __version__)
    return state.tracer


def span(name: str, **attributes: Any) -> AbstractContextManager[trace.Span]:
    """A child span of the current one (claim, finish, …), or a root, with ``tasklift.*`` attributes."""
    return tracer().start_as_current_span(name, attributes=attributes_of(attributes))


def attributes_of(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as ``tasklift.*`` span attributes (None dropped, other types as text)."""
    return {
        f"tasklift.{k}": v if isinstance(v, bool | int | float | str) else str(v)
        for k, v in values.items()
        if v is not None
    }


def trace_id() -> str | None:
    """The current trace id as 32 hex digits (what ``tasks.trace_id`` and the API hold), or None."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def traceparent() -> str | None:
    """The current span as a W3C ``traceparent`` header value (stored in ``tasks.traceparent``)."""
    return _traceparent_of(trace.get_current_span().get_span_context())


def trace_ids() -> tuple[str | None, str | None]:
    """(:func:`trace_id`, :func:`traceparent`) of the current span, looked up once."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return format(context.trace_id, "032x"), _traceparent_of(context)


def _traceparent_of(context: SpanContext) -> str | None:
    """``context`` as W3C ``traceparent`` (what ``tasks.traceparent`` holds, whatever OTEL_PROPAGATORS says)."""
    if not context.is_valid:
        return None
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=trace.set_span_in_context(trace.NonRecordingSpan(context)))
    return carrier["traceparent"]


def annotate(**attributes: Any) -> None:
    """Put ``tasklift.*`` attributes on the current span; ``task_id``/``attempt`` also go on log lines."""
    trace.get_current_span().set_attributes(attributes_of(attributes))
    logs.bind(task_id=attributes.get("task_id"), attempt=attributes.get("attempt"))


def traced(name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator: run the function in a span ``name``; what it binds for logs ends with it."""

    def decorate(func: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            with logs.bound(), tracer().start_as_current_span(name):
                return func(*args, **kwargs)

        return wrapper

    return decorate


Handle = TypeVar("Handle", bound=Callable[..., Awaitable[Any]])


def traced_request(handle: Handle) -> Handle:
    """Decorator for ``routes.handle(route, req)``: the server span of every host's requests.

    Continues the caller's trace from a W3C ``traceparent`` header and binds the path's task id
    to the request's log lines.
    """

    @functools.wraps(handle)
    async def wrapper(route: Any, req: Any, *args: Any, **kwargs: Any) -> Any:
        if route.name in UNTRACED_ROUTES:
            return await handle(route, req, *args, **kwargs)
        attributes = {"http.request.method": req.method, "http.route": route.template, "url.path": req.path}
        with (
            logs.bound(task_id=req.path_params.get("task_id")),
            continued(req.headers),
            tracer().start_as_current_span(
                f"{req.method} {route.template}",
                kind=SpanKind.SERVER,
                attributes=attributes,
            ) as current,
        ):
            resp = await handle(route, req, *args, **kwargs)
            current.set_attribute("http.response.status_code", resp.status)
            if resp.status >= 500:
                current.set_status(Status(StatusCode.ERROR))
            return resp

    return wrapper  # type: ignore[return-value]


@contextmanager
def continued(carrier: Mapping[str, str]) -> Iterator[None]:
    """Make the trace context and baggage that ``carrier`` (request or message headers) holds current.

    ``start_as_current_span(context=...)`` would take the parent span from it but drop its baggage.
    """
    token = otel_context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)


def parse_traceparent(value: str | None) -> trace.SpanContext | None:
    """The span context a stored W3C ``traceparent`` names, or None."""
    if not value:
        return None
    context = trace.get_current_span(_W3C.extract({"traceparent": value})).get_span_context()
    return context if context.is_valid else None


def publishing(
    task_id: object, queue: str, stored_traceparent: str | None = None
) -> AbstractContextManager[dict[str, str]]:
    """The producer span of one Celery message; entering it gives the headers that carry its context.

    The parent is the task's stored traceparent when given (the dispatcher, a retry: one trace
    per task), else the current span (an inline publish right after the submit commits). A current
    span of another trace (say, the retry request) is linked.
    """
    stored = parse_traceparent(stored_traceparent)
    return _publishing(task_id, queue, stored)


@contextmanager
def _publishing(task_id: object, queue: str, stored: SpanContext | None) -> Iterator[dict[str, str]]:
    parent = None
    links = []
    if stored is not None:
        parent = trace.set_span_in_context(trace.NonRecordingSpan(stored))
        current = trace.get_current_span().get_span_context()
        if current.is_valid and current.trace_id != stored.trace_id:
            links.append(Link(current))
    attributes = {
        "messaging.system": "celery",
        "messaging.operation.type": "send",
        "messaging.destination.name": queue,
        "messaging.message.id": str(task_id),
        "tasklift.task_id": str(task_id),
    }
    with (
        logs.bound(task_id=task_id),
        tracer().start_as_current_span(
            f"{queue} publish", context=parent, kind=SpanKind.PRODUCER, links=links, attributes=attributes
        ),
    ):
        headers: dict[str, str] = {}
        propagate.inject(headers)
        yield headers


def _delivery() -> tuple[dict[str, str], str | None]:
    """The trace headers and queue of the Celery message being processed, if any."""
    from celery import current_task

    try:
        request = current_task.request
    except AttributeError:  # not inside a Celery task (a direct call)
        return {}, None
    # A worker puts message headers at the top of the request; Task.apply (eager runs) nests them.
    nested = request.get("headers") or {}
    carrier = {
        key: value
        for key in ("traceparent", "tracestate")
        if isinstance(value := request.get(key) or nested.get(key), str)
    }
    delivery = request.get("delivery_info") or {}
    return carrier, delivery.get("routing_key")


def traced_run(execute: Callable[..., T]) -> Callable[..., T]:
    """Decorator for ``runner.execute(task_id, worker)``: the consumer span of one delivery.

    Its parent comes from the message headers (the producer span). The span covers the claim,
    the task function (its httpx calls are children) and the recorded outcome.
    """

    @functools.wraps(execute)
    def wrapper(task_id: str, *args: Any, **kwargs: Any) -> T:
        carrier, queue = _delivery()
        attributes = {
            "messaging.system": "celery",
            "messaging.operation.type": "process",
            "messaging.message.id": str(task_id),
            "tasklift.task_id": str(task_id),
        }
        if queue:
            attributes["messaging.destination.name"] = queue
        started = run_started.set(None)
        try:
            with (
                logs.bound(task_id=task_id),
                continued(carrier),
                tracer().start_as_current_span(
                    f"{queue or 'tasklift.run'} process",
                    kind=SpanKind.CONSUMER,
                    attributes=attributes,
                ),
            ):
                return execute(task_id, *args, **kwargs)
        finally:
            run_started.reset(started)

    return wrapper
