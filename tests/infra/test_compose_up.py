"""docker-compose.yml for real: podman-compose brings the stack up on images built locally.

One module-scoped stack (.ci/compose-images/build images, compose.ci.yaml override, its own project
name, the API published on a free 127.0.0.1 port), driven in order: healthy services, the HTTP
contract against the compose API (the Azure handlers), a trace at the OTLP receiver, three workers
draining a batch, a SIGKILLed worker restarted with its task finished once, and `down` + `up`
keeping every task. `down -v` at the end. Without podman the tests fail with one line: .ci/run
installs it (.ci/podman-setup).
"""

from __future__ import annotations

import base64
import os
import signal
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tasklift.client import TaskliftClient
from tasklift.embedded import free_port
from tests.infra.compose_stack import Stack, build_images, missing_tools

# The first test also brings the stack up (and builds the images when none are cached).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SERVICES = ("postgres", "redis", "jaeger", "api", "worker", "reaper")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    if reason := missing_tools():
        pytest.fail(reason, pytrace=False)
    stack = Stack("tasklift-ci", free_port(), build_images())
    stack.down("-v")  # leftovers of an interrupted run
    try:
        stack.health = stack.up()  # type: ignore[attr-defined]
        yield stack
    finally:
        stack.down("-v")


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[TaskliftClient]:
    with TaskliftClient(stack.api_url, api_key=stack.api_key, timeout=30) as client:
        yield client


def _worker_rows(stack: Stack, ids: list[str]) -> dict[str, str]:
    listed = ",".join(f"'{i}'" for i in ids)
    # tasks.worker is "<celery node>:<pid of the pool process>"; the node names the container.
    rows = stack.psql(f"select id, coalesce(worker, '') from tasks where id in ({listed})")
    return {row[0]: row[1].rpartition(":")[0] for row in rows}


def test_up_brings_every_service_to_healthy(stack: Stack) -> None:
    """Each long-running service passes its own compose healthcheck; migrate exited 0 first."""
    health = stack.health  # type: ignore[attr-defined]
    for service in SERVICES:
        containers = stack.containers(service)
        assert containers and all(health.get(c) == "healthy" for c in containers), (service, health)
    (migrate,) = stack.containers("migrate")
    assert stack.inspect(migrate)["State"]["ExitCode"] == 0


def test_http_contract_against_the_compose_api(stack: Stack, client: TaskliftClient) -> None:
    """Submit 202 → a worker runs it to SUCCESS; GET, stream, 404 problem+json, dashboard and docs."""
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    with httpx.Client(base_url=stack.api_url, timeout=30, headers=headers) as http:
        resp = http.post("/tasks", json={"task_type": "vector_processing", "duration": 3, "step_seconds": 0.2})
        assert resp.status_code == 202, resp.text
        task_id = resp.json()["task_id"]
        assert resp.json()["status"] == "PENDING"
        events = list(client.stream(task_id))
        assert events[-1].terminal and events[-1].status == "SUCCESS", events[-1]
        task = client.get(task_id)
        assert task.status == "SUCCESS" and task.result is not None
        missing = http.get(f"/tasks/{uuid.uuid4()}")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
        assert missing.json()["status"] == 404
        anonymous = httpx.post(f"{stack.api_url}/tasks", json={"task_type": "vector_processing"})
        assert anonymous.status_code == 401
        for page in ("/", "/docs"):
            assert httpx.get(f"{stack.api_url}{page}", timeout=30).status_code == 200, page


def test_a_trace_reaches_the_otlp_receiver(stack: Stack, client: TaskliftClient) -> None:
    """The API's and the worker's spans of one task arrive over OTLP/HTTP at the Jaeger stand-in."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    task = client.submit("vector_processing", duration=1, step_seconds=0.1)
    client.wait(task.task_id, timeout=60)
    trace_id = client.get(task.task_id).trace_id
    assert trace_id
    deadline = time.monotonic() + 60
    services: set[str] = set()
    while time.monotonic() < deadline and not {"tasklift-api", "tasklift-worker"} <= services:
        time.sleep(2)
        for record in httpx.get("http://127.0.0.1:16686/received", timeout=10).json():
            if record["path"] != "/v1/traces":
                continue
            request = ExportTraceServiceRequest.FromString(base64.b64decode(record["body"]))
            for spans in request.resource_spans:
                name = next(a.value.string_value for a in spans.resource.attributes if a.key == "service.name")
                if any(s.trace_id.hex() == trace_id for scope in spans.scope_spans for s in scope.spans):
                    services.add(name)
    assert {"tasklift-api", "tasklift-worker"} <= services, services


def test_three_workers_drain_a_batch(stack: Stack, client: TaskliftClient) -> None:
    """`up --scale worker=3`: all three workers run some of a batch, and every task succeeds."""
    stack.compose("up", "-d", "--no-build", "--no-deps", "--scale", "worker=3", "worker", timeout=600)
    workers = stack.containers("worker")
    assert len(workers) == 3, workers
    stack.wait_healthy(("worker",))
    ids = [client.submit("vector_processing", duration=4, step_seconds=0.5).task_id for _ in range(18)]
    for task_id in ids:
        assert client.wait(task_id, timeout=180).status == "SUCCESS"
    by_worker = _worker_rows(stack, ids)
    hostnames = {stack.node(c) for c in workers}
    assert set(by_worker.values()) == hostnames, (by_worker, hostnames)


def test_a_killed_worker_is_restarted_and_its_task_finishes_once(stack: Stack, client: TaskliftClient) -> None:
    """SIGKILL on the worker running a task: restart policy brings it back; the task ends SUCCESS once."""
    task_id = client.submit("vector_processing", duration=20, step_seconds=0.5).task_id
    deadline = time.monotonic() + 60
    while not (worker := _worker_rows(stack, [task_id]).get(task_id)):
        assert time.monotonic() < deadline, "task never started"
        time.sleep(0.5)
    (victim,) = [c for c in stack.containers("worker") if stack.node(c) == worker]
    state = stack.inspect(victim)["State"]
    # SIGKILL to the container's init from outside, as the kernel's OOM killer would: `podman kill`
    # counts as a stop by the user, after which podman (like Docker) applies no restart policy.
    os.kill(state["Pid"], signal.SIGKILL)
    assert client.wait(task_id, timeout=180).status == "SUCCESS"
    deadline = time.monotonic() + 60
    while not ((now := stack.inspect(victim)["State"])["Running"] and now["StartedAt"] != state["StartedAt"]):
        assert time.monotonic() < deadline, f"{victim} was not restarted: {now['Status']}"
        time.sleep(1)
    ((redispatches, terminal),) = stack.psql(
        "select t.redispatches, (select count(*) from task_events e where e.task_id = t.id and e.kind = 'status'"
        f" and e.data->>'status' = 'SUCCESS') from tasks t where t.id = '{task_id}'"
    )
    assert int(redispatches) >= 1 and int(terminal) == 1, (redispatches, terminal)


def test_down_then_up_keeps_every_task(stack: Stack, client: TaskliftClient) -> None:
    """`compose down` (volumes kept) then `up`: every task and its status is still there."""
    before = {row[0]: row[1] for row in stack.psql("select id, status from tasks")}
    assert len(before) >= 20
    stack.down()
    stack.health = stack.up()  # type: ignore[attr-defined]
    for task_id, status in before.items():
        after = client.get(task_id).status
        # A task still running at `down` is handed back or re-dispatched, and then finishes.
        assert after == status or status in ("PENDING", "RUNNING"), (task_id, status, after)
