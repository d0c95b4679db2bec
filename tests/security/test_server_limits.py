"""The HTTP server's own bounds (issue 20, defect 7): request head size and count, head and body
read timeouts (slow loris), 405 with Allow. Against the real ``tasklift api`` process and raw
sockets, as an attacker would send them."""

from __future__ import annotations

import socket
import time
import uuid

import httpx
import pytest

from tasklift.embedded import free_port
from tasklift.http import routes
from tasklift.http.types import HttpRequest

LIMITS = {
    "TASKLIFT_MAX_HEADER_BYTES": "8192",
    "TASKLIFT_MAX_HEADER_COUNT": "50",
    "TASKLIFT_HEADER_TIMEOUT_SECONDS": "2",
    "TASKLIFT_BODY_TIMEOUT_SECONDS": "2",
}


@pytest.fixture
def api_process(spawn) -> str:  # type: ignore[no-untyped-def]
    port = free_port()
    spawn("api", "api", "--port", str(port), env=LIMITS).wait_for_output("Uvicorn running", timeout=30)
    return f"127.0.0.1:{port}"


def connect(address: str) -> socket.socket:
    host, port = address.split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def read_all(sock: socket.socket, timeout: float = 10) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    sock.settimeout(timeout)
    start = time.monotonic()
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks), time.monotonic() - start


def test_a_request_head_over_max_header_bytes_is_431_and_closed(api_process: str) -> None:
    with connect(api_process) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        answer, _ = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")
    # The head is refused while it arrives: a 16 MB header is never read whole.
    with connect(api_process) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        try:
            while sent < 16 * 1024 * 1024:
                sock.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        else:
            answer, _ = read_all(sock)
            assert answer.startswith(b"HTTP/1.1 431 ")
    assert sent < 16 * 1024 * 1024 or answer.startswith(b"HTTP/1.1 431 ")


def test_more_headers_than_max_header_count_is_431_problem(api_process: str) -> None:
    headers = {f"X-H{i}": "v" for i in range(60)}
    resp = httpx.get(f"http://{api_process}/tasks", headers=headers)
    assert resp.status_code == 431
    assert resp.headers["content-type"] == "application/problem+json"
    assert "max_header_count" in resp.json()["detail"]
    assert httpx.get(f"http://{api_process}/healthz", headers=dict(list(headers.items())[:40])).status_code == 200


def test_a_slow_loris_head_is_closed_after_the_header_timeout(api_process: str) -> None:
    with connect(api_process) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        answer, waited = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert 1.5 <= waited <= 6
    # Dripping a byte at a time does not extend it: the deadline counts from the request's start.
    with connect(api_process) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        try:
            for _ in range(20):
                time.sleep(0.5)
                sock.sendall(b"X-Drip: 1\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        read_all(sock)
        assert time.monotonic() - start < 6


def test_a_connection_that_sends_nothing_is_closed(api_process: str) -> None:
    with connect(api_process) as sock:
        _, waited = read_all(sock)
    assert waited <= 6


def test_a_body_that_never_completes_is_closed_after_the_body_timeout(api_process: str) -> None:
    with connect(api_process) as sock:
        sock.sendall(
            b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        _, waited = read_all(sock)
    assert waited <= 6


def test_keep_alive_and_ordinary_requests_still_work(api_process: str) -> None:
    with httpx.Client(base_url=f"http://{api_process}") as http:
        for _ in range(3):
            assert http.get("/healthz").status_code == 200


def test_405_lists_the_allowed_methods(api_process: str) -> None:
    base = f"http://{api_process}"
    resp = httpx.put(f"{base}/tasks")
    assert resp.status_code == 405 and resp.headers["allow"] == "GET, POST"
    assert resp.headers["content-type"] == "application/problem+json"
    resp = httpx.patch(f"{base}/tasks/{uuid.uuid4()}")
    assert resp.status_code == 405 and resp.headers["allow"] == "DELETE, GET"
    resp = httpx.delete(f"{base}/healthz")
    assert resp.status_code == 405 and resp.headers["allow"] == "GET"


async def test_405_lists_the_allowed_methods_on_every_host() -> None:
    """routes.dispatch: what the Azure Functions and Lambda handlers answer with."""
    resp = await routes.dispatch(HttpRequest("PUT", "/tasks"))
    assert resp.status == 405 and resp.headers["Allow"] == "GET, POST"
    resp = await routes.dispatch(HttpRequest("POST", f"/tasks/{uuid.uuid4()}/stream"))
    assert resp.status == 405 and resp.headers["Allow"] == "GET"
