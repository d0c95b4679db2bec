"""The ASGI adapter reads requests from the scope exactly as Starlette's own accessors would."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import ClientDisconnect, Request

from tasklift.http.asgi import raw_headers, receive_body, to_neutral, to_starlette
from tasklift.http.problems import Problem
from tasklift.http.types import HttpResponse


def scope(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "path": "/tasks/abc",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"api.example.com:8000"), (b"X-Api-Key", b"k1")],
        "server": ("10.0.0.5", 8000),
        "path_params": {"task_id": "abc"},
    }
    return {**base, **overrides}


CASES = [
    scope(),
    scope(query_string=b"wait=5&last_event_id=&x=%C3%A9&x=2"),
    scope(scheme="https", headers=[(b"host", b"tasks.example.com")]),
    scope(headers=[], server=("10.0.0.5", 80)),
    scope(headers=[], server=("10.0.0.5", 8443), scheme="https"),
    scope(root_path="/api", path="/api/tasks/abc", headers=[(b"host", b"h")]),
]


@pytest.mark.parametrize("raw", CASES)
def test_to_neutral_matches_starlette(raw: dict[str, Any]) -> None:
    request = Request(raw)
    neutral = to_neutral(request, b"{}")
    assert neutral.path == request.url.path
    assert neutral.base_url == str(request.base_url).rstrip("/")
    assert dict(neutral.query) == dict(request.query_params)
    assert dict(neutral.headers) == {k.lower(): v for k, v in request.headers.items()}
    assert neutral.path_params == request.path_params and neutral.body == b"{}"
    assert neutral.method == request.method


RESPONSES = [
    HttpResponse(202, {"Content-Type": "application/json", "Location": "/tasks/1", "Retry-After": "1"}, b'{"a":1}'),
    HttpResponse(204, {"Retry-After": "1"}),
    HttpResponse(304, {"ETag": '"x.1"', "Cache-Control": "no-store"}),
    HttpResponse(404, {"Content-Type": "application/problem+json", "X-Frame-Options": "SAMEORIGIN"}, b"{}"),
    HttpResponse(200, {"Content-Length": "3", "Content-Type": "text/plain"}, b"abc"),
]


@pytest.mark.parametrize("resp", RESPONSES, ids=lambda r: str(r.status))
def test_raw_headers_are_what_starlette_sends_for_the_response(resp: HttpResponse) -> None:
    starlette = to_starlette(HttpResponse(resp.status, dict(resp.headers), resp.body))
    assert raw_headers(resp) == starlette.raw_headers


def receiver(*messages: dict[str, Any]) -> Any:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    return receive


def chunks(*parts: bytes) -> list[dict[str, Any]]:
    return [{"type": "http.request", "body": part, "more_body": i < len(parts) - 1} for i, part in enumerate(parts)]


async def test_a_body_in_chunks_is_read_whole() -> None:
    body = await receive_body(scope(), receiver(*chunks(b'{"a"', b"", b":1}")), 100)
    assert body == b'{"a":1}'


@pytest.mark.parametrize(
    ("headers", "parts"),
    [
        ([(b"content-length", b"101")], [b"x"]),  # refused by its declared length, before reading
        ([], [b"x" * 60, b"x" * 41]),  # refused while reading (chunked, no length)
    ],
)
async def test_a_body_over_the_limit_is_413(headers: list[tuple[bytes, bytes]], parts: list[bytes]) -> None:
    with pytest.raises(Problem) as refused:
        await receive_body(scope(headers=headers), receiver(*chunks(*parts)), 100)
    assert refused.value.status == 413


async def test_a_client_that_leaves_mid_body_is_a_disconnect() -> None:
    with pytest.raises(ClientDisconnect):
        await receive_body(
            scope(),
            receiver({"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"}),
            100,
        )
