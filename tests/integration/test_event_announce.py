"""The worker's event publish against real Redis: one round trip, in order, never raising, and it
rides out a dropped connection (the events themselves are already committed in PostgreSQL)."""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any

import pytest
import redis

from tasklift.events.bus import CHANNEL_PREFIX, EventAnnouncer
from tasklift.store.repository import Event


def events(task_id: str, *seqs: int) -> list[Event]:
    return [Event(task_id, seq, "status", {"status": "RUNNING", "n": seq, "text": "é"}) for seq in seqs]


def received(sub: Any, count: int, timeout: float = 5) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        message = sub.get_message(timeout=0.1)
        if message and message["type"] == "pmessage":
            out.append((message["channel"].decode(), json.loads(message["data"])))
    return out


@pytest.fixture
def subscriber(redis_server: Any) -> Any:
    client = redis.Redis.from_url(redis_server.url)
    sub = client.pubsub(ignore_subscribe_messages=True)
    sub.psubscribe(f"{CHANNEL_PREFIX}*")
    yield sub
    sub.close()
    client.close()


def test_a_batch_goes_out_in_order_on_each_tasks_channel(redis_server: Any, subscriber: Any) -> None:
    announcer = EventAnnouncer(redis_server.url)
    announcer.announce([*events("a", 2), *events("b", 7), *events("a", 3)])
    announcer.announce(events("c", 1))
    announcer.announce([])
    got = received(subscriber, 4)
    assert got == [
        (f"{CHANNEL_PREFIX}a", {"seq": 2, "kind": "status", "data": {"status": "RUNNING", "n": 2, "text": "é"}}),
        (f"{CHANNEL_PREFIX}b", {"seq": 7, "kind": "status", "data": {"status": "RUNNING", "n": 7, "text": "é"}}),
        (f"{CHANNEL_PREFIX}a", {"seq": 3, "kind": "status", "data": {"status": "RUNNING", "n": 3, "text": "é"}}),
        (f"{CHANNEL_PREFIX}c", {"seq": 1, "kind": "status", "data": {"status": "RUNNING", "n": 1, "text": "é"}}),
    ]
    announcer.close()


def test_a_dropped_connection_is_replaced_and_the_batch_still_delivered(redis_server: Any, subscriber: Any) -> None:
    announcer = EventAnnouncer(redis_server.url)
    announcer.announce(events("a", 1))
    assert len(received(subscriber, 1)) == 1
    admin = redis.Redis.from_url(redis_server.url)
    assert admin.client_kill_filter(_type="normal", skipme=True) >= 1  # the announcer's pooled connection
    announcer.announce(events("a", 2, 3))
    assert [data["seq"] for _, data in received(subscriber, 2)] == [2, 3]
    announcer.announce(events("a", 4))  # and the new connection is pooled and usable
    assert [data["seq"] for _, data in received(subscriber, 1)] == [4]
    admin.close()
    announcer.close()


def test_an_unreachable_redis_is_logged_not_raised_and_does_not_hang(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    announcer = EventAnnouncer(f"redis://127.0.0.1:{port}/0")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="tasklift.events.bus"):
        announcer.announce(events("a", 1, 2))
    assert time.monotonic() - started < 3
    assert "event publish failed" in caplog.text


class Recording:
    """An EventAnnouncer stand-in that records each round trip (and can be made slow or failing)."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.delay, self.fail = delay, fail

    def announce(self, events: Any) -> None:
        time.sleep(self.delay)
        self.batches.append([e.seq for e in events])
        if self.fail:
            raise RuntimeError("boom")


def test_the_worker_announcer_returns_at_once_sends_in_order_and_coalesces() -> None:
    from tasklift.queue.runtime import DeferredAnnouncer

    inner = Recording(delay=0.2)
    announcer = DeferredAnnouncer(inner)  # type: ignore[arg-type]
    started = time.monotonic()
    announcer.announce(events("a", 1, 2))
    time.sleep(0.05)  # the thread is sending 1, 2 now
    announcer.announce(events("a", 3))
    announcer.announce(events("b", 4))
    announcer.announce([])
    assert time.monotonic() - started < 0.15  # nobody waited for Redis
    assert announcer.flush(timeout=5)
    assert inner.batches == [[1, 2], [3, 4]]  # in order; what queued up meanwhile went out in one trip
    assert announcer.flush(timeout=0)  # nothing pending


def test_the_worker_announcer_survives_a_failing_send_and_flush_has_a_deadline() -> None:
    from tasklift.queue.runtime import DeferredAnnouncer

    inner = Recording(fail=True)
    announcer = DeferredAnnouncer(inner)  # type: ignore[arg-type]
    announcer.announce(events("a", 1))
    assert announcer.flush(timeout=5)
    inner.fail, inner.delay = False, 1.0
    announcer.announce(events("a", 2))
    assert not announcer.flush(timeout=0.1)  # still sending: flush gives up at its deadline
    assert announcer.flush(timeout=5)
    assert inner.batches == [[1], [2]]


def test_the_worker_announcer_delivers_to_redis(redis_server: Any, subscriber: Any) -> None:
    from tasklift.queue.runtime import DeferredAnnouncer

    announcer = DeferredAnnouncer(EventAnnouncer(redis_server.url))
    for seq in range(1, 51):
        announcer.announce(events("a", seq))
    assert announcer.flush(timeout=5)
    assert [data["seq"] for _, data in received(subscriber, 50)] == list(range(1, 51))


def test_a_child_about_to_exit_sends_what_is_queued(
    tasklift_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    import dataclasses

    from tasklift.queue import runtime
    from tasklift.settings import get_settings

    runtime.close(timeout=0)  # no runtime in this process: nothing to do
    inner = Recording(delay=0.2)
    built = runtime.WorkerRuntime.open(get_settings())
    runtime.install(dataclasses.replace(built, events=runtime.DeferredAnnouncer(inner)))  # type: ignore[arg-type]
    runtime.current().events.announce(events("a", 1, 2))
    runtime.close(timeout=5)  # what worker_process_shutdown calls
    assert inner.batches == [[1, 2]]
    with pytest.raises(runtime.RuntimeMissing):
        runtime.current()  # closed and forgotten
    inner.delay = 1.0
    late = dataclasses.replace(built, events=runtime.DeferredAnnouncer(inner))  # type: ignore[arg-type]
    late.events.announce(events("a", 3))
    with caplog.at_level(logging.WARNING, logger="tasklift.queue.runtime"):
        late.close(timeout=0.1)
    assert "still unsent" in caplog.text
    assert late.events.flush(timeout=5)
