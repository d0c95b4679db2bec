"""Hosts fixtures: the ASGI app, the Azure emulator and the AWS emulator, each started for real.

Every host runs as its own ``tasklift`` process on a free port against the test's database and
Redis (the conftest one level up gives each test a fresh database), exactly as ``tasklift dev``
runs it: ``tasklift api``, ``tasklift emulate azure``, ``tasklift emulate aws``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tasklift.embedded import free_port, wait_for_port
from tests.conftest import Proc

HOSTS = ("asgi", "azure", "aws")

#: What each host runs: the command after ``tasklift``.
COMMANDS = {
    "asgi": ["api"],
    "azure": ["emulate", "azure"],
    "aws": ["emulate", "aws"],
}

#: Every host: EventSource reconnects sooner than the 2 s default, to keep the suite quick.
COMMON_ENV = {"TASKLIFT_SSE_RETRY_MS": "200"}
#: The AWS stream answers in windows (Mangum buffers); a short one keeps the suite quick.
HOST_ENV = {"aws": {"TASKLIFT_SSE_WINDOW_SECONDS": "1"}}


class Host:
    """A running host: its kind, base URL and process (for its log)."""

    def __init__(self, kind: str, url: str, proc: Proc) -> None:
        self.kind, self.url, self.proc = kind, url, proc

    def __repr__(self) -> str:
        return f"Host({self.kind}, {self.url})"


@pytest.fixture
def start_host(spawn: Callable[..., Proc]) -> Callable[..., Host]:
    """Factory: ``start_host("azure")`` runs that host on a free port and returns it once it listens."""

    def create(kind: str, env: dict[str, str] | None = None) -> Host:
        port = free_port()
        proc = spawn(
            kind, *COMMANDS[kind], "--port", str(port), env={**COMMON_ENV, **HOST_ENV.get(kind, {}), **(env or {})}
        )
        try:
            wait_for_port(port, 30, proc.popen)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{kind} host did not start: {exc}\n{proc.output()[-3000:]}") from None
        return Host(kind, f"http://127.0.0.1:{port}", proc)

    return create


@pytest.fixture
def start_worker(spawn: Callable[..., Proc]) -> Iterator[Callable[..., Proc]]:
    """The top-level factory (a real worker, ready when returned), but killed at teardown: the test's
    database is dropped next, so a warm shutdown would only cost time."""
    started: list[Proc] = []

    def create(concurrency: int = 1) -> Proc:
        proc = spawn("worker", "worker", "--concurrency", str(concurrency))
        started.append(proc)
        proc.wait_for_output("ready.", timeout=60)
        return proc

    yield create
    for proc in started:
        proc.kill()


@pytest.fixture
def worker(spawn: Callable[..., Proc]) -> Iterator[Callable[[], Proc]]:
    """A real Celery worker, started at once so that it boots while the host does; call it to wait until ready."""
    proc = spawn("worker", "worker", "--concurrency", "1")

    def ready() -> Proc:
        proc.wait_for_output("ready.", timeout=60)
        return proc

    yield ready
    proc.kill()  # the test's database is dropped next: there is nothing to drain


@pytest.fixture(params=HOSTS)
def host(request: pytest.FixtureRequest, start_host: Callable[..., Host]) -> Host:
    """Each host in turn (the contract suite runs once per host)."""
    return start_host(request.param)


@pytest.fixture
def http(host: Host) -> Iterator[httpx.Client]:
    """An HTTP client on the host under test."""
    with httpx.Client(base_url=host.url, timeout=30) as client:
        yield client


def assert_problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    """``resp`` is an RFC 9457 problem with ``status`` about the path requested; returns it."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = resp.json()
    assert problem["status"] == status and problem["title"] and problem["detail"]
    assert problem["instance"] == resp.request.url.path
    return problem
