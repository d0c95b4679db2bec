"""The emulators enforce their platform's limits and fail a request the way the platform does,
with a log line naming the limit. Each runs in this process on a real port (uvicorn in a thread)
hosting small test apps (tests/hosts/apps) whose functions are slow, large or broken on purpose."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tasklift_local.aws import AwsEmulator
from tasklift_local.azure import AzureEmulator
from tests.conftest import ServerThread

APPS = Path(__file__).parent / "apps"


@pytest.fixture
def azure_classic(monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Client]:
    """The Azure emulator on the classic-types app: routePrefix "api", functionTimeout 1 s, 1 KiB body limit."""
    monkeypatch.setenv("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", "1024")
    server = ServerThread(AzureEmulator(APPS / "classic").app()).start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client
    server.stop()


@pytest.fixture
def aws_lambdas() -> Iterator[httpx.Client]:
    """The AWS emulator on the test template (its 30 s integration timeout as API Gateway has it)."""
    emulator = AwsEmulator(APPS / "lambdas" / "template.yaml")
    server = ServerThread(emulator.app()).start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client
    server.stop()
    emulator.close()


def test_azure_builds_a_func_httprequest_under_the_route_prefix(azure_classic: httpx.Client) -> None:
    resp = azure_classic.post("/api/echo/ada?x=1", content=b"hello", headers={"x-probe": "p"})
    assert resp.status_code == 201 and resp.headers["content-type"].startswith("application/json")
    assert resp.json() == {
        "method": "POST",
        "url": f"{azure_classic.base_url}/api/echo/ada?x=1",
        "name": "ada",
        "params": {"x": "1"},
        "header": "p",
        "body": "hello",
    }
    assert azure_classic.post("/echo/ada").status_code == 404  # outside routePrefix: no function
    missing = azure_classic.get("/api/echo/ada")  # the route exists for POST only
    assert missing.status_code == 404 and missing.content == b""


@pytest.mark.parametrize("path", ["/api/slow", "/api/sync-slow"])
def test_azure_answers_500_after_function_timeout(
    azure_classic: httpx.Client, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    with caplog.at_level(logging.WARNING, "tasklift_local"):
        resp = azure_classic.get(path, params={"seconds": 3})
    assert resp.status_code == 500
    assert any("functionTimeout" in r.getMessage() for r in caplog.records)


def test_azure_refuses_bodies_over_the_request_size_limit_with_413(
    azure_classic: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "tasklift_local"):
        assert azure_classic.post("/api/echo/ada", content=b"x" * 2048).status_code == 413
    assert any("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT" in r.getMessage() for r in caplog.records)
    assert azure_classic.post("/api/echo/" + "a" * 5000).status_code == 414


def test_azure_streams_chunks_as_they_come_and_cuts_the_stream_at_function_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = ServerThread(AzureEmulator(APPS / "streaming").app()).start()
    try:
        with caplog.at_level(logging.WARNING, "tasklift_local"), httpx.stream("GET", f"{server.url}/ticks") as resp:
            assert resp.status_code == 200
            chunks = resp.iter_text()
            first = next(chunks)  # arrives long before the cut: the body is not buffered
            rest = "".join(chunks)  # ends when the host closes the stream at functionTimeout (1 s)
    finally:
        server.stop()
    assert first.startswith("data: 0") and 2 <= (first + rest).count("data:") <= 10
    assert any("functionTimeout (1 s) reached while streaming" in r.getMessage() for r in caplog.records)


def test_azure_answers_500_with_no_body_when_a_function_raises(azure_classic: httpx.Client) -> None:
    resp = azure_classic.get("/api/boom")
    assert resp.status_code == 500 and resp.content == b""


def test_aws_sends_a_payload_2_event_and_a_lambda_context(aws_lambdas: httpx.Client) -> None:
    resp = aws_lambdas.post(
        "/echo/ada?x=1&x=2&y=",
        content=b'{"a": 1}',
        headers={"content-type": "application/json", "cookie": "c1=v1; c2=v2", "x-multi": "one"},
    )
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    event, context = resp.json()["event"], resp.json()["context"]
    assert event["version"] == "2.0" and event["routeKey"] == "ANY /echo/{name}"
    assert event["rawPath"] == "/echo/ada" and event["rawQueryString"] == "x=1&x=2&y="
    assert event["queryStringParameters"] == {"x": "1,2", "y": ""}
    assert event["pathParameters"] == {"name": "ada"}
    assert event["cookies"] == ["c1=v1", "c2=v2"] and "cookie" not in event["headers"]
    assert event["headers"]["x-multi"] == "one" and event["headers"]["x-forwarded-proto"] == "http"
    assert event["body"] == '{"a": 1}' and event["isBase64Encoded"] is False
    assert event["requestContext"]["http"]["method"] == "POST" and event["requestContext"]["stage"] == "$default"
    assert context["function_name"] == "EchoFunction" and context["memory_limit_in_mb"] == 1024
    assert 0 < context["remaining"] <= 10_000 and context["aws_request_id"]


def test_aws_base64_encodes_binary_bodies_and_passes_cookies_back(aws_lambdas: httpx.Client) -> None:
    event = aws_lambdas.put("/echo/bin", content=bytes([0xFF, 0x00, 0xFE])).json()["event"]
    assert event["isBase64Encoded"] is True and event["body"] == "/wD+"
    resp = aws_lambdas.get("/cookie")
    assert resp.status_code == 201 and resp.text == "ok" and resp.headers["x-probe"] == "yes"
    assert resp.headers.get_list("set-cookie") == ["a=1", "b=2"]


def test_aws_answers_500_when_the_function_times_out(
    aws_lambdas: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "tasklift_local"):
        resp = aws_lambdas.get("/slow", params={"seconds": 3})
    assert resp.status_code == 500 and resp.json() == {"message": "Internal Server Error"}
    assert any("Task timed out after 1.00 seconds" in r.getMessage() for r in caplog.records)


def test_aws_answers_503_at_the_integration_timeout(
    aws_lambdas: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "tasklift_local"):
        resp = aws_lambdas.get("/patient", params={"seconds": 3})  # TimeoutInMillis: 1000
    assert resp.status_code == 503 and resp.json() == {"message": "Service Unavailable"}
    assert any("integration timeout" in r.getMessage() for r in caplog.records)


def test_aws_refuses_requests_over_6_mb_with_413(aws_lambdas: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "tasklift_local"):
        resp = aws_lambdas.post("/echo/big", content=b"x" * (6 * 1024 * 1024 + 1))
    assert resp.status_code == 413 and resp.json() == {"message": "Request Entity Too Large"}
    assert any("6 MB" in r.getMessage() for r in caplog.records)
    assert aws_lambdas.post("/echo/huge", content=b"x" * (11 * 1024 * 1024)).status_code == 413  # the 10 MB cap


def test_aws_fails_responses_over_6_mb_with_500(aws_lambdas: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "tasklift_local"):
        resp = aws_lambdas.get("/big")
    assert resp.status_code == 500 and resp.json() == {"message": "Internal Server Error"}
    assert any("response payload limit" in r.getMessage() for r in caplog.records)


def test_aws_answers_500_when_a_handler_raises_and_404_without_a_route(aws_lambdas: httpx.Client) -> None:
    assert aws_lambdas.get("/boom").json() == {"message": "Internal Server Error"}
    missing = aws_lambdas.get("/nowhere")
    assert missing.status_code == 404 and missing.json() == {"message": "Not Found"}


def test_aws_runs_each_function_in_its_own_process_with_the_template_variables(
    aws_lambdas: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    first = aws_lambdas.get("/echo/a").json()
    expected = {"PROBE_FROM_TEMPLATE": "plain", "PROBE_FROM_REF": None, "AWS_LAMBDA_FUNCTION_NAME": "EchoFunction"}
    assert first["env"] == expected
    # Not this process (the emulator's): a Lambda environment of its own, kept warm between calls.
    assert first["pid"] != os.getpid() and "PROBE_FROM_TEMPLATE" not in os.environ
    assert aws_lambdas.get("/echo/b").json()["pid"] == first["pid"]
