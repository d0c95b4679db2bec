"""Output streams (``ctx.emit``) with a real worker, API and PostgreSQL: 1,000 chunks/s from one task
reach many concurrent SSE streams in order with nothing missing or doubled, also a stream resumed
with Last-Event-ID and a bounded-window stream; they are coalesced into few rows; GET /output pages
by index; an attempt that lost its lease has its chunks refused."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tasklift.events.bus import EventAnnouncer
from tasklift.settings import get_settings, redis_url
from tasklift.store import leases
from tasklift.store.db import make_engine
from tasklift.tasks.context import LeaseLost, TaskContext
from tests.conftest import wait_for_status
from tests.hosts.eventsource import EventSource, SseEvent
from tests.support.store import insert_tasks, new_task

MODULES = json.dumps(["tests.support.task_types", "tests.support.step_types"])
CHUNKS = 2000  #: two seconds at 1,000 chunks/s


@pytest.fixture(autouse=True)
def step_types(tasklift_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tasklift_env["TASKLIFT_TASK_MODULES"] = MODULES
    monkeypatch.setenv("TASKLIFT_TASK_MODULES", MODULES)
    get_settings.cache_clear()


def chunks_of(events: list[SseEvent]) -> list[tuple[int, Any]]:
    """(index, chunk) of every chunk the ``output`` events carried, in the order received."""
    out = []
    for event in events:
        if event.event == "output":
            data = json.loads(event.data)
            assert data["last"] == data["first"] + len(data["chunks"]) - 1
            out += [(data["first"] + i, chunk) for i, chunk in enumerate(data["chunks"])]
    return out


EXPECTED = [(i + 1, f"tok{i} ") for i in range(CHUNKS)]


def follow(url: str, results: list[list[SseEvent]], last_event_id: str | None = None) -> threading.Thread:
    source = EventSource(url, last_event_id=last_event_id, deadline=60)
    thread = threading.Thread(target=lambda: results.append(source.run()), daemon=True)
    thread.start()
    return thread


def test_1000_chunks_a_second_reach_100_streams_and_a_resumed_one_in_order_once(
    api: str, client: httpx.Client, db: sa.Engine, start_worker: Any
) -> None:
    start_worker(concurrency=1)
    task_id = client.post("/tasks", json={"task_type": "test_emit", "count": CHUNKS, "rate": 1000}).json()["task_id"]
    url = f"{api}/tasks/{task_id}/stream"
    # `fresh` opens without an id: it starts from a status snapshot and gets the chunks emitted after
    # it (the earlier ones are GET /output's). The 100 below ask for the whole log (Last-Event-ID: 0).
    fresh: list[list[SseEvent]] = []
    threads = [follow(url, fresh)]
    # The client that resumes saw the first three batches, then lost its connection: it comes back
    # with Last-Event-ID while the task still emits.
    deadline = time.monotonic() + 30
    seqs: list[int] = []
    while len(seqs) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
        with db.connect() as conn:
            seqs = list(
                conn.execute(
                    sa.text("SELECT seq FROM task_events WHERE task_id = :t AND kind = 'output' ORDER BY seq LIMIT 3"),
                    {"t": task_id},
                ).scalars()
            )
    resumed: list[list[SseEvent]] = []
    threads.append(follow(url, resumed, last_event_id=str(seqs[2])))
    with db.connect() as conn:
        status = conn.execute(sa.text("SELECT status FROM tasks WHERE id = :t"), {"t": task_id}).scalar()
    assert status == "RUNNING", "the resumed stream joins while the task still emits"
    results: list[list[SseEvent]] = []
    threads += [follow(url, results, last_event_id="0") for _ in range(100)]
    for thread in threads:
        thread.join(90)
    assert len(results) == 100 and len(resumed) == 1 and len(fresh) == 1
    fresh_chunks = chunks_of(fresh[0])
    assert fresh_chunks and fresh_chunks == EXPECTED[len(EXPECTED) - len(fresh_chunks) :], "a suffix, in order"
    for events in results:
        assert chunks_of(events) == EXPECTED
        ids = [int(e.id) for e in events if e.id is not None]
        assert ids == sorted(set(ids)), "event ids strictly increase"
        assert events[-1].event == "status" and json.loads(events[-1].data)["status"] == "SUCCESS"
    with db.connect() as conn:
        first_three = conn.execute(
            sa.text("SELECT data FROM task_events WHERE task_id = :t AND seq = :s"), {"t": task_id, "s": seqs[2]}
        ).scalar()
        rows = conn.execute(
            sa.text("SELECT count(*) FROM task_events WHERE task_id = :t AND kind = 'output'"), {"t": task_id}
        ).scalar()
    after = first_three["last"]
    assert chunks_of(resumed[0]) == EXPECTED[after:], "the resumed stream got exactly what came after its id"
    assert all(int(e.id) > seqs[2] for e in resumed[0] if e.id)
    # Coalesced: a batch per ~50 ms over ~2 s, not a row per chunk.
    assert rows <= CHUNKS / 20, f"{rows} output rows for {CHUNKS} chunks"


def test_a_bounded_window_stream_gets_the_same_chunks(
    api: str, client: httpx.Client, start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKLIFT_SSE_WINDOW_SECONDS", "0.4")  # what Lambda and buffering hosts run
    get_settings.cache_clear()
    start_worker(concurrency=1)
    task_id = client.post("/tasks", json={"task_type": "test_emit", "count": CHUNKS, "rate": 1000}).json()["task_id"]
    source = EventSource(f"{api}/tasks/{task_id}/stream", last_event_id="0", deadline=60)
    events = source.run()
    assert len(source.statuses) > 3, "the stream came in several windows"
    assert chunks_of(events) == EXPECTED


def test_get_output_pages_by_index_and_refuses_bad_input(client: httpx.Client, start_worker: Any) -> None:
    start_worker(concurrency=1)
    task_id = client.post("/tasks", json={"task_type": "test_emit", "count": 1234, "rate": 5000, "json_chunks": True})
    task_id = task_id.json()["task_id"]
    wait_for_status(client, task_id, "SUCCESS")
    seen: list[dict[str, Any]] = []
    after, pages = 0, 0
    while True:
        page = client.get(f"/tasks/{task_id}/output", params={"after": after, "limit": 300}).json()
        seen += page["chunks"]
        pages += 1
        after = page["next_after"]
        if page["complete"]:
            break
        assert len(page["chunks"]) == 300
    assert pages == 5
    assert [c["index"] for c in seen] == list(range(1, 1235))
    assert [c["data"] for c in seen] == [{"i": i} for i in range(1234)]
    middle = client.get(f"/tasks/{task_id}/output", params={"after": 1000, "limit": 3}).json()
    assert [c["index"] for c in middle["chunks"]] == [1001, 1002, 1003] and not middle["complete"]
    end = client.get(f"/tasks/{task_id}/output", params={"after": 5000}).json()
    assert end == {"task_id": task_id, "status": "SUCCESS", "chunks": [], "next_after": 5000, "complete": True}
    for params in ({"after": "-1"}, {"after": "x"}, {"limit": "0"}, {"limit": "1001"}):
        bad = client.get(f"/tasks/{task_id}/output", params=params)
        assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    assert client.get(f"/tasks/{uuid.uuid4()}/output").status_code == 404
    assert client.get("/tasks/not-a-uuid/output").status_code in (404, 422)


def test_get_output_pages_of_large_chunks_stay_within_the_page_bytes(client: httpx.Client, start_worker: Any) -> None:
    from tasklift.http.output import PAGE_BYTES

    start_worker(concurrency=1)
    pad = 100 * 1024
    task_id = client.post("/tasks", json={"task_type": "test_emit", "count": 100, "rate": 5000, "pad": pad})
    task_id = task_id.json()["task_id"]
    wait_for_status(client, task_id, "SUCCESS")
    sizes, seen, after = [], [], 0
    while True:
        page = client.get(f"/tasks/{task_id}/output", params={"after": after, "limit": 1000}).json()
        sizes.append(len(page["chunks"]))
        seen += [c["index"] for c in page["chunks"]]
        after = page["next_after"]
        if page["complete"]:
            break
    assert seen == list(range(1, 101))
    assert sizes == [PAGE_BYTES // (pad + 12)] * 2 + [100 - 2 * (PAGE_BYTES // (pad + 12))], sizes


def test_chunks_of_an_attempt_that_lost_its_lease_are_refused(db: sa.Engine, tasklift_env: dict[str, str]) -> None:
    writer = make_engine(tasklift_env["TASKLIFT_DATABASE_URL"], 5, autocommit=True)
    try:
        [task_id] = insert_tasks(new_task("test_noop", "cpu"))
        with writer.connect() as conn:
            assert leases.take_lease(conn, task_id, "w1", 30) is not None

        def context(attempt: int) -> TaskContext:
            return TaskContext(
                task_id=task_id, attempt=attempt, task_type="test_noop", engine=db, writer=writer,
                announcer=EventAnnouncer(redis_url()), lease_seconds=30, progress_interval=0.1, output_interval=0.02,
            )  # fmt: skip

        stale = context(1)
        stale.emit("one")
        stale.emit("two")
        stale.close_output()
        with writer.begin() as conn:  # the reaper re-dispatches the expired lease; another worker takes it
            assert leases.recover_expired(conn, task_id, 1, max_redispatches=5) is not None
        with writer.connect() as conn:
            assert leases.take_lease(conn, task_id, "w2", 30) is not None
        stale = context(1)
        stale.emit("stale")
        stale.close_output()  # the batch is refused by the fence
        with pytest.raises(LeaseLost):
            stale.emit("more")
        current = context(2)
        current.emit("three")
        current.close_output()
        with db.connect() as conn:
            batches = conn.execute(
                sa.text("SELECT data FROM task_events WHERE task_id = :t AND kind = 'output' ORDER BY seq"),
                {"t": task_id},
            ).scalars()
            stored = [(b["attempt"], b["first"], b["chunks"]) for b in batches]
        assert stored == [(1, 1, ["one", "two"]), (2, 3, ["three"])]
    finally:
        writer.dispose()


def test_the_python_client_follows_output_and_pages_it(api: str, client: httpx.Client, start_worker: Any) -> None:
    from tasklift.client import TaskliftClient

    start_worker(concurrency=1)
    with TaskliftClient(api) as tl:
        task = tl.submit("test_emit", count=500, rate=1000)
        assert list(tl.follow_output(task.task_id)) == EXPECTED[:500]
        page = tl.output(task.task_id, after=498)
    assert [c["data"] for c in page["chunks"]] == ["tok498 ", "tok499 "] and page["complete"]


def test_cli_follow_prints_the_output_on_stdout(api: str, tasklift_env: dict[str, str], start_worker: Any) -> None:
    from tests.integration.test_client import _cli

    start_worker(concurrency=1)
    done = _cli("submit", "test_emit", "-f", "count=300", "-f", "rate=1000", "--follow", "--url", api, env=tasklift_env)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "".join(f"tok{i} " for i in range(300)) in done.stdout.replace("\n", "")
    assert '"emitted": 300' in done.stdout
