"""The SSE generator and the hub's subscription buffer, without PostgreSQL or Redis.

A fake hub hands out real :class:`Subscription` objects; the "database" is a list of events. Each
test drives ``stream_events`` chunk by chunk, delivering events between chunks as the hub would.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from tasklift.events import sse
from tasklift.events.hub import RESYNC, REVOKED, STOP, Subscription
from tasklift.events.sse import PING, StreamPlan, stream_events
from tasklift.store.repository import Event

TASK = uuid.UUID("00000000-0000-0000-0000-000000000001")


class FakeHub:
    def __init__(self, maxsize: int = 256) -> None:
        self.loop = asyncio.get_running_loop()
        self.maxsize = maxsize
        self.subs: list[Subscription] = []

    async def subscribe(self, task_id: str, *, key_id: str | None = None) -> Subscription:
        sub = Subscription(self, task_id, self.maxsize, key_id)  # type: ignore[arg-type]
        self.subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subs.remove(sub)

    def deliver(self, item: Event | Any) -> None:
        for sub in tuple(self.subs):
            sub.deliver(item)


class Store:
    """The task's event log, as the stream's load_events / load_task see it."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.loads = 0

    def append(self, kind: str = "progress", **data: Any) -> Event:
        data.setdefault("status", "RUNNING")
        event = Event(str(TASK), len(self.events) + 1, kind, data)
        self.events.append(event)
        return event

    def row(self) -> dict[str, Any]:
        last = self.events[-1]
        return {
            "id": TASK,
            "status": last.data["status"],
            "progress": None,
            "attempts": 1,
            "cancel_requested": False,
            "result": None,
            "error": None,
            "last_seq": last.seq,
        }

    async def load_events(self, task_id: uuid.UUID, after: int) -> list[Event]:
        self.loads += 1
        # Fresh objects, as rows read from the database are (no shared encoding cache).
        return [Event(e.task_id, e.seq, e.kind, e.data) for e in self.events if e.seq > after][: sse.REPLAY_PAGE]

    async def load_task(self, task_id: uuid.UUID) -> dict[str, Any]:
        return self.row()


def plan_for(store: Store, hub: FakeHub, last_event_id: int | None = None, ping: float = 30.0) -> StreamPlan:
    return StreamPlan(
        task=store.row(),  # type: ignore[arg-type]
        last_event_id=last_event_id,
        load_events=store.load_events,
        load_task=store.load_task,  # type: ignore[arg-type]
        hub=hub,  # type: ignore[arg-type]
        ping_seconds=ping,
        retry_ms=2000,
    )


def ids(chunk: bytes) -> list[int]:
    return [int(x) for x in re.findall(rb"^id: (\d+)$", chunk, re.M)]


async def next_chunk(stream: AsyncGenerator[bytes, None], timeout: float = 2.0) -> bytes:
    return await asyncio.wait_for(stream.__anext__(), timeout)


async def opened(store: Store, hub: FakeHub, **kw: Any) -> AsyncGenerator[bytes, None]:
    """A stream past its retry line and its status snapshot."""
    stream = stream_events(plan_for(store, hub, **kw))
    assert (await next_chunk(stream)).startswith(b"retry:")
    assert ids(await next_chunk(stream)) == [store.events[-1].seq]
    return stream


async def test_a_stream_that_is_behind_gets_everything_queued_in_one_chunk_in_order() -> None:
    hub, store = FakeHub(), Store()
    store.append("status", status="RUNNING")
    stream = await opened(store, hub)
    for _ in range(5):  # the stream does not run meanwhile: it falls behind by five events
        hub.deliver(store.append(message="tick"))
    hub.deliver(store.events[2])  # a repeat (replay overlapping live delivery) is dropped

    chunk = await next_chunk(stream)
    assert ids(chunk) == [2, 3, 4, 5, 6]
    assert chunk.count(b"event: progress\n") == 5 and chunk.endswith(b"\n\n")
    assert store.loads == 0  # no gap: nothing was re-read from the database

    hub.deliver(store.append(message="tick"))
    assert ids(await next_chunk(stream)) == [7]
    await stream.aclose()
    assert hub.subs == []


async def test_a_gap_in_a_batch_sends_what_came_before_then_replays_without_duplicates() -> None:
    hub, store = FakeHub(), Store()
    store.append("status", status="RUNNING")
    stream = await opened(store, hub)
    hub.deliver(store.append())  # 2
    store.append()  # 3 and 4 never reach the hub (a lost publish)
    store.append()
    hub.deliver(store.append())  # 5: a gap
    hub.deliver(store.append())  # 6: already covered by the replay

    assert ids(await next_chunk(stream)) == [2]
    assert ids(await next_chunk(stream)) == [3, 4, 5, 6]  # one chunk per database page
    hub.deliver(store.append())
    assert ids(await next_chunk(stream)) == [7]
    await stream.aclose()


async def test_overflow_drops_the_buffer_and_the_stream_replays_every_event_once() -> None:
    hub, store = FakeHub(maxsize=4), Store()
    store.append("status", status="RUNNING")
    stream = await opened(store, hub)
    for _ in range(10):
        hub.deliver(store.append())
    assert hub.subs[0].qsize() < 4  # overflowed: RESYNC plus what came after it

    seen: list[int] = []
    while len(seen) < 10:
        seen += ids(await next_chunk(stream))
    assert seen == list(range(2, 12))
    assert store.loads == 1
    await stream.aclose()


async def test_the_terminal_event_in_a_batch_ends_the_stream_and_nothing_follows_it() -> None:
    hub, store = FakeHub(), Store()
    store.append("status", status="RUNNING")
    stream = await opened(store, hub)
    hub.deliver(store.append())
    hub.deliver(store.append("status", status="SUCCESS"))
    hub.deliver(Event(str(TASK), 4, "log", {"status": "SUCCESS", "message": "after the end"}))

    assert ids(await next_chunk(stream)) == [2, 3]
    with pytest.raises(StopAsyncIteration):
        await next_chunk(stream)
    assert hub.subs == []


@pytest.mark.parametrize("marker", [STOP, REVOKED], ids=["STOP", "REVOKED"])
async def test_stop_or_a_revoked_key_ends_the_stream_after_what_was_queued_before_it(marker: Any) -> None:
    hub, store = FakeHub(), Store()
    store.append("status", status="RUNNING")
    stream = await opened(store, hub)
    hub.deliver(store.append())
    hub.deliver(marker)
    hub.deliver(store.append())

    assert ids(await next_chunk(stream)) == [2]
    with pytest.raises(StopAsyncIteration):
        await next_chunk(stream)


async def test_a_resumed_stream_replays_after_last_event_id_then_goes_live_in_batches() -> None:
    hub, store = FakeHub(), Store()
    for _ in range(5):
        store.append()
    stream = stream_events(plan_for(store, hub, last_event_id=2))
    assert (await next_chunk(stream)).startswith(b"retry:")
    assert ids(await next_chunk(stream)) == [3, 4, 5]
    hub.deliver(store.append())
    hub.deliver(store.append())
    assert ids(await next_chunk(stream)) == [6, 7]
    await stream.aclose()


async def test_an_idle_stream_pings_and_events_postpone_the_ping() -> None:
    hub, store = FakeHub(), Store()
    store.append("status", status="RUNNING")
    stream = await opened(store, hub, ping=0.2)

    started = time.monotonic()
    assert await next_chunk(stream) == PING
    assert time.monotonic() - started >= 0.19

    # An event 0.15 s into a wait: the next ping is due 0.2 s after that event was sent, not at
    # the first wait's deadline (the one per-stream timer is re-armed, not replaced per event).
    async def later() -> None:
        await asyncio.sleep(0.15)
        hub.deliver(store.append())

    delivery = asyncio.create_task(later())
    assert ids(await next_chunk(stream)) == [2]
    await delivery
    sent = time.monotonic()
    assert await next_chunk(stream) == PING
    assert time.monotonic() - sent >= 0.19
    await stream.aclose()


async def test_subscription_get_times_out_and_a_cancelled_wait_loses_nothing() -> None:
    hub = FakeHub()
    sub = await hub.subscribe(str(TASK))
    started = time.monotonic()
    assert await sub.get(0.05) is None
    assert time.monotonic() - started >= 0.045

    waiting = asyncio.create_task(sub.get(5))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    event = Event(str(TASK), 1, "progress", {"status": "RUNNING"})
    sub.deliver(event)  # no waiter left behind to swallow it
    assert await sub.get(0) is event
    sub.close()
    assert sub._timer is None and hub.subs == []


def test_a_full_buffer_turns_into_resync_but_stop_stays_stop() -> None:
    class Loopless:
        loop = None

    sub = Subscription(Loopless(), str(TASK), 2)  # type: ignore[arg-type]
    for seq in (1, 2, 3):
        sub.deliver(Event(str(TASK), seq, "progress", {}))
    assert sub.take_all() == [RESYNC]
    sub.deliver(Event(str(TASK), 4, "progress", {}))
    sub.deliver(Event(str(TASK), 5, "progress", {}))
    sub.deliver(STOP)  # server shutdown with a full buffer: the stream must still end
    assert sub.take_all() == [STOP]
    for seq in (6, 7):
        sub.deliver(Event(str(TASK), seq, "progress", {}))
    sub.deliver(REVOKED)  # and so must a stream whose key was revoked
    assert sub.take_all() == [REVOKED]


async def test_the_api_lifespan_tunes_the_garbage_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from tasklift.settings import get_settings

    # The lifespan builds the API runtime, which connects nothing until a request needs it.
    monkeypatch.setenv("TASKLIFT_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("TASKLIFT_REDIS_URL", "redis://127.0.0.1:1/0")
    get_settings.cache_clear()

    from tasklift.http.asgi import GC_THRESHOLDS, create_app, lifespan

    before = gc.get_threshold()
    try:
        async with lifespan(create_app()) as state:
            assert gc.get_threshold() == GC_THRESHOLDS
            assert gc.get_freeze_count() > 0
            assert set(state) == {"runtime"}  # what every request's scope["state"] gets
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
        get_settings.cache_clear()
