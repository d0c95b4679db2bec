"""The ASGI adapter reads requests from the scope exactly as Starlette's own accessors would."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request

from tasklift.http.asgi import to_neutral


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
