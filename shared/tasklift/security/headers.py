"""Security headers on every response, and the ASGI middleware that adds them.

One Content-Security-Policy serves the API and the dashboard at ``/``: the dashboard loads only
its own ``/static`` script and style, an inline SVG icon (``data:``) and talks to its own origin
(fetch and EventSource are ``connect-src``). ``frame-ancestors 'none'`` (which a ``<meta>`` CSP
cannot express) stops click-jacking. ``/docs`` (Swagger UI) and ``/redoc`` come from packaged copies
too (tasklift.http.pages); they only get inline styles and a blob: worker beyond the dashboard's policy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: Swagger UI (/docs) and ReDoc (/redoc), served from packaged copies: scripts only from our origin,
#: as on the dashboard. Both set element styles and ReDoc injects <style> tags (styled-components),
#: so styles may be inline; ReDoc's search index runs in a worker it builds from a blob: URL.
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
    "worker-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
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
    policy = DOCS_CSP if path in ("/docs", "/redoc") or path.startswith("/docs/") else CSP
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
