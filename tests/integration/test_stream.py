"""GET /tasks/{id}/stream and long polling, against real processes (API.md, SSE section)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tasklift.client import StreamEvent, TaskliftClient
from tasklift.embedded import EmbeddedRedis, free_port
from tests.conftest import wait_for_status


def submit(http: httpx.Client, **body: Any) -> str:
    resp = http.post("/tasks", json=body)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["task_id"])


def stored_events(db: sa.Engine, task_id: str) -> list[tuple[int, str]]:
    with db.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT seq, kind FROM task_events WHERE task_id = :t ORDER BY seq"), {"t": task_id}
        ).all()
    return [(r[0], r[1]) for r in rows]


def raw_stream(base_url: str, path: str, headers: dict[str, str] | None = None, limit: float = 30) -> tuple[int, str]:
    """Read a whole stream as text (it ends by itself after the terminal event)."""
    with httpx.stream("GET", base_url + path, headers=headers or {}, timeout=limit) as resp:
        return resp.status_code, "".join(resp.iter_text())


def parse(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "id" in fields:
            events.append({"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])})
    return events


def test_a_new_stream_opens_with_retry_and_a_snapshot_then_every_event_until_the_terminal_one(
    api: str, client: httpx.Client, start_worker, db: sa.Engine
) -> None:
    start_worker()
    task_id = submit(client, task_type="test_sleep", seconds=1, steps=5)
    status, text = raw_stream(api, f"/tasks/{task_id}/stream")
    assert status == 200 and text.startswith("retry: 2000\n\n")
    events = parse(text)
    assert events[0]["event"] == "status"  # the snapshot
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids)), "ids strictly increase"
    assert all(e["data"]["task_id"] == task_id and "status" in e["data"] for e in events)
    assert events[-1]["event"] == "status" and events[-1]["data"]["status"] == "SUCCESS"
    assert events[-1]["data"]["result"] == {"steps": 5}
    # Everything after the snapshot is exactly the stored log from there on: no gap, no duplicate.
    assert [(e["id"], e["event"]) for e in events[1:]] == [
        ev for ev in stored_events(db, task_id) if ev[0] > events[0]["id"]
    ]


def test_headers_follow_the_contract(api: str, client: httpx.Client) -> None:
    task_id = submit(client, task_type="test_noop")
    client.delete(f"/tasks/{task_id}")
    with httpx.stream("GET", f"{api}/tasks/{task_id}/stream") as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["cache-control"] == "no-cache"
        assert resp.headers["x-accel-buffering"] == "no"


def test_resume_after_a_disconnect_gives_exactly_the_missed_events(
    api: str, client: httpx.Client, start_worker, db: sa.Engine
) -> None:
    start_worker()
    task_id = submit(client, task_type="test_sleep", seconds=2, steps=10)
    seen: list[int] = []
    with httpx.stream("GET", f"{api}/tasks/{task_id}/stream", timeout=30) as resp:
        buffer = ""
        for chunk in resp.iter_text():
            buffer += chunk
            if len(parse(buffer)) >= 3:
                break  # drop the connection mid-task
    seen = [e["id"] for e in parse(buffer)]
    time.sleep(0.6)  # events happen while we are away
    _, rest = raw_stream(api, f"/tasks/{task_id}/stream", {"Last-Event-ID": str(seen[-1])})
    resumed = [e["id"] for e in parse(rest)]
    assert resumed and resumed[0] == seen[-1] + 1
    assert seen[-1] not in resumed
    assert resumed == [seq for seq, _ in stored_events(db, task_id) if seq > seen[-1]]
    # The query-string form works the same (for clients that cannot set headers).
    _, same = raw_stream(api, f"/tasks/{task_id}/stream?last_event_id={seen[-1]}")
    assert [e["id"] for e in parse(same)] == resumed


def test_reconnecting_after_the_terminal_event_is_204_and_unknown_is_404(
    api: str, client: httpx.Client, start_worker
) -> None:
    start_worker()
    task_id = submit(client, task_type="test_noop")
    done = wait_for_status(client, task_id, "SUCCESS")
    last = parse(raw_stream(api, f"/tasks/{task_id}/stream")[1])[-1]["id"]
    assert client.get(f"/tasks/{task_id}/stream", headers={"Last-Event-ID": str(last)}).status_code == 204
    assert done["status"] == "SUCCESS"
    missing = client.get("/tasks/00000000-0000-0000-0000-000000000000/stream")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    bad = client.get(f"/tasks/{task_id}/stream", headers={"Last-Event-ID": "abc"})
    assert bad.status_code == 422


def test_idle_streams_get_a_ping_comment(spawn, client: httpx.Client, start_worker) -> None:
    port = free_port()
    api = spawn("api", "api", "--port", str(port), env={"TASKLIFT_SSE_PING_SECONDS": "0.3"})
    api.wait_for_output("Uvicorn running", timeout=30)
    task_id = submit(client, task_type="test_sleep", seconds=1.2, steps=1)
    start_worker()
    _, text = raw_stream(f"http://127.0.0.1:{port}", f"/tasks/{task_id}/stream")
    assert ": ping\n\n" in text
    assert parse(text)[-1]["data"]["status"] == "SUCCESS"


def test_the_client_survives_an_api_restart_mid_stream(spawn, tasklift_env, start_worker, db: sa.Engine) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    first = spawn("api", "api", "--port", str(port))
    first.wait_for_output("Uvicorn running", timeout=30)
    start_worker()
    with TaskliftClient(base) as tl:
        task = tl.submit("test_sleep", seconds=4, steps=20)
        events: list[StreamEvent] = []
        for event in tl.stream(task.task_id):
            events.append(event)
            if len(events) == 3:
                first.stop()  # the API goes away mid-stream …
                spawn("api", "api", "--port", str(port)).wait_for_output("Uvicorn running", timeout=30)  # … and back
    seqs = [e.seq for e in events]
    assert events[-1].terminal and events[-1].status == "SUCCESS"
    assert seqs == sorted(set(seqs))
    assert seqs[1:] == [seq for seq, _ in stored_events(db, task.task_id) if seq > seqs[0]]


def test_a_redis_restart_mid_stream_loses_no_event(
    spawn, tasklift_env, start_worker, db: sa.Engine, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub resyncs from PostgreSQL when its Redis connection drops, so the client misses nothing."""
    own = EmbeddedRedis(tmp_path / "redis", appendonly=True)
    url = own.start()
    try:
        port = free_port()
        env = {"TASKLIFT_REDIS_URL": url}
        spawn("api", "api", "--port", str(port), env=env).wait_for_output("Uvicorn running", timeout=30)
        start_worker(env=env)
        with TaskliftClient(f"http://127.0.0.1:{port}") as tl:
            task = tl.submit("test_sleep", seconds=4, steps=20)
            events = []
            for event in tl.stream(task.task_id):
                events.append(event)
                if len(events) == 3:
                    own.stop()  # no pub/sub for a second while the task goes on writing events
                    time.sleep(1.0)
                    own.start()
        seqs = [e.seq for e in events]
        assert events[-1].terminal and events[-1].status == "SUCCESS"
        assert seqs[1:] == [seq for seq, _ in stored_events(db, task.task_id) if seq > seqs[0]]
    finally:
        own.stop()


@pytest.fixture
def fast_resync(tasklift_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> float:
    """The hub's database check every 0.5 s, and a ping as often (to notice the bound pass); set
    before the API starts, whose runtime builds the hub from the settings (tasklift.http.runtime)."""
    from tasklift.settings import get_settings

    monkeypatch.setenv("TASKLIFT_STREAM_RESYNC_SECONDS", "0.5")
    monkeypatch.setenv("TASKLIFT_SSE_PING_SECONDS", "0.5")
    get_settings.cache_clear()
    return 0.5


def test_events_stored_but_never_published_reach_an_open_stream_within_two_resync_periods(
    fast_resync: float, api: str, client: httpx.Client, db: sa.Engine
) -> None:
    """A lost publish (Redis up, the PUBLISH never made): the hub's database check finds the task
    behind the stored log and the stream replays what it lacks, the terminal event included, within
    2 x stream_resync_seconds (docs/streaming.md). Nothing here publishes: the events are written
    with the store's own statements, as a worker's would be, and no one announces them."""
    from tasklift.store import leases
    from tests.support import store

    period = fast_resync
    task_id = submit(client, task_type="test_noop")  # no worker: it stays PENDING
    with httpx.stream("GET", f"{api}/tasks/{task_id}/stream", timeout=30) as resp:
        lines = resp.iter_lines()
        assert next(line for line in lines if line.startswith("event:")) == "event: status"  # the snapshot
        with db.begin() as conn:
            log = leases.append_log(conn, uuid.UUID(task_id), None, "info", "stored, never published")
        cancelled = store.cancel(uuid.UUID(task_id))
        assert log is not None and cancelled is not None
        written = time.monotonic()
        bound = 2 * period + 1.5  # + slack for a loaded machine
        text = ""
        for line in lines:  # the stream ends by itself after the terminal event (pings come meanwhile)
            text += line + "\n"
            if time.monotonic() - written > bound:
                break
        elapsed = time.monotonic() - written
    events = parse(text)
    assert elapsed <= bound, f"the missed events had not come {elapsed:.1f} s after their commit: {text!r}"
    assert [(e["id"], e["event"]) for e in events] == [(log.seq, "log"), (cancelled[1].seq, "status")]
    assert events[-1]["data"]["status"] == "CANCELLED"


def test_200_concurrent_streams_on_one_task_all_get_the_terminal_event(
    api: str, client: httpx.Client, start_worker
) -> None:
    task_id = submit(client, task_type="test_sleep", seconds=2, steps=10)

    async def follow(http: httpx.AsyncClient) -> list[int]:
        ids = []
        async with http.stream("GET", f"/tasks/{task_id}/stream") as resp:
            buffer = ""
            async for chunk in resp.aiter_text():
                buffer += chunk
        for event in parse(buffer):
            ids.append(event["id"])
            last = event
        assert last["data"]["status"] == "SUCCESS"
        return ids

    async def main() -> list[list[int]]:
        limits = httpx.Limits(max_connections=250)
        async with httpx.AsyncClient(base_url=api, timeout=60, limits=limits) as http:
            streams = [asyncio.create_task(follow(http)) for _ in range(200)]
            await asyncio.sleep(0.5)  # all connected before the work starts
            start_worker()
            return await asyncio.gather(*streams)

    results = asyncio.run(main())
    assert len(results) == 200
    assert all(ids == sorted(set(ids)) for ids in results)
    finals = {ids[-1] for ids in results}
    assert len(finals) == 1  # every stream ended on the same terminal event


def test_bounded_window_mode_delivers_the_same_events_in_the_same_order(
    spawn, client: httpx.Client, start_worker, db: sa.Engine
) -> None:
    """A buffering host answers in short windows; a client honouring retry: and Last-Event-ID sees it all."""
    port = free_port()
    windowed = spawn("api", "api", "--port", str(port), env={"TASKLIFT_SSE_WINDOW_SECONDS": "0.4"})
    windowed.wait_for_output("Uvicorn running", timeout=30)
    task_id = submit(client, task_type="test_sleep", seconds=2, steps=8)
    start_worker()
    first_window = httpx.get(f"http://127.0.0.1:{port}/tasks/{task_id}/stream", timeout=10)
    assert first_window.status_code == 200 and first_window.text.rstrip().endswith("retry: 250")
    with TaskliftClient(f"http://127.0.0.1:{port}") as tl:
        events = list(tl.stream(task_id))
    seqs = [e.seq for e in events]
    assert events[-1].terminal
    assert seqs[1:] == [seq for seq, _ in stored_events(db, task_id) if seq > seqs[0]]


def test_long_poll_answers_on_the_next_change_not_after_the_full_wait(client: httpx.Client, start_worker) -> None:
    task_id = submit(client, task_type="test_sleep", seconds=1, steps=1)
    first = client.get(f"/tasks/{task_id}")
    start_worker()
    started = time.monotonic()
    changed = client.get(f"/tasks/{task_id}", params={"wait": 20}, headers={"If-None-Match": first.headers["ETag"]})
    assert changed.status_code == 200 and changed.headers["ETag"] != first.headers["ETag"]
    assert time.monotonic() - started < 10


def test_long_poll_times_out_with_304_when_nothing_changes(client: httpx.Client) -> None:
    task_id = submit(client, task_type="test_noop")  # no worker: it stays PENDING
    tag = client.get(f"/tasks/{task_id}").headers["ETag"]
    started = time.monotonic()
    resp = client.get(f"/tasks/{task_id}", params={"wait": 1}, headers={"If-None-Match": tag})
    assert resp.status_code == 304 and time.monotonic() - started >= 0.9
    assert client.get(f"/tasks/{task_id}", params={"wait": 26}).status_code == 422
    assert client.get(f"/tasks/{task_id}", params={"wait": 0}).status_code == 422


def test_the_python_client_waits_and_reads_logs(api: str, start_worker) -> None:
    start_worker()
    with TaskliftClient(api) as tl:
        task = tl.submit("vector_processing", duration=2, step_seconds=0.2, vector_data=[1.0])
        done = tl.wait(task.task_id, timeout=30)
        assert done.status == "SUCCESS" and done.result["processed_vectors"] == 1
        assert tl.logs(task.task_id)[-1]["message"] == "Task processing complete."
        assert tl.get(task.task_id).progress.percent == 100
