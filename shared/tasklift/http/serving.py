"""How every HTTP server we run is configured: bounded request heads and read timeouts.

uvicorn bounds neither by itself: with httptools (its default when installed) a 16 MB header is
read in full, and a connection that never completes its request head (slow loris) is never
closed, since uvicorn's only timer is the keep-alive one, armed after a response. The protocol
class here adds, per connection:

- a limit on the request head: request line + headers at most ``max_header_bytes``, counted
  while it arrives (431 and close);
- a head timeout: the request head must be complete ``header_timeout_seconds`` after the
  connection opens or the request's first byte arrives (408 and close);
- a body timeout: the body must be complete ``body_timeout_seconds`` after the head (close).

The count of headers is checked by the core itself (:func:`tasklift.http.routes.handle`),
and so on every host. ``tasklift api`` and the local emulators (``tasklift_local.serve``) start
uvicorn with :func:`uvicorn_options`; docs/security.md lists the settings.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tasklift.settings import Settings, get_settings

log = logging.getLogger(__name__)

_408 = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_431_BODY = (
    b'{"type":"https://tasklift.dev/problems/request-header-fields-too-large",'
    b'"title":"Request Header Fields Too Large","status":431,'
    b'"detail":"the request line and headers exceed max_header_bytes"}'
)
_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/problem+json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_431_BODY), _431_BODY)
)


class _Deadlines:
    """One timer per connection: the head or the body deadline, whichever applies now."""

    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    tasklift_timer: asyncio.TimerHandle | None = None
    tasklift_phase: str | None = None

    def tasklift_arm(self, phase: str) -> None:
        if self.tasklift_phase == phase:
            return
        self.tasklift_disarm()
        settings = get_settings()
        seconds = settings.header_timeout_seconds if phase == "head" else settings.body_timeout_seconds
        self.tasklift_phase = phase
        self.tasklift_timer = self.loop.call_later(seconds, self.tasklift_expire)

    def tasklift_disarm(self) -> None:
        if self.tasklift_timer is not None:
            self.tasklift_timer.cancel()
        self.tasklift_timer = None
        self.tasklift_phase = None

    def tasklift_expire(self) -> None:
        phase, self.tasklift_timer, self.tasklift_phase = self.tasklift_phase, None, None
        if self.transport.is_closing():
            return
        log.info("closed a connection whose request %s did not arrive in time", phase)
        if phase == "head":  # nothing was answered yet: say why
            self.transport.write(_408)
        self.transport.close()


class BoundedHttpToolsProtocol(_Deadlines, HttpToolsProtocol):
    """uvicorn's httptools protocol with a head size limit and the head / body deadlines."""

    tasklift_head_bytes = 0  #: of the current head, as the parser reports it
    tasklift_raw_bytes = 0  #: received while the head is incomplete (bounds the parser's buffering)
    tasklift_refused = False

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.tasklift_phase == "head" and not self.transport.is_closing():
            # httptools buffers a header until it is complete: a 16 MB one would be read whole
            self.tasklift_raw_bytes += len(data)
            if self.tasklift_raw_bytes > get_settings().max_header_bytes:
                self.tasklift_refused = True
                self.send_400_response("")

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.tasklift_arm("head")  # a connection that sends nothing is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self.tasklift_disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.tasklift_head_bytes = 0
        self.tasklift_arm("head")

    def tasklift_count(self, size: int) -> None:
        self.tasklift_head_bytes += size
        if self.tasklift_head_bytes > get_settings().max_header_bytes:
            self.tasklift_refused = True
            raise ValueError("request head too large")  # the parser stops: send_400_response follows

    def on_url(self, url: bytes) -> None:
        self.tasklift_count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.tasklift_count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.tasklift_raw_bytes = 0
        self.tasklift_arm("body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.tasklift_disarm()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if not self.tasklift_refused:
            super().send_400_response(msg)
            return
        self.tasklift_disarm()
        self.transport.write(_431)
        self.transport.close()


def uvicorn_options(settings: Settings | None = None) -> dict[str, Any]:
    """The keyword arguments every ``uvicorn.run`` of ours passes (with its app, host and port)."""
    settings = settings or get_settings()
    return {
        "http": BoundedHttpToolsProtocol,  # httptools comes with uvicorn[standard], a dependency
        "timeout_keep_alive": settings.keep_alive_seconds,
    }
