"""The host-neutral request and response every adapter translates to and from."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from tasklift import jsoncodec
from tasklift.jsoncodec import rfc3339 as rfc3339  # its home is the bottom layer (webhooks render resources too)


@dataclass
class HttpRequest:
    """An HTTP request as the handlers see it. Header names are lower case."""

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    #: Query parameters given more than once (no parameter of the API is a list: refused, 422).
    repeated_query: frozenset[str] = frozenset()
    body: bytes = b""
    base_url: str = ""  #: scheme://host[:port] the client used, for absolute URLs
    path_params: dict[str, str] = field(default_factory=dict)
    principal: str = "anonymous"
    #: The process's :class:`~tasklift.http.runtime.ApiRuntime`, as the host hands it over (typed
    #: Any: the runtime module imports the layers below, which import this one).
    runtime: Any = None

    def header(self, name: str) -> str | None:
        """A header value by case-insensitive name."""
        return self.headers.get(name.lower())


@dataclass
class HttpResponse:
    """An HTTP response; ``stream`` (SSE) replaces ``body`` when set."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None

    @property
    def media_type(self) -> str | None:
        return self.headers.get("Content-Type")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(value: Any) -> bytes:
    """Compact JSON bytes; datetimes and UUIDs are rendered as the API shows them."""
    return jsoncodec.dumps(value, _default)


def json_response(status: int, value: Any, headers: dict[str, str] | None = None) -> HttpResponse:
    """A JSON response."""
    return HttpResponse(status, {"Content-Type": "application/json", **(headers or {})}, dumps(value))
