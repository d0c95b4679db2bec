"""GET /tasks/{id}/stream on every host: live (ASGI, Azure with HTTP streams) or in bounded
windows (AWS, where Mangum buffers), a browser-like EventSource sees the same events in the same
order, and resuming from Last-Event-ID replays exactly what was missed."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.conftest import wait_for_status
from tests.hosts.conftest import HOSTS, Host, assert_problem
from tests.hosts.eventsource import EventSource, SseEvent

TERMINAL = {"SUCCESS", "FAILED", "CANCELLED"}


def payloads(events: list[SseEvent]) -> list[dict]:
    return [json.loads(e.data) for e in events]


def parsed(events: list[SseEvent]) -> list[tuple[str | None, str, dict]]:
    """Events as (id, type, data object): JSON key order is not part of the contract."""
    return [(e.id, e.event, json.loads(e.data)) for e in events]


def assert_well_formed(events: list[SseEvent], task_id: str) -> None:
    ids = [int(e.id or -1) for e in events]
    assert ids == sorted(set(ids)), f"ids must strictly increase: {ids}"
    assert all(p["task_id"] == task_id and p["status"] for p in payloads(events))
    assert events[-1].event == "status" and json.loads(events[-1].data)["status"] in TERMINAL


def test_every_host_streams_the_same_events_in_the_same_order(
    start_host: Callable[..., Host], start_worker, db
) -> None:
    hosts = [start_host(kind) for kind in HOSTS]
    with httpx.Client(base_url=hosts[0].url) as http:
        task_id = http.post("/tasks", json={"task_type": "test_sleep", "seconds": 2, "steps": 4}).json()["task_id"]
    sources = [EventSource(f"{h.url}/tasks/{task_id}/stream") for h in hosts]
    with ThreadPoolExecutor(len(sources)) as pool:
        runs = [pool.submit(source.run) for source in sources]
        for source in sources:  # every stream has its snapshot before the task starts
            assert source.opened.wait(15), source.statuses
        start_worker(concurrency=1)
        seen = {h.kind: run.result(timeout=60) for h, run in zip(hosts, runs, strict=True)}

    reference = seen["asgi"]
    assert_well_formed(reference, task_id)
    kinds = [e.event for e in reference]
    assert kinds[0] == "status" and json.loads(reference[0].data)["status"] == "PENDING"
    assert kinds.count("progress") >= 1 and json.loads(reference[-1].data)["result"] == {"steps": 4}
    for kind, events in seen.items():
        assert parsed(events) == parsed(reference), f"{kind} saw a different stream"
    by_kind = {h.kind: s for h, s in zip(hosts, sources, strict=True)}
    assert by_kind["aws"].statuses.count(200) > 1, "the AWS stream answers in windows, reconnecting"
    assert by_kind["asgi"].statuses == by_kind["azure"].statuses == [200, 204], "live hosts stream in one response"


def test_a_stream_resumed_from_last_event_id_replays_exactly_what_was_missed(
    worker, http: httpx.Client, host: Host
) -> None:
    task_id = http.post("/tasks", json={"task_type": "test_sleep", "seconds": 0.6, "steps": 3}).json()["task_id"]
    worker()
    wait_for_status(http, task_id, "SUCCESS")
    url = f"{host.url}/tasks/{task_id}/stream"

    everything = EventSource(url, last_event_id="0").run()
    assert_well_formed(everything, task_id)
    assert [e.event for e in everything][:1] == ["status"] and len(everything) >= 4
    middle = everything[1].id
    resumed = EventSource(url, last_event_id=middle).run()
    assert parsed(resumed) == parsed(everything[2:])
    by_query = EventSource(f"{url}?last_event_id={middle}").run()
    assert parsed(by_query) == parsed(everything[2:])

    first = http.get(f"/tasks/{task_id}/stream", headers={"Last-Event-ID": middle})
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/event-stream")
    assert first.headers["cache-control"] == "no-cache" and first.headers["x-accel-buffering"] == "no"
    assert first.text.startswith("retry:")
    after_the_end = http.get(f"/tasks/{task_id}/stream", headers={"Last-Event-ID": everything[-1].id})
    assert after_the_end.status_code == 204  # EventSource stops reconnecting
    fresh = http.get(f"/tasks/{task_id}/stream")  # a new stream of a finished task: its final status only
    data = [json.loads(line[5:]) for line in fresh.text.splitlines() if line.startswith("data:")]
    assert data == [json.loads(everything[-1].data)]
    assert_problem(http.get(f"/tasks/{task_id}/stream", headers={"Last-Event-ID": "abc"}), 422)
