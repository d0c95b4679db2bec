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

Configuration is the standard ``OTEL_*`` environment only. With none set, nothing is exported and
spans are not recorded (the sampler drops them: :class:`~tasklift.telemetry.setup.QuietClientRoots`),
but the same SDK tracer, instrumentors (asyncpg, SQLAlchemy, httpx in workers) and propagation run:
a deployment that exports runs the code the tests and benchmarks ran, and every task gets a trace
id, stored and returned by the API, and log lines carry it:

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

- Nothing is sampled while nothing reads spans (no exporter, no added span processor).
- Client spans with no parent are not sampled. Heartbeats, reaper sweeps and health probes query
  the database outside any request or task; as roots they would bury the task traces in noise.
- ``/healthz``, ``/readyz`` and ``/metrics`` get no server span for the same reason.
- Celery prefork: providers hold export threads and sockets, which do not survive ``fork``. The
  worker's parent process never configures them; each child does on ``worker_process_init``.

Modules: :mod:`~tasklift.telemetry.setup` (providers, exporters, sampler, instrumentors),
:mod:`~tasklift.telemetry.tracing` (spans, propagation), :mod:`~tasklift.telemetry.metrics`
(instruments), :mod:`~tasklift.telemetry.gauges` (gauges over shared state, registered by the
process that owns the data). This package imports nothing of tasklift's layers above it.
"""

from tasklift.telemetry.metrics import (
    count_open_streams,
    prometheus_text,
    reaper_acted,
    task_finished,
    task_handed_back,
    task_started,
    task_submitted,
)
from tasklift.telemetry.setup import (
    QuietClientRoots,
    add_span_processor,
    configure,
    shutdown,
    tracer_provider,
)
from tasklift.telemetry.tracing import (
    UNTRACED_ROUTES,
    annotate,
    continued,
    publishing,
    span,
    trace_id,
    trace_ids,
    traced,
    traced_request,
    traced_run,
    traceparent,
    tracer,
)

__all__ = [
    "UNTRACED_ROUTES",
    "QuietClientRoots",
    "add_span_processor",
    "annotate",
    "configure",
    "continued",
    "count_open_streams",
    "prometheus_text",
    "publishing",
    "reaper_acted",
    "shutdown",
    "span",
    "task_finished",
    "task_handed_back",
    "task_started",
    "task_submitted",
    "trace_id",
    "trace_ids",
    "traced",
    "traced_request",
    "traced_run",
    "traceparent",
    "tracer",
    "tracer_provider",
]
