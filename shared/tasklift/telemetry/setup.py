"""Set-up of OpenTelemetry for one process: providers, exporters, the sampler and the instrumentors.

Configuration is the standard ``OTEL_*`` environment only (see the package docstring).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from prometheus_client import CollectorRegistry

log = logging.getLogger("tasklift.telemetry")

SCOPE = "tasklift"
#: Export timeout (seconds) when ``OTEL_EXPORTER_OTLP_TIMEOUT`` does not set one.
DEFAULT_EXPORT_TIMEOUT = 2.0


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


def configure(role: str = "api") -> None:
    """Set up tracing and metrics for this process once (idempotent; later calls are no-ops).

    Args:
        role: ``api`` (also serves ``GET /metrics`` and the open-streams gauge), ``worker``
            (also traces outbound httpx calls) or ``reaper`` (registers the backlog gauges,
            ``tasklift.queue.gauges``). Names the service by default.

    Hosts that never call it (Azure Functions, Lambda) are configured as ``api`` on first use.
    """
    global _state
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
        from tasklift.telemetry import metrics as instruments  # metrics reads this module's state

        provider = state.meter_provider
        instruments.install(provider.get_meter(SCOPE) if provider else metrics.NoOpMeter(SCOPE), role)
        _state = state  # last: a thread that sees it configured finds the instruments made


def state() -> _State:
    """This process's telemetry state (configured as ``api`` on first use)."""
    configure()
    assert _state is not None
    return _state


def meter() -> metrics.Meter:
    """tasklift's meter: the SDK's, or a no-op one when the SDK is disabled."""
    provider = state().meter_provider
    return provider.get_meter(SCOPE) if provider is not None else metrics.NoOpMeter(SCOPE)


def _build(state: _State) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = _resource(state.role)
    span_exporters = _span_exporters()
    # Spans are recorded only while something reads them (an exporter here, or a processor added
    # later); otherwise every span is the SDK's non-recording one, ids and propagation included.
    sampler = QuietClientRoots(_env_sampler(), read=bool(span_exporters))
    provider = TracerProvider(resource=resource, sampler=sampler)
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
    elif state.role == "reaper" and "prometheus" in _exporter_names("METRICS"):
        state.registry = _serve_prometheus(readers)
    readers += [PeriodicExportingMetricReader(exporter) for exporter in _metric_exporters()]
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    metrics.set_meter_provider(meter_provider)
    state.tracer_provider, state.meter_provider = provider, meter_provider

    _trace_clients(state)


def _serve_prometheus(readers: list[Any]) -> CollectorRegistry | None:
    """``OTEL_METRICS_EXPORTER=prometheus`` in the reaper: its metrics (the backlog gauges) served at
    ``OTEL_EXPORTER_PROMETHEUS_HOST``:``OTEL_EXPORTER_PROMETHEUS_PORT`` (default localhost:9464)."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    host = os.environ.get("OTEL_EXPORTER_PROMETHEUS_HOST") or "localhost"
    port = int(os.environ.get("OTEL_EXPORTER_PROMETHEUS_PORT") or 9464)
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log.warning("cannot serve Prometheus metrics on %s:%s (%s); not served", host, port, exc)
        return None
    readers.append(PrometheusMetricReader(registry=registry, scope_info_enabled=False))
    return registry


def _trace_clients(state: _State) -> None:
    """Client spans for SQL (and, in workers, outbound httpx calls); once per process."""
    if state.clients_traced or state.tracer_provider is None or state.meter_provider is None:
        return
    state.clients_traced = True
    if importlib.util.find_spec("sqlalchemy") is not None:  # a function package has none: its API uses asyncpg only
        _trace_databases(state.tracer_provider, state.meter_provider)
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor  # the API's hot path (store/aio.py)

    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]  # its __init__ has no type hints
    instrumentor.instrument(tracer_provider=state.tracer_provider)
    if state.role == "worker":
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor().instrument(tracer_provider=state.tracer_provider, meter_provider=state.meter_provider)


def add_span_processor(processor: Any) -> None:
    """Send this process's spans to ``processor`` too (tests, embedders)."""
    configure()
    state = _state
    assert state is not None and state.tracer_provider is not None, "OpenTelemetry SDK disabled"
    state.tracer_provider.add_span_processor(processor)
    sampler = state.tracer_provider.sampler
    if isinstance(sampler, QuietClientRoots):
        sampler.read = True


def _resource(role: str) -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource

    from tasklift.version import __version__

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
    """A sampler that drops every span while nothing reads spans, and client spans without a parent
    always; else it defers to ``delegate``.

    Heartbeats, reaper sweeps and probes query the database outside any request or task; as roots
    their spans would bury the task traces. ``delegate`` is what ``OTEL_TRACES_SAMPLER`` asks for.

    With no exporter (``read`` false) a recorded span would be built, ended and thrown away: about a
    quarter of a submit's CPU (docs/benchmarks.md). So a new trace is not sampled then; a trace
    whose caller sent a sampled ``traceparent`` still is (its flag goes on to the message, the
    worker and the task's own calls, as W3C Trace Context expects of a participant). Dropped spans
    carry generated trace and span ids and the caller's ``tracestate``, so tasks store and return
    their trace ids, log lines carry them, and the same SDK tracer, instrumentors and propagation
    run either way: only the sampling decision differs, as it does for the unsampled share of an
    exporting deployment's traffic.
    """

    def __init__(self, delegate: Sampler, *, read: bool = True) -> None:
        self._delegate = delegate
        self.read = read  #: something reads the spans (an exporter or an added span processor)

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
        parent = trace.get_current_span(parent_context).get_span_context()
        if kind == SpanKind.CLIENT and not parent.is_valid:
            return SamplingResult(Decision.DROP)
        if not self.read and not (parent.is_valid and parent.trace_flags.sampled):
            # Nobody reads spans, and no caller asked for this trace to be recorded (a caller's
            # sampled traceparent is still followed, so its flag reaches the worker and beyond).
            return SamplingResult(Decision.DROP, trace_state=parent.trace_state if parent.is_valid else None)
        return self._delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"QuietClientRoots{{{self._delegate.get_description()}}}"
