"""OpenTelemetry for tasklift: one trace per task, its metrics, and their configuration.

The trace of a task, whichever host served the request and whichever process ran it::

    POST /tasks                   SERVER    routes.handle; continues an incoming W3C traceparent
      └─ tasklift.submit          INTERNAL  TaskService.submit; stores tasks.trace_id/.traceparent
           ├─ INSERT … (db)       CLIENT    opentelemetry-instrumentation-asyncpg / -sqlalchemy
           └─ tasklift.io publish PRODUCER  dispatch.publish; traceparent goes in the message headers
                └─ tasklift.io process  CONSUMER  runner.execute in the worker, parent from the headers
                     ├─ tasklift.claim ─ UPDATE …
                     ├─ GET (httpx)   CLIENT   the task's outbound calls
                     └─ tasklift.finish ─ UPDATE …

A message published later by the outbox dispatcher (after a crash, a broker outage or a retry's
back-off) parents its producer span on the task's stored traceparent, so it joins the same trace.

Configuration is the standard ``OTEL_*`` environment only. With none set, nothing is exported, but
the spans are made all the same, by the same SDK tracer and instrumentors (asyncpg, SQLAlchemy,
httpx in workers): a deployment that exports runs the code the tests and benchmarks ran. Every task
gets a trace id, stored and returned by the API, and log lines carry it:

- ``OTEL_SDK_DISABLED=true``: no SDK at all (trace ids only from an incoming traceparent).
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the per-signal ``…_TRACES_/…_METRICS_ENDPOINT``): export
  traces and metrics over OTLP/HTTP (protobuf). ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER``
  (``otlp``, ``console``, ``none``) choose explicitly; ``OTEL_SERVICE_NAME`` names the service
  (default ``tasklift-<role>``); ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*`` and
  ``OTEL_METRIC_EXPORT_INTERVAL`` work as the SDK documents them.

A collector that is down never slows a request: spans leave through a BatchSpanProcessor (a
background thread with a bounded queue that drops when full) and an export gives up after
``OTEL_EXPORTER_OTLP_TIMEOUT`` (default here 2 s instead of the SDK's 10 s, so a stopping process
does not hang on a dead collector).

Deliberate divergences:

- Client spans with no parent are not sampled. Heartbeats, reaper sweeps and health probes query
  the database outside any request or task; as roots they would bury the task traces in noise.
- ``/healthz``, ``/readyz`` and ``/metrics`` get no server span for the same reason.
- Celery prefork: providers hold export threads and sockets, which do not survive ``fork``. The
  worker's parent process never configures them; each child does on ``worker_process_init``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tasklift import logs

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

T = TypeVar("T")

SCOPE = "tasklift"
#: Export timeout (seconds) when ``OTEL_EXPORTER_OTLP_TIMEOUT`` does not set one.
DEFAULT_EXPORT_TIMEOUT = 2.0
#: Routes served without a server span (probes and scrapes would drown the task traces).
UNTRACED_ROUTES = frozenset({"healthz", "readyz", "metrics"})
#: How long the queue and database gauges reuse a reading (a scrape must not hammer Redis/PostgreSQL).
GAUGE_TTL_SECONDS = 10.0
#: Histogram buckets in seconds: tasks run from a second to an hour, and wait from milliseconds.
RUN_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
WAIT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

_W3C = TraceContextTextMapPropagator()
_run_started: ContextVar[float | None] = ContextVar("tasklift_run_started", default=None)


# --- configuration ---------------------------------------------------------------------------------


@dataclass
class _State:
    pid: int
    role: str
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    registry: CollectorRegistry | None = None
    clients_traced: bool = False  #: SQL/httpx instrumentation installed (survives fork)
    tracer: trace.Tracer | None = None  #: made once: get_tracer costs ~70 µs per call


_lock = threading.Lock()
_state: _State | None = None
_instruments: _Instruments | None = None


def configure(role: str = "api") -> None:
    """Set up tracing and metrics for this process once (idempotent; later calls are no-ops).

    Args:
        role: ``api`` (also serves ``GET /metrics`` and the queue/stream gauges), ``worker``
            (also traces outbound httpx calls) or ``reaper``. Names the service by default.

    Hosts that never call it (Azure Functions, Lambda) are configured as ``api`` on first use.
    """
    global _state, _instruments
    if _state is not None and _state.pid == os.getpid():
        return
    with _lock:
        if _state is not None and _state.pid == os.getpid():
            return
        if _state is not None:
            # Forked from a configured process: the global providers cannot be replaced, and the
            # SDK restarts their export threads in the child itself (os.register_at_fork).
            _state = dataclasses.replace(_state, pid=os.getpid())
            return
        state = _State(os.getpid(), role)
        if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true":
            try:
                _build(state)
            except Exception:  # noqa: BLE001 - telemetry must never stop a process from serving
                log.exception("OpenTelemetry setup failed; continuing without telemetry")
        meter = state.meter_provider.get_meter(SCOPE) if state.meter_provider else metrics.NoOpMeter(SCOPE)
        _instruments = _Instruments(meter, role)
        _state = state


def _build(state: _State) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = _resource(state.role)
    span_exporters = _span_exporters()
    provider = TracerProvider(resource=resource, sampler=QuietClientRoots(_env_sampler()))
    for exporter in span_exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    readers: list[MetricReader] = []
    if state.role == "api":
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry

        # A registry of our own: /metrics shows tasklift's metrics only, once, whatever else is loaded.
        state.registry = CollectorRegistry(auto_describe=False)
        readers.append(PrometheusMetricReader(registry=state.registry, scope_info_enabled=False))
    readers += [PeriodicExportingMetricReader(exporter) for exporter in _metric_exporters()]
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    metrics.set_meter_provider(meter_provider)
    state.tracer_provider, state.meter_provider = provider, meter_provider

    _trace_clients(state)


def _trace_clients(state: _State) -> None:
    """Client spans for SQL (and, in workers, outbound httpx calls); once per process."""
    if state.clients_traced or state.tracer_provider is None or state.meter_provider is None:
        return
    state.clients_traced = True
    _trace_databases(state.tracer_provider, state.meter_provider)
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor  # the API's hot path (store/aio.py)

    AsyncPGInstrumentor().instrument(tracer_provider=state.tracer_provider)
    if state.role == "worker":
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor().instrument(tracer_provider=state.tracer_provider, meter_provider=state.meter_provider)


def add_span_processor(processor: Any) -> None:
    """Send this process's spans to ``processor`` too (tests, embedders)."""
    configure()
    state = _state
    assert state is not None and state.tracer_provider is not None, "OpenTelemetry SDK disabled"
    state.tracer_provider.add_span_processor(processor)


def _resource(role: str) -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource

    from tasklift import __version__

    detected = Resource.create({SERVICE_VERSION: __version__})  # reads OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    return detected if named else detected.merge(Resource({SERVICE_NAME: f"tasklift-{role}"}))


def _env_sampler() -> Sampler:
    """The sampler ``OTEL_TRACES_SAMPLER`` asks for (the SDK's own resolution, default parent-based on)."""
    from opentelemetry.sdk.trace import TracerProvider

    return TracerProvider(shutdown_on_exit=False).sampler


def _exporter_names(signal: str) -> list[str]:
    """``OTEL_<SIGNAL>_EXPORTER`` as a list; unset means ``otlp`` only when an endpoint is configured."""
    explicit = os.environ.get(f"OTEL_{signal}_EXPORTER")
    if explicit is not None:
        return [name.strip().lower() for name in explicit.split(",") if name.strip()]
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    return ["otlp"] if endpoint else []


def _otlp_options(signal: str) -> dict[str, Any] | None:
    """Keyword arguments for an OTLP/HTTP exporter, or None when another protocol is asked for."""
    protocol = (
        (os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "")
        .strip()
        .lower()
    )
    if protocol not in ("", "http/protobuf"):
        log.warning(
            "OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported (tasklift ships the OTLP/HTTP exporter): "
            "use http/protobuf and the collector's HTTP port (4318); %s are not exported",
            protocol,
            signal.lower(),
        )
        return None
    timed = os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT") or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_TIMEOUT")
    return {} if timed else {"timeout": DEFAULT_EXPORT_TIMEOUT}


def _span_exporters() -> list[Any]:
    exporters: list[Any] = []
    for name in _exporter_names("TRACES"):
        if name == "otlp" and (options := _otlp_options("TRACES")) is not None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter(**options))
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        elif name not in ("none", "otlp"):
            log.warning("OTEL_TRACES_EXPORTER=%s is not supported (otlp, console or none)", name)
    return exporters


def _metric_exporters() -> list[Any]:
    exporters: list[Any] = []
    for name in _exporter_names("METRICS"):
        if name == "otlp" and (options := _otlp_options("METRICS")) is not None:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            exporters.append(OTLPMetricExporter(**options))
        elif name == "console":
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

            exporters.append(ConsoleMetricExporter())
        elif name not in ("none", "otlp", "prometheus"):  # prometheus: the API's GET /metrics, always on
            log.warning("OTEL_METRICS_EXPORTER=%s is not supported (otlp, console, prometheus or none)", name)
    return exporters


def _trace_databases(provider: TracerProvider, meter_provider: MeterProvider) -> None:
    """Trace SQL on every engine of this process, including engines made before this call.

    ``SQLAlchemyInstrumentor().instrument()`` only wraps ``create_engine`` for engines created
    later (and its version pin lags SQLAlchemy 2.1), so each engine is handed to the
    instrumentation's ``EngineTracer`` the first time it opens a connection.
    """
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.instrumentation.sqlalchemy.version import __version__ as sqlalchemy_instrumentation_version
    from sqlalchemy import event
    from sqlalchemy.engine import Connection, Engine

    tracer = provider.get_tracer("opentelemetry.instrumentation.sqlalchemy", sqlalchemy_instrumentation_version)
    usage = meter_provider.get_meter("opentelemetry.instrumentation.sqlalchemy").create_up_down_counter(
        "db.client.connections.usage", unit="connections", description="Connections in each state (idle, used)"
    )
    traced: weakref.WeakSet[Engine] = weakref.WeakSet()

    def on_connect(conn: Connection) -> None:
        engine = conn.engine
        if engine not in traced:
            traced.add(engine)
            EngineTracer(tracer, engine, usage)  # type: ignore[no-untyped-call]

    event.listen(Engine, "engine_connect", on_connect)


def shutdown() -> None:
    """Flush and stop this process's exporters (a Celery child on exit; atexit covers the rest)."""
    state = _state
    if state is None or state.pid != os.getpid():
        return
    for provider in (state.tracer_provider, state.meter_provider):
        if provider is not None:
            try:
                provider.shutdown()
            except Exception as exc:  # noqa: BLE001
                log.debug("telemetry shutdown: %s", exc)


def tracer_provider() -> TracerProvider | None:
    """This process's SDK tracer provider (None when the SDK is disabled), e.g. to add a test exporter."""
    configure()
    assert _state is not None
    return _state.tracer_provider


class QuietClientRoots(Sampler):
    """A sampler that drops client spans without a parent, else defers to ``delegate``.

    Heartbeats, reaper sweeps and probes query the database outside any request or task; as roots
    their spans would bury the task traces. ``delegate`` is what ``OTEL_TRACES_SAMPLER`` asks for.
    """

    def __init__(self, delegate: Sampler) -> None:
        self._delegate = delegate

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if kind == SpanKind.CLIENT and not trace.get_current_span(parent_context).get_span_context().is_valid:
            return SamplingResult(Decision.DROP)
        return self._delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"QuietClientRoots{{{self._delegate.get_description()}}}"


# --- tracing -----------------------------------------------------------------------------------------


def tracer() -> trace.Tracer:
    """tasklift's tracer (configures the process on first use)."""
    configure()
    state = _state
    assert state is not None
    if state.tracer is None:
        from tasklift import __version__

        state.tracer = trace.get_tracer(SCOPE, __version__)
    return state.tracer


def span(name: str, **attributes: Any) -> AbstractContextManager[trace.Span]:
    """A child span of the current one (claim, finish, …), or a root, with ``tasklift.*`` attributes."""
    return tracer().start_as_current_span(name, attributes=_attrs(attributes))


def _attrs(values: Mapping[str, Any]) -> dict[str, Any]:
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
    trace.get_current_span().set_attributes(_attrs(attributes))
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


def _parse_traceparent(value: str | None) -> trace.SpanContext | None:
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
    stored = _parse_traceparent(stored_traceparent)
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
        started = _run_started.set(None)
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
            _run_started.reset(started)

    return wrapper


# --- metrics -----------------------------------------------------------------------------------------


class _Tally:
    """A counter kept in the process and read by the SDK when it collects (an observable counter).

    The SDK's ``Counter.add`` costs ~10 µs per call (attribute sets, view matching, locks), paid on
    every submit and every finished attempt; this is a dict update. What the exporters see is the
    same monotonic cumulative sum (Prometheus: ``<name>_total``).
    """

    def __init__(self, meter: metrics.Meter, name: str, unit: str, description: str) -> None:
        self._counts: dict[tuple[tuple[str, str], ...], int] = {}
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._after_fork)
        meter.create_observable_counter(name, [self._observe], unit=unit, description=description)

    def add(self, amount: int, attributes: Mapping[str, str]) -> None:
        key = tuple(attributes.items())
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + amount

    def _observe(self, options: CallbackOptions) -> list[Observation]:
        with self._lock:
            counts = list(self._counts.items())
        return [Observation(count, dict(key)) for key, count in counts]

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # a thread of the parent may have held it at the fork


class _Instruments:
    def __init__(self, meter: metrics.Meter, role: str) -> None:
        self.submitted = _Tally(meter, "tasklift.tasks.submitted", "{task}", "Tasks accepted (202), by task_type")
        self.finished = _Tally(
            meter,
            "tasklift.tasks.finished",
            "{task}",
            "Task attempts ended, by task_type and outcome (SUCCESS, FAILED, CANCELLED, RETRY, HANDBACK)",
        )
        self.handbacks = _Tally(
            meter,
            "tasklift.tasks.handbacks",
            "{task}",
            "Running attempts re-queued at the end of a worker's soft shutdown, by task_type",
        )
        self.run_duration = meter.create_histogram(
            "tasklift.task.run.duration",
            unit="s",
            description="Time from claim to recorded outcome of one attempt",
            explicit_bucket_boundaries_advisory=RUN_BUCKETS,
        )
        self.queue_wait = meter.create_histogram(
            "tasklift.task.queue_wait.duration",
            unit="s",
            description="Time from submit to the first claim by a worker (database clock)",
            explicit_bucket_boundaries_advisory=WAIT_BUCKETS,
        )
        self.reaper_actions = meter.create_counter(
            "tasklift.reaper.actions",
            unit="{task}",
            description="Tasks the reaper acted on, by action (dispatch, leases, cancels, cleanup)",
        )
        if role == "api":  # one process kind reports the shared state, or every worker would repeat it
            meter.create_observable_gauge(
                "tasklift.queue.depth",
                [_observe_queue_depth],
                unit="{message}",
                description="Messages waiting in each Celery queue (Redis list length)",
            )
            meter.create_observable_gauge(
                "tasklift.queue.oldest_age",
                [_observe_oldest_due],
                unit="s",
                description="Age of the oldest task waiting for a worker (since submit or requeue), by queue",
            )
            meter.create_observable_gauge(
                "tasklift.tasks.running",
                [_observe_running],
                unit="{task}",
                description="RUNNING tasks by lease state (expired = stuck until the reaper recovers it)",
            )
            meter.create_observable_gauge(
                "tasklift.streams.open",
                [_observe_streams],
                unit="{stream}",
                description="SSE streams and long polls this process serves",
            )


def _metrics() -> _Instruments:
    configure()
    assert _instruments is not None
    return _instruments


def task_submitted(task_type: str) -> None:
    """Count an accepted task."""
    _metrics().submitted.add(1, {"task_type": task_type})


def task_started(row: Mapping[str, Any]) -> None:
    """After a claim: attempt and type on the span and log lines; queue wait of a first attempt.

    Args:
        row: the claimed task row (``attempts``, ``task_type``, ``queue``, ``created_at``,
            ``started_at``, ``traceparent``).
    """
    _run_started.set(time.monotonic())
    logs.bind(attempt=row["attempts"])  # task_id is bound by traced_run
    current = trace.get_current_span()
    current.set_attributes(
        _attrs({"attempt": row["attempts"], "task_type": row["task_type"], "queue": row.get("queue")})
    )
    stored = _parse_traceparent(row.get("traceparent"))
    if stored is not None and current.get_span_context().trace_id != stored.trace_id:
        current.add_link(stored, {"tasklift.link": "submit"})  # a message without trace headers
    created, started = row.get("created_at"), row.get("started_at")
    if row["attempts"] == 1 and created is not None and started is not None:
        attributes = {"task_type": row["task_type"], "queue": row.get("queue") or ""}
        _metrics().queue_wait.record(max(0.0, (started - created).total_seconds()), attributes)


def task_finished(task_type: str, outcome: str) -> None:
    """Count an attempt's outcome and record its run time (call once the outcome is recorded)."""
    instruments = _metrics()
    attributes = {"task_type": task_type, "outcome": outcome}
    instruments.finished.add(1, attributes)
    started = _run_started.get()
    if started is not None:
        instruments.run_duration.record(time.monotonic() - started, attributes)
    trace.get_current_span().set_attribute("tasklift.outcome", outcome)


def task_handed_back(task_type: str) -> None:
    """Count an attempt handed back to the queue by a worker's soft shutdown."""
    _metrics().handbacks.add(1, {"task_type": task_type})


def reaper_acted(action: str, count: int) -> None:
    """Count what one reaper job did (tasks dispatched, leases recovered, cancels enforced…)."""
    if count:
        _metrics().reaper_actions.add(count, {"action": action})


def prometheus_text() -> tuple[bytes, str]:
    """This process's metrics in the Prometheus text format, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    configure()
    assert _state is not None
    if _state.registry is None:
        return b"# no tasklift metrics here (OTEL_SDK_DISABLED, or not an API process)\n", CONTENT_TYPE_LATEST
    return generate_latest(_state.registry), CONTENT_TYPE_LATEST


class _Cached:
    """A reading reused for :data:`GAUGE_TTL_SECONDS`; a failed reading yields nothing (never raises)."""

    def __init__(self, load: Callable[[], dict[tuple[tuple[str, str], ...], float]]) -> None:
        self._load = load
        self._value: dict[tuple[tuple[str, str], ...], float] = {}
        self._at = -GAUGE_TTL_SECONDS
        self._lock = threading.Lock()

    def observations(self) -> list[Observation]:
        with self._lock:
            if time.monotonic() - self._at >= GAUGE_TTL_SECONDS:
                self._at = time.monotonic()
                try:
                    self._value = self._load()
                except Exception as exc:  # noqa: BLE001 - a scrape during an outage shows no value
                    log.debug("gauge reading failed: %s", exc)
                    self._value = {}
            return [Observation(value, dict(labels)) for labels, value in self._value.items()]


def _queue_depths() -> dict[tuple[tuple[str, str], ...], float]:
    import redis

    from tasklift.settings import get_settings, redis_url

    settings = get_settings()
    queues = (settings.cpu_queue, settings.io_queue)
    client = redis.Redis.from_url(redis_url(), socket_timeout=1, socket_connect_timeout=1)
    try:
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            pipe.llen(queue)  # Celery's Redis transport keeps each queue as a list of that name
        return {(("queue", q),): float(n) for q, n in zip(queues, pipe.execute(), strict=True)}
    finally:
        client.close()


def _oldest_due() -> dict[tuple[tuple[str, str], ...], float]:
    from sqlalchemy import func, or_, select

    from tasklift.store.db import get_engine
    from tasklift.store.tables import outbox

    # The outbox holds one row per task from submit (or requeue) until a worker claims it: a small
    # table. Waiting = published to the broker, or due for the dispatcher (not a retry's back-off).
    age = func.extract("epoch", func.now() - func.min(outbox.c.created_at))
    waiting = or_(outbox.c.published_at.is_not(None), outbox.c.available_at <= func.now())
    query = select(outbox.c.queue, age).where(waiting).group_by(outbox.c.queue)
    with get_engine().connect() as conn:
        return {(("queue", queue),): float(seconds) for queue, seconds in conn.execute(query)}


def _running() -> dict[tuple[tuple[str, str], ...], float]:
    from sqlalchemy import case, func, select

    from tasklift.store.db import get_engine
    from tasklift.store.tables import tasks

    lease = case((tasks.c.lease_expires_at < func.now(), "expired"), else_="live")
    query = select(lease, func.count()).where(tasks.c.status == "RUNNING").group_by(lease)  # partial index
    counts = {"live": 0.0, "expired": 0.0}
    with get_engine().connect() as conn:
        counts.update({state: float(n) for state, n in conn.execute(query)})
    return {(("lease", state),): n for state, n in counts.items()}


#: What the tasklift.streams.open gauge adds up: each registered by the module that owns the streams.
_stream_counts: list[Callable[[], int]] = []


def count_open_streams(source: Callable[[], int]) -> None:
    """Report ``source()`` (streams and long polls this process serves) in ``tasklift.streams.open``."""
    _stream_counts.append(source)


def _open_streams() -> dict[tuple[tuple[str, str], ...], float]:
    return {(): float(sum(source() for source in _stream_counts))}


_queue_depth_reading = _Cached(_queue_depths)
_oldest_due_reading = _Cached(_oldest_due)
_running_reading = _Cached(_running)


def _observe_queue_depth(options: CallbackOptions) -> list[Observation]:
    return _queue_depth_reading.observations()


def _observe_oldest_due(options: CallbackOptions) -> list[Observation]:
    return _oldest_due_reading.observations()


def _observe_running(options: CallbackOptions) -> list[Observation]:
    return _running_reading.observations()


def _observe_streams(options: CallbackOptions) -> list[Observation]:
    try:
        return [Observation(value) for value in _open_streams().values()]
    except RuntimeError:  # a stream opened mid-count (dict changed size): skip this reading
        return []
