"""The HTTP contract (API.md), black-box, on every host: ASGI, the Azure emulator, the AWS emulator.

Each test runs once per host against a fresh database; the same assertions hold on all three.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from tests.conftest import wait_for_status
from tests.hosts.conftest import Host, assert_problem


def test_submit_answers_202_with_the_pending_task_and_where_to_poll(http: httpx.Client, host: Host) -> None:
    resp = http.post("/tasks", json={"task_type": "test_noop", "metadata": {"source": "hosts"}})
    assert resp.status_code == 202
    task = resp.json()
    assert task["status"] == "PENDING" and task["task_type"] == "test_noop"
    assert task["metadata"] == {"source": "hosts"}
    assert resp.headers["Location"] == f"/tasks/{task['task_id']}" == task["links"]["self"]
    assert resp.headers["Operation-Location"] == f"{host.url}/tasks/{task['task_id']}"
    assert resp.headers["Azure-AsyncOperation"] == f"{host.url}/operations/{task['task_id']}"  # the Azure monitor
    assert resp.headers["Retry-After"] == "1"
    again = http.get(resp.headers["Location"])
    assert again.status_code == 200 and again.json()["task_id"] == task["task_id"]


def test_a_task_runs_to_success_on_a_real_worker_and_its_etag_changes(http: httpx.Client, start_worker) -> None:
    task_id = http.post("/tasks", json={"task_type": "test_noop"}).json()["task_id"]
    pending = http.get(f"/tasks/{task_id}")
    assert pending.headers["Cache-Control"] == "no-store" and pending.headers["Retry-After"]
    tag = pending.headers["ETag"]
    assert http.get(f"/tasks/{task_id}", headers={"If-None-Match": tag}).status_code == 304
    start_worker(concurrency=1)  # only now, so that the task is still PENDING above
    done = wait_for_status(http, task_id, "SUCCESS")
    assert done["result"] == {"ok": True} and done["completed_at"] and done["attempts"] == 1
    changed = http.get(f"/tasks/{task_id}", headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["ETag"] != tag
    assert "Retry-After" not in changed.headers  # terminal: nothing to wait for


def test_a_failed_task_shows_its_error_and_its_log_lines(worker, http: httpx.Client) -> None:
    task_id = http.post("/tasks", json={"task_type": "test_fail", "message": "no luck"}).json()["task_id"]
    worker()
    failed = wait_for_status(http, task_id, "FAILED")
    assert failed["error"]["message"] == "no luck"
    logs = http.get(f"/tasks/{task_id}/logs")
    assert logs.status_code == 200
    lines = logs.json()
    assert [(line["level"], line["message"]) for line in lines] == [("WARNING", "about to fail")]
    assert http.get(f"/tasks/{task_id}/logs", params={"after": lines[-1]["seq"]}).json() == []


def test_cancel_is_204_when_pending_202_when_running_and_409_when_finished(http: httpx.Client, start_worker) -> None:
    pending = http.post("/tasks", json={"task_type": "test_noop"}).json()["task_id"]
    assert http.delete(f"/tasks/{pending}").status_code == 204
    assert http.get(f"/tasks/{pending}").json()["status"] == "CANCELLED"
    assert http.delete(f"/tasks/{pending}").status_code == 204  # idempotent

    start_worker(concurrency=1)
    running = http.post("/tasks", json={"task_type": "test_sleep", "seconds": 30, "steps": 300}).json()["task_id"]
    wait_for_status(http, running, "RUNNING")
    resp = http.delete(f"/tasks/{running}")
    assert resp.status_code == 202 and resp.json()["cancel_requested"] is True
    wait_for_status(http, running, "CANCELLED")

    finished = http.post("/tasks", json={"task_type": "test_noop"}).json()["task_id"]
    wait_for_status(http, finished, "SUCCESS")
    assert_problem(http.delete(f"/tasks/{finished}"), 409)


#: Bad submissions and the status API.md gives each (the 413 one is ~1.2 MB, over the 1 MiB default).
BAD_SUBMISSIONS = [
    (b"{not json", "application/json", 400),
    (b"vector_data=1", "application/x-www-form-urlencoded", 415),
    (b'{"task_type": "nope"}', "application/json", 422),
    (b'{"duration": -5, "vector_data": "x"}', "application/json", 422),
    (b'{"vector_data": [' + b"0.5," * 300_000 + b"0.5]}", "application/json", 413),
]


def test_bad_requests_are_problem_json_and_create_nothing(http: httpx.Client) -> None:
    for content, content_type, status in BAD_SUBMISSIONS:
        resp = http.post("/tasks", content=content, headers={"Content-Type": content_type})
        problem = assert_problem(resp, status)
        if b"duration" in content:
            assert {tuple(e["loc"]) for e in problem["errors"]} >= {("body", "duration"), ("body", "vector_data")}
    for path in (f"/tasks/{uuid.uuid4()}", f"/tasks/{uuid.uuid4()}/logs", f"/tasks/{uuid.uuid4()}/stream", "/nowhere"):
        assert_problem(http.get(path), 404)
    assert_problem(http.delete(f"/tasks/{uuid.uuid4()}"), 404)
    assert_problem(http.put("/tasks", json={}), 405)
    assert_problem(http.get("/tasks", params={"limit": 0}), 422)
    assert http.get("/tasks").json()["items"] == []


def test_list_is_newest_first_filtered_and_paged_with_a_cursor(http: httpx.Client) -> None:
    before = datetime.now(UTC).isoformat()
    ids = [http.post("/tasks", json={"task_type": "test_noop"}).json()["task_id"] for _ in range(5)]
    http.post("/tasks", json={"task_type": "test_fail"})
    seen, params = [], {"limit": 2, "task_type": "test_noop", "created_after": before}
    page = http.get("/tasks", params=params).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    seen += [t["task_id"] for t in page["items"]]
    while page["next_cursor"]:
        page = http.get("/tasks", params={**params, "cursor": page["next_cursor"]}).json()
        seen += [t["task_id"] for t in page["items"]]
    assert seen == ids[::-1]
    assert len(http.get("/tasks", params={"status": "PENDING"}).json()["items"]) == 6


def test_task_types_health_and_readiness_answer(http: httpx.Client) -> None:
    types = {t["name"]: t for t in http.get("/task-types").json()}
    assert {"vector_processing", "web_scrape", "test_noop"} <= set(types)
    assert types["web_scrape"]["input_schema"]["required"] == ["url"]
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_every_host_serves_the_dashboard_the_api_docs_and_the_openapi_document(http: httpx.Client) -> None:
    spec = http.get("/openapi.json")
    assert spec.status_code == 200 and spec.headers["content-type"] == "application/json"
    assert {"/tasks", "/tasks/{task_id}", "/tasks/{task_id}/stream"} <= set(spec.json()["paths"])
    for page, marker in (("/", 'src="/static/app.js"'), ("/docs", "swagger-ui-bundle.js"), ("/redoc", "<redoc")):
        resp = http.get(page)
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html"), page
        assert marker in resp.text, page
        assert "frame-ancestors 'none'" in resp.headers["content-security-policy"], page
    for asset in ("/static/app.js", "/docs/assets/swagger-ui-bundle.js", "/docs/assets/redoc.standalone.js"):
        resp = http.get(asset)
        assert resp.status_code == 200 and len(resp.content) > 1_000, asset
    assert_problem(http.get("/docs/assets/nothing-here.js"), 404)
    assert_problem(http.post("/docs"), 405)


def test_a_task_submitted_through_azure_is_the_same_task_through_aws(
    start_host: Callable[..., Host], start_worker
) -> None:
    """One core, one store: what one host accepted, every other host serves."""
    azure, aws = start_host("azure"), start_host("aws")
    with (
        httpx.Client(base_url=azure.url, timeout=30) as via_azure,
        httpx.Client(base_url=aws.url, timeout=30) as via_aws,
    ):
        task_id = via_azure.post("/tasks", json={"task_type": "test_fail"}).json()["task_id"]
        assert via_aws.get(f"/tasks/{task_id}").json() == via_azure.get(f"/tasks/{task_id}").json()
        assert [t["task_id"] for t in via_aws.get("/tasks").json()["items"]] == [task_id]
        start_worker(concurrency=1)
        assert wait_for_status(via_aws, task_id, "FAILED")["error"]["message"] == "boom"
        assert via_aws.post(f"/tasks/{task_id}/retry").status_code == 202  # retried through AWS…
        assert wait_for_status(via_azure, task_id, "FAILED")["attempts"] == 2  # …seen through Azure
        assert [line["message"] for line in via_azure.get(f"/tasks/{task_id}/logs").json()] == ["about to fail"] * 2


def test_every_host_serves_the_operation_views_and_their_colon_cancel(http: httpx.Client, host: Host) -> None:
    """The Azure monitor, the AIP-151 Operation and ``…:cancel`` (a colon in the path) on every host."""
    task_id = http.post("/tasks", json={"task_type": "test_noop"}).json()["task_id"]
    monitor = http.get(f"/operations/{task_id}")
    assert monitor.status_code == 200 and monitor.json()["status"] == "NotStarted", monitor.text
    operation = http.get(f"/v1/operations/{task_id}")
    assert operation.status_code == 200 and operation.json()["done"] is False, operation.text
    cancelled = http.post(f"/v1/operations/{task_id}:cancel")
    assert cancelled.status_code == 200 and cancelled.json() == {}, cancelled.text
    assert http.get(f"/operations/{task_id}").json()["status"] == "Canceled"
    done = http.get(f"/v1/operations/{task_id}").json()
    assert done["done"] is True and done["error"]["code"] == 1
    assert_problem(http.get(f"/operations/{uuid.uuid4()}"), 404)


def test_every_host_takes_a_batch_at_its_colon_path_and_answers_per_item(http: httpx.Client, start_worker) -> None:
    items = [{"task": {"task_type": "test_noop"}, "idempotency_key": f"b{i}"} for i in range(20)]
    items.insert(5, {"task": {"task_type": "no_such_type"}})
    resp = http.post("/tasks:batch", json={"items": items})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [item["status"] for item in body["items"]] == [202] * 5 + [422] + [202] * 15
    assert body["items"][5]["problem"]["errors"][0]["loc"] == ["body", "items", 5, "task", "task_type"]
    again = http.post("/tasks:batch", json={"items": items}).json()
    assert [a["task"]["task_id"] for a in again["items"] if a["status"] == 202] == [
        a["task"]["task_id"] for a in body["items"] if a["status"] == 202
    ]
    start_worker(concurrency=1)
    for answer in body["items"]:
        if answer["status"] == 202:
            wait_for_status(http, answer["task"]["task_id"], "SUCCESS")


def test_every_host_routes_queue_pause_and_refuses_it_without_an_admin(http: httpx.Client) -> None:
    queue = next(t["queue"] for t in http.get("/task-types").json() if t["name"] == "test_noop")
    for action in ("pause", "resume"):
        assert_problem(http.post(f"/queues/{queue}:{action}"), 403)  # anonymous is no admin
