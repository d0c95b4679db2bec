"""Per-principal limits: request rate and open streams (counted in Redis), unfinished tasks (PostgreSQL)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import httpx
import pytest
import redis

from tasklift.embedded import free_port
from tasklift.security.limits import LimitStore
from tests.conftest import Proc
from tests.security.conftest import submit


def test_requests_over_the_rate_limit_are_429_with_retry_after(configure, alice: httpx.Client) -> None:
    configure(rate_limit_requests=5, rate_limit_window_seconds=30)
    assert [alice.get("/tasks").status_code for _ in range(5)] == [200] * 5
    refused = alice.get("/tasks")
    assert refused.status_code == 429 and refused.headers["content-type"] == "application/problem+json"
    assert 1 <= int(refused.headers["retry-after"]) <= 30


def test_each_principal_has_its_own_request_budget(configure, alice: httpx.Client, bob: httpx.Client) -> None:
    configure(rate_limit_requests=3)
    for _ in range(3):
        alice.get("/tasks")
    assert alice.get("/tasks").status_code == 429
    assert bob.get("/tasks").status_code == 200


def test_the_request_budget_is_shared_by_every_api_process(
    configure, make_key: Callable[..., str], spawn: Callable[..., Proc]
) -> None:
    configure(rate_limit_requests=6)
    key = make_key("alice")
    urls = []
    for n in range(2):
        port = free_port()
        spawn(f"api{n}", "api", "--port", str(port)).wait_for_output("Uvicorn running", timeout=30)
        urls.append(f"http://127.0.0.1:{port}")
    headers = {"Authorization": f"Bearer {key}"}
    answers = [httpx.get(f"{urls[n % 2]}/tasks", headers=headers).status_code for n in range(8)]
    assert answers == [200] * 6 + [429] * 2


@contextmanager
def _open_stream(url: str) -> Iterator[httpx.Response]:
    """A stream held open (its snapshot read) until the block ends."""
    with httpx.stream("GET", url, timeout=10) as resp:
        # Keep the iterator referenced: dropping a half-read iter_text() closes the response.
        chunks = resp.iter_text()
        if resp.status_code == 200:
            for chunk in chunks:
                if "event: status" in chunk:
                    break
        yield resp
        del chunks


def test_open_streams_over_the_limit_are_429_until_one_closes(secure_api: str, alice: httpx.Client) -> None:
    link = secure_api + submit(alice)["links"]["stream"]  # the suite allows 2 open streams per principal
    with ExitStack() as stack:
        assert [stack.enter_context(_open_stream(link)).status_code for _ in range(2)] == [200, 200]
        with _open_stream(link) as third:
            assert third.status_code == 429 and third.headers["retry-after"]
    deadline = time.monotonic() + 5  # the server notices the disconnects and releases the slots
    while True:
        with _open_stream(link) as again:
            if again.status_code == 200 or time.monotonic() > deadline:
                break
        time.sleep(0.1)
    assert again.status_code == 200


def test_a_stream_that_finished_before_it_opened_holds_no_slot(secure_api: str, alice, redis_server) -> None:
    task = submit(alice)
    alice.delete(f"/tasks/{task['task_id']}")  # CANCELLED: reconnecting after the end is a 204
    for _ in range(4):
        resp = httpx.get(secure_api + task["links"]["stream"], headers={"Last-Event-ID": "999"})
        assert resp.status_code == 204
    assert LimitStore(redis_server.url).open_streams("key:alice") == 0


def test_slots_of_a_crashed_process_expire_with_their_lease(redis_server) -> None:
    """A process that dies never releases its slots; their lease frees them."""
    store = LimitStore(redis_server.url)
    assert store.open_stream("key:crash", limit=2, lease=1) is not None
    assert store.open_stream("key:crash", limit=2, lease=1) is not None
    assert store.open_stream("key:crash", limit=2, lease=1) is None
    time.sleep(1.2)
    assert store.open_streams("key:crash") == 0
    assert store.open_stream("key:crash", limit=2, lease=1) is not None


def test_a_renewed_slot_outlives_its_first_lease(redis_server) -> None:
    store = LimitStore(redis_server.url)
    slot = store.open_stream("key:long", limit=1, lease=1)
    assert slot is not None
    for _ in range(3):
        time.sleep(0.5)
        slot.renew()
    assert store.open_streams("key:long") == 1
    slot.release()
    assert store.open_streams("key:long") == 0


def test_unfinished_tasks_over_the_limit_are_429_at_submit(configure, alice: httpx.Client, bob) -> None:
    configure(max_active_tasks=3)
    ids = [submit(alice)["task_id"] for _ in range(3)]
    refused = alice.post("/tasks", json={"task_type": "test_noop"})
    assert refused.status_code == 429 and refused.headers["retry-after"]
    batch = alice.post("/tasks:batch", json={"items": [{"task": {"task_type": "test_noop"}}]})
    assert batch.status_code == 429 and batch.headers["retry-after"]  # the same limit for a batch
    assert len(alice.get("/tasks").json()["items"]) == 3  # nothing was created
    submit(bob)  # another principal is not affected
    alice.delete(f"/tasks/{ids[0]}")  # a finished task no longer counts
    submit(alice)


def test_an_oversized_body_is_413_for_an_authenticated_caller(alice: httpx.Client) -> None:
    resp = alice.post("/tasks", json={"vector_data": [0.5] * 300_000})
    assert resp.status_code == 413


def test_limits_fail_open_while_redis_is_unreachable() -> None:
    """Redis is also the broker: accepted work must keep being accepted while it is away."""
    store = LimitStore(f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    for _ in range(10):
        assert store.hit("key:alice", limit=1, window=60).allowed
        assert store.open_stream("key:alice", limit=1, lease=30) is not None
    assert time.monotonic() - started < 5  # the circuit breaker stops waiting on a dead server


def test_the_rate_window_is_counted_atomically_under_concurrency(redis_server) -> None:
    store = LimitStore(redis_server.url)
    allowed: list[bool] = []

    def hit() -> None:
        for _ in range(25):
            allowed.append(store.hit("key:burst", limit=50, window=60).allowed)

    threads = [threading.Thread(target=hit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert allowed.count(True) == 50 and allowed.count(False) == 50
    assert int(redis.Redis.from_url(redis_server.url).ttl("tasklift:limits:rate:key:burst")) > 0


@pytest.mark.parametrize("limit", [0])
def test_a_limit_of_zero_turns_the_limit_off(configure, alice: httpx.Client, limit: int) -> None:
    configure(rate_limit_requests=limit, max_active_tasks=limit)
    for _ in range(5):
        submit(alice)
