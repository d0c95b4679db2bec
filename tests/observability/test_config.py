"""Telemetry is configured by the standard OTEL_* variables only, and exports nothing by default."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState

from tasklift import telemetry
from tasklift.telemetry import setup

OTEL = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
]


@pytest.fixture
def otel_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in OTEL:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_nothing_is_exported_when_no_otel_variable_is_set(otel_env: pytest.MonkeyPatch) -> None:
    assert setup._span_exporters() == [] and setup._metric_exporters() == []


def test_an_otlp_endpoint_turns_on_otlp_http_export_of_traces_and_metrics(otel_env: pytest.MonkeyPatch) -> None:
    otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    [spans] = setup._span_exporters()
    [metrics] = setup._metric_exporters()
    assert isinstance(spans, OTLPSpanExporter) and isinstance(metrics, OTLPMetricExporter)
    assert setup._otlp_options("TRACES") == {"timeout": setup.DEFAULT_EXPORT_TIMEOUT}
    otel_env.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "7")
    assert setup._otlp_options("TRACES") == {}  # the SDK reads the variable itself


def test_the_exporter_variables_choose_explicitly(otel_env: pytest.MonkeyPatch) -> None:
    otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    otel_env.setenv("OTEL_TRACES_EXPORTER", "none")
    otel_env.setenv("OTEL_METRICS_EXPORTER", "prometheus")
    assert setup._span_exporters() == [] and setup._metric_exporters() == []
    otel_env.setenv("OTEL_TRACES_EXPORTER", "console")
    assert [type(e) for e in setup._span_exporters()] == [ConsoleSpanExporter]


def test_the_grpc_protocol_is_refused_with_a_warning_not_a_crash(
    otel_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    otel_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with caplog.at_level(logging.WARNING, logger="tasklift.telemetry"):
        assert setup._span_exporters() == []
    assert "http/protobuf" in caplog.text and "4318" in caplog.text


def test_client_spans_without_a_parent_are_dropped_and_everything_else_is_sampled() -> None:
    sampler = telemetry.QuietClientRoots(ALWAYS_ON)
    parent = SpanContext(trace_id=1, span_id=2, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    in_trace = trace.set_span_in_context(NonRecordingSpan(parent))

    def decision(kind: SpanKind, context: object = None) -> Decision:
        return sampler.should_sample(context, 1, "x", kind).decision  # type: ignore[arg-type]

    assert decision(SpanKind.CLIENT) == Decision.DROP
    assert decision(SpanKind.CLIENT, in_trace) == Decision.RECORD_AND_SAMPLE
    assert decision(SpanKind.SERVER) == Decision.RECORD_AND_SAMPLE
    assert decision(SpanKind.CONSUMER) == Decision.RECORD_AND_SAMPLE


def test_nothing_is_sampled_while_nothing_reads_the_spans() -> None:
    sampler = telemetry.QuietClientRoots(ALWAYS_ON, read=False)
    assert sampler.should_sample(None, 1, "x", SpanKind.SERVER).decision == Decision.DROP
    state = TraceState([("vendor", "abc")])
    for flags, decision in ((TraceFlags.DEFAULT, Decision.DROP), (TraceFlags.SAMPLED, Decision.RECORD_AND_SAMPLE)):
        caller = SpanContext(trace_id=1, span_id=2, is_remote=True, trace_flags=TraceFlags(flags), trace_state=state)
        result = sampler.should_sample(trace.set_span_in_context(NonRecordingSpan(caller)), 1, "x", SpanKind.SERVER)
        assert result.decision == decision  # a caller's sampled traceparent is followed
        assert result.trace_state == state  # the caller's tracestate goes on either way
    sampler.read = True  # an exporter, or add_span_processor
    assert sampler.should_sample(None, 1, "x", SpanKind.SERVER).decision == Decision.RECORD_AND_SAMPLE


@pytest.mark.parametrize("exporter", [None, "console"])
def test_the_same_tracer_and_instrumentors_run_whether_or_not_spans_leave_the_process(exporter: str | None) -> None:
    """Instrumented either way; recorded only when exported; a valid trace id (stored with each task) both ways."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if exporter:
        env["OTEL_TRACES_EXPORTER"] = exporter
    probe = (
        "from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor; from tasklift import telemetry; "
        "telemetry.configure('api'); print(AsyncPGInstrumentor().is_instrumented_by_opentelemetry); "
        "from opentelemetry import trace; span = trace.get_tracer('t').start_span('s', kind=trace.SpanKind.SERVER); "
        "print(span.is_recording(), span.get_span_context().is_valid)"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[:2] == ["True", f"{exporter is not None} True"], out
