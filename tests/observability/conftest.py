"""Fixtures for the observability tests: an in-memory span exporter, OTLP receivers, a local page."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tasklift import telemetry
from tests.observability.collector import OtlpReceiver
from tests.support import http_server
from tests.support.http_server import QuietHandler

PAGE = b"""<!doctype html><html><head><title>Traced page</title>
<meta name="description" content="served by the test"></head>
<body><h1>Hello</h1><a href="/a">a</a><a href="/b">b</a><img src="/i.png"></body></html>"""


@pytest.fixture(scope="session")
def _memory_exporter() -> InMemorySpanExporter:
    assert telemetry.tracer_provider() is not None, "the test process runs with the OpenTelemetry SDK enabled"
    exporter = InMemorySpanExporter()
    telemetry.add_span_processor(SimpleSpanProcessor(exporter))  # also turns the SQL/httpx client spans on
    return exporter


@pytest.fixture
def spans(_memory_exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    """Every span this test process ends, in memory (emptied per test)."""
    _memory_exporter.clear()
    yield _memory_exporter
    _memory_exporter.clear()


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    """A real OTLP/HTTP receiver on 127.0.0.1; its ``url`` is an ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


class Page:
    """A web page served on 127.0.0.1, recording the headers of each request it got."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        page = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                page.requests.append({k.lower(): v for k, v in self.headers.items()})
                self.reply(PAGE, "text/html; charset=utf-8")

        self.server = http_server.start(Handler)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/page"

    def stop(self) -> None:
        http_server.stop(self.server)


@pytest.fixture
def page() -> Iterator[Page]:
    """A local HTML page for web_scrape (run it with TASKLIFT_SCRAPE_ALLOW_PRIVATE=true)."""
    served = Page()
    yield served
    served.stop()


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
