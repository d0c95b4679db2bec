"""A browser-like EventSource client (WHATWG HTML, "Server-sent events"), for the stream tests.

It does what a browser does and nothing more: sends ``Accept: text/event-stream`` and, on a
reconnection, ``Last-Event-ID``; parses ``id``/``event``/``data``/``retry`` fields and comments;
when the connection closes it waits the last ``retry:`` delay and reconnects; a 204 ends it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx


@dataclass(frozen=True)
class SseEvent:
    """One dispatched event."""

    id: str | None
    event: str
    data: str


@dataclass
class EventSource:
    """Follow ``url`` until the server answers 204 (the stream is over) or ``deadline`` seconds pass."""

    url: str
    last_event_id: str | None = None
    deadline: float = 60.0
    retry_ms: int = 3000  #: the spec's suggested default, until the server sends ``retry:``
    events: list[SseEvent] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  #: the status of every connection made
    opened: threading.Event = field(default_factory=threading.Event)  #: set once the first event arrived

    def run(self) -> list[SseEvent]:
        ends = time.monotonic() + self.deadline
        with httpx.Client(timeout=httpx.Timeout(10, read=self.deadline)) as client:
            while time.monotonic() < ends:
                headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
                if self.last_event_id is not None:
                    headers["Last-Event-ID"] = self.last_event_id
                with client.stream("GET", self.url, headers=headers) as resp:
                    self.statuses.append(resp.status_code)
                    if resp.status_code == 204:
                        return self.events
                    content_type = resp.headers.get("content-type", "")
                    if resp.status_code != 200 or not content_type.startswith("text/event-stream"):
                        raise AssertionError(f"EventSource fails the connection: {resp.status_code} {content_type}")
                    self._read(resp)
                time.sleep(self.retry_ms / 1000)  # the reconnection delay the server asked for
        raise AssertionError(f"the stream did not end within {self.deadline} s; got {self.events}")

    def _read(self, resp: httpx.Response) -> None:
        event_type, data, event_id = "", [], self.last_event_id
        for line in resp.iter_lines():
            if line == "":  # dispatch
                self.last_event_id = event_id
                if data:
                    self.events.append(SseEvent(event_id, event_type or "message", "\n".join(data)))
                    self.opened.set()
                event_type, data = "", []
                continue
            if line.startswith(":"):
                continue  # a comment (": ping")
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event_type = value
            elif name == "data":
                data.append(value)
            elif name == "id" and "\0" not in value:
                event_id = value
            elif name == "retry" and value.isdigit():
                self.retry_ms = int(value)
