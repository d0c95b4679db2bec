"""Security headers on every response, and the ASGI middleware that adds them.

One Content-Security-Policy serves the API and the dashboard at ``/``: the dashboard loads only
its own ``/static`` script and style, an inline SVG icon (``data:``) and talks to its own origin
(fetch and EventSource are ``connect-src``). ``frame-ancestors 'none'`` (which a ``<meta>`` CSP
cannot express) stops click-jacking. ``/docs`` is FastAPI's Swagger UI, which loads its bundle
from a CDN and starts it with an inline script, so that page alone gets a looser policy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data: https://fastapi.tiangolo.com; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

BASE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # Stream links carry a token in their query: never send a URL of ours to anyone as a Referer.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Cross-Origin-Opener-Policy": "same-origin",
}


def security_headers(path: str = "") -> dict[str, str]:
    """The headers every response to ``path`` carries."""
    policy = DOCS_CSP if path == "/docs" or path.startswith("/docs/") else CSP
    return {**BASE_HEADERS, "Content-Security-Policy": policy}


def with_security_headers(headers: dict[str, str], path: str = "") -> dict[str, str]:
    """``headers`` plus the security headers it does not set itself."""
    present = {name.lower() for name in headers}
    extra = {k: v for k, v in security_headers(path).items() if k.lower() not in present}
    return {**headers, **extra}


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class SecurityHeadersMiddleware:
    """Pure ASGI middleware (it does not buffer, so streams stream): adds the security headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in security_headers(scope.get("path", "")).items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                message["headers"] = headers + [(k, v) for k, v in extra if k not in present]
            await send(message)

        await self.app(scope, receive, send_with_headers)
