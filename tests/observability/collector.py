"""A real OTLP/HTTP receiver for tests: decodes what tasklift's exporters send.

It speaks the OTLP/HTTP protobuf protocol as a collector does (``POST /v1/traces`` and
``/v1/metrics`` with ``ExportTraceServiceRequest`` / ``ExportMetricsServiceRequest`` bodies,
answered with the empty response message), so the test sees exactly what Jaeger would receive.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any, TypeVar

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.support import http_server
from tests.support.http_server import QuietHandler

T = TypeVar("T")


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the collector received it, ids in hex as Jaeger shows them."""

    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str | None
    attributes: dict[str, Any]
    links: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReceivedPoint:
    """One metric data point: service, metric name, attributes and its value (sum/gauge) or count (histogram)."""

    service: str
    metric: str
    attributes: dict[str, Any]
    value: float


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


@dataclass
class OtlpReceiver:
    """Collects spans and metric points sent to ``url`` (use as ``OTEL_EXPORTER_OTLP_ENDPOINT``)."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    points: list[ReceivedPoint] = field(default_factory=list)
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> OtlpReceiver:
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    receiver._take_traces(body)
                    answer = ExportTraceServiceResponse().SerializeToString()
                elif self.path == "/v1/metrics":
                    receiver._take_metrics(body)
                    answer = ExportMetricsServiceResponse().SerializeToString()
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.reply(answer, "application/x-protobuf")

        self._server = http_server.start(Handler)
        return self

    def stop(self) -> None:
        if self._server is not None:
            http_server.stop(self._server)

    def _take_traces(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        received = []
        for resource_spans in request.resource_spans:
            service = str(_attributes(resource_spans.resource.attributes).get("service.name"))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            service=service,
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex() or None,
                            attributes=_attributes(span.attributes),
                            links=tuple(link.span_id.hex() for link in span.links),
                        )
                    )
        with self._lock:
            self.requests += 1
            self.spans.extend(received)

    def _take_metrics(self, body: bytes) -> None:
        request = ExportMetricsServiceRequest.FromString(body)
        received = []
        for resource_metrics in request.resource_metrics:
            service = str(_attributes(resource_metrics.resource.attributes).get("service.name"))
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    data = metric.WhichOneof("data")
                    for point in getattr(metric, data).data_points:
                        value = point.count if data == "histogram" else (point.as_double or point.as_int)
                        received.append(ReceivedPoint(service, metric.name, _attributes(point.attributes), value))
        with self._lock:
            self.requests += 1
            self.points.extend(received)

    def wait_for(self, found: Callable[[OtlpReceiver], T | None], timeout: float = 20) -> T:
        """Poll until ``found(self)`` returns something truthy; returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                result = found(self)
            if result:
                return result
            time.sleep(0.1)
        raise AssertionError(f"the collector never received it ({len(self.spans)} spans, {len(self.points)} points)")
