"""The one place tasklift's HTTP layer relies on a library behaviour that is not documented API.

:class:`PlainRoute` lets FastAPI document a route (OpenAPI, /docs) while the route is served by a
plain ASGI app of tasklift's: it sets ``self.app`` after ``APIRoute.__init__``, relying on
Starlette's ``Route.handle`` calling ``self.app(scope, receive, send)``. What it buys: every rule,
body limit and error of a route lives in the host-neutral handlers, so nothing FastAPI or Starlette
wrap around an endpoint (dependency solving, exit stacks, a Request and a Response object, response
validation, the exception-handler lookup) has anything to do; together they cost ~30 µs a request
(measured when this was written, against POST's ~0.2 ms of API CPU). If Starlette stops calling
``self.app``, FastAPI's own endpoint (which serves the same handler through a Request) runs
instead: nothing breaks but the speed, and tests/unit/test_http_compat.py fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute


class PlainRoute(APIRoute):
    """An APIRoute served by ``endpoint.asgi_app`` (a plain ASGI callable) instead of ``endpoint``."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.app = endpoint.asgi_app  # type: ignore[attr-defined]  # set by tasklift.http.asgi._endpoint
