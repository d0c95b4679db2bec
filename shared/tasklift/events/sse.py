"""One task's Server-Sent Events stream: snapshot or replay from PostgreSQL, then live from the hub.

The order of operations is what makes it gap-free: subscribe to the hub *first*, then read the
database, then deliver live events, dropping any whose sequence number was already sent and
re-reading the database whenever a sequence number is skipped or the hub asks for a resync.

Two modes, one generator:

- **live** (ASGI, Azure Functions with HTTP streams): runs until the terminal event, with a
  ``: ping`` comment every ``sse_ping_seconds``;
- **bounded window** (Mangum on Lambda, hosts that buffer): returns what arrives within
  ``sse_window_seconds`` and ends with a short ``retry:``; EventSource reconnects with
  ``Last-Event-ID`` and so sees the same events in the same order.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tasklift.blobs import claims
from tasklift.events.hub import RESYNC, REVOKED, STOP, EventHub, _Marker
from tasklift.store.repository import Event, status_data
from tasklift.tasks.states import TERMINAL, TaskStatus

WINDOW_RETRY_MS = 250  #: reconnect delay after a bounded-window response
REPLAY_PAGE = 1000  #: events read from the database per query when catching up


def public_data(event: Event) -> dict[str, Any]:
    """The SSE ``data`` object of ``event``: every one carries ``task_id`` and ``status``.

    A result kept in blob storage is stored in the event as its reference (the claim check); clients
    see ``result: null`` and the ``result_url`` that serves it, as in the task resource.
    """
    data = {"task_id": event.task_id, **event.data}
    if claims.is_ref(data.get("result")):
        data.update(result=None, result_url=claims.result_url(event.task_id))
    return data


def encode_event(event: Event) -> bytes:
    """``id`` / ``event`` / ``data`` lines of one SSE event (data is one line of JSON), encoded once."""
    if event.encoded is None:
        # sort_keys: the same event reads identically whether it came live (Redis) or replayed (JSONB).
        data = json.dumps(public_data(event), separators=(",", ":"), ensure_ascii=False, default=str, sort_keys=True)
        if not data.isascii():  # characters str.splitlines() (and so many SSE readers) split on, escaped
            data = data.translate(_LINE_BREAKS)
        object.__setattr__(event, "encoded", f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n".encode())
    assert event.encoded is not None
    return event.encoded


#: Characters other than CR and LF that ``str.splitlines()`` breaks lines at and JSON leaves raw
#: (NEL, LINE and PARAGRAPH SEPARATOR): a ``data:`` line holding one would be cut in two by such a
#: reader. Inside JSON strings, their ``\\u`` escapes read back the same.
_LINE_BREAKS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def encode_retry(ms: int) -> bytes:
    return f"retry: {ms}\n\n".encode()


PING = b": ping\n\n"


def is_terminal(event: Event) -> bool:
    """True for the status event that ends a task's stream."""
    return event.kind == "status" and event.data.get("status") in {s.value for s in TERMINAL}


def snapshot(row: Mapping[str, Any]) -> Event:
    """A ``status`` event reflecting the task as stored, with the id of the latest event it covers."""
    return Event(str(row["id"]), row["last_seq"], "status", status_data(row))


@dataclass
class StreamPlan:
    """What a stream needs, resolved before the response starts (so errors can still be 404)."""

    task: Mapping[str, Any]
    last_event_id: int | None
    load_events: Callable[[uuid.UUID, int], Awaitable[list[Event]]]  #: the store's replay, on the loop
    load_task: Callable[[uuid.UUID], Awaitable[Mapping[str, Any] | None]]  #: the store's read, on the loop
    hub: EventHub
    ping_seconds: float
    retry_ms: int
    window_seconds: float | None = None
    key_id: str | None = None  #: the API key the stream was opened with: revoking it ends the stream

    @property
    def finished_before(self) -> bool:
        """The client already has the terminal event (it reconnected after the end): answer 204."""
        return (
            self.last_event_id is not None
            and TaskStatus(self.task["status"]) in TERMINAL
            and self.last_event_id >= self.task["last_seq"]
        )


async def stream_events(plan: StreamPlan) -> AsyncGenerator[bytes, None]:
    """Yield the encoded SSE stream for ``plan`` (see the module docstring)."""
    async with contextlib.aclosing(_events(plan)) as events:
        async for chunk in events:
            yield chunk
    if plan.window_seconds is not None:
        yield encode_retry(WINDOW_RETRY_MS)


async def _events(plan: StreamPlan) -> AsyncGenerator[bytes, None]:
    """The stream as body chunks. Whatever is queued when the stream gets to run goes out as ONE
    chunk (one ASGI send, one socket write): a stream that fell behind catches up in a single
    write instead of paying the per-send cost once per event, in order, each event with its id."""
    task_id = plan.task["id"]
    deadline = None if plan.window_seconds is None else time.monotonic() + plan.window_seconds
    yield encode_retry(WINDOW_RETRY_MS if deadline is not None else plan.retry_ms)
    sub = await plan.hub.subscribe(str(task_id), key_id=plan.key_id)
    try:
        cursor = _Cursor(plan.last_event_id or 0)
        if plan.last_event_id is None:
            # Re-read the task now that we are subscribed, so nothing falls between the snapshot and
            # the first live event (a later gap is caught by its sequence number).
            row = await plan.load_task(task_id) or plan.task
            yield cursor.add(snapshot(row))
        else:
            async for chunk in _replay_chunks(plan, task_id, cursor):
                yield chunk
        while not cursor.done:
            if not sub.qsize():
                timeout = plan.ping_seconds
                if deadline is not None:
                    timeout = min(timeout, deadline - time.monotonic())
                    if timeout <= 0:
                        return
                sub.seen = cursor.last  # what the hub's database check compares with the stored log
                if not await sub.wait(timeout):
                    if deadline is None:
                        yield PING
                    continue
            items = sub.take_all()
            chunk, rest = cursor.take_in_order(items)
            if chunk:
                yield chunk
            if rest < len(items) and not cursor.done:  # a gap, a RESYNC or STOP: the general path
                async for chunk in _live_chunks(plan, task_id, cursor, items[rest:]):
                    yield chunk
    finally:
        sub.close()


async def _live_chunks(
    plan: StreamPlan, task_id: uuid.UUID, cursor: _Cursor, items: list[Event | _Marker]
) -> AsyncIterator[bytes]:
    """``items`` from the hub as few chunks as possible: one, unless a gap or RESYNC needs a replay."""
    chunk: list[bytes] = []
    for item in items:
        if item is STOP or item is REVOKED:  # server shutting down (EventSource resumes elsewhere), or
            cursor.done = True  # the stream's API key revoked (its reconnect is 401): end cleanly
        elif isinstance(item, Event) and item.seq == cursor.last + 1:
            chunk.append(cursor.add(item))
        elif item is RESYNC or (isinstance(item, Event) and item.seq > cursor.last + 1):
            if chunk:  # what came before the gap goes first
                yield b"".join(chunk)
                chunk = []
            async for replayed in _replay_chunks(plan, task_id, cursor):
                yield replayed
        # else: already sent (the replay overlapped live delivery)
        if cursor.done:
            break
    if chunk:
        yield b"".join(chunk)


class _Cursor:
    """The last sequence number sent, and whether the terminal event was among them."""

    __slots__ = ("last", "done")

    def __init__(self, last: int) -> None:
        self.last = last
        self.done = False

    def take_in_order(self, items: list[Event | _Marker]) -> tuple[bytes, int]:
        """The bytes of the leading run of ``items`` that needs no replay (the usual case: all of
        them), and the index of the first item not taken."""
        chunk: list[bytes] = []
        for index, item in enumerate(items):
            if not isinstance(item, Event) or item.seq > self.last + 1:
                return b"".join(chunk), index
            if item.seq == self.last + 1:
                chunk.append(self.add(item))
                if self.done:
                    return b"".join(chunk), index + 1
        return b"".join(chunk), len(items)

    def add(self, event: Event) -> bytes:
        """Account ``event`` as sent (ids strictly increase by construction) and return its bytes."""
        self.last = event.seq
        if is_terminal(event):
            self.done = True
        return encode_event(event)


async def _replay_chunks(plan: StreamPlan, task_id: uuid.UUID, cursor: _Cursor) -> AsyncIterator[bytes]:
    """Every stored event after ``cursor.last`` up to the terminal one, one chunk per database page."""
    async for page in _replay_pages(plan, task_id, cursor.last):
        chunk: list[bytes] = []
        for event in page:
            if event.seq <= cursor.last:
                continue
            chunk.append(cursor.add(event))
            if cursor.done:
                break
        if chunk:
            yield b"".join(chunk)
        if cursor.done:
            return


async def _replay_pages(plan: StreamPlan, task_id: uuid.UUID, after: int) -> AsyncIterator[list[Event]]:
    """Every stored event after ``after``, read from the database page by page."""
    while True:
        page = await plan.load_events(task_id, after)
        if page:
            yield page
        if len(page) < REPLAY_PAGE:
            return
        after = page[-1].seq
