"""The function handlers called directly, as each platform calls them: the Lambda handler with API
Gateway REST (v1), HTTP API (v2) and Function URL events written from AWS's documentation
(events/), and the Azure functions with the HTTP streams extension's request type. Plus: both
function sets cover exactly the core's routes."""

from __future__ import annotations

import ast
import asyncio
import base64
import copy
import importlib.util
import json
import os
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from starlette.requests import Request

from tasklift.http.routes import ROUTES
from tasklift.settings import get_settings
from tasklift_local.azure import HttpFunction, index_functions, load_function_app
from tasklift_local.cfn import http_api_routes, load_template
from tasklift_local.lambda_runtime import LambdaContext

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
EVENTS = Path(__file__).parent / "events"
CORE_ROUTES = {(r.method, r.template) for r in ROUTES}
#: Core routes left to the catch-all function (which serves every route through the core) rather than
#: given a function of their own: a serverless instance's metrics are not worth one.
FALLBACK_ONLY = {
    ("GET", "/metrics"),
    # API Gateway's path variables are whole segments ({task_id}:cancel is no route there), and an
    # Azure route with a literal after a parameter in one segment is ASP.NET's "complex segment":
    # the catch-all serves AIP-151's custom method on both, through the same core route.
    ("POST", "/v1/operations/{task_id}:cancel"),
    ("POST", "/queues/{queue}:pause"),  # the same, and an operator's call, not a hot path
    ("POST", "/queues/{queue}:resume"),
    # Bulk operations (docs/bulk.md): an operator's calls, served by the catch-all through the core.
    ("POST", "/bulk"),
    ("GET", "/bulk/{bulk_id}"),
    ("DELETE", "/bulk/{bulk_id}"),
    # A task's webhook log and its redelivery (docs/webhooks.md): diagnostics, not a hot path; the
    # redelivery's {delivery_id}:redeliver is a complex segment as above.
    ("GET", "/tasks/{task_id}/deliveries"),
    ("POST", "/tasks/{task_id}/deliveries/{delivery_id}:redeliver"),
    # The list of bulk operations and the schedules (docs/flow-control.md, Schedules): management
    # calls, never a hot path (a schedule fires in the reaper, not through a function); :pause and
    # :resume are complex segments as above.
    ("GET", "/bulk"),
    ("POST", "/schedules"),
    ("GET", "/schedules"),
    ("GET", "/schedules/{schedule_id}"),
    ("DELETE", "/schedules/{schedule_id}"),
    ("POST", "/schedules/{schedule_id}:pause"),
    ("POST", "/schedules/{schedule_id}:resume"),
    ("GET", "/schedules/{schedule_id}/runs"),
}


#: And on AWS only: ``/tasks:batch`` (a colon inside a literal segment, AIP-136's custom-method
#: style) is left to the greedy ``/{proxy+}`` route rather than declared, since whether an HTTP API
#: route key may hold one is not checked here; that function is the same app (Mangum) with the body.
AWS_FALLBACK_ONLY = {("POST", "/tasks:batch")}


def assert_one_function_per_route(declared: set[tuple[str, str]], fallback: frozenset = frozenset()) -> None:
    assert declared <= CORE_ROUTES, f"functions for routes the core no longer has: {declared - CORE_ROUTES}"
    missing = CORE_ROUTES - declared - FALLBACK_ONLY - fallback
    assert not missing, f"core routes without a function of their own: {missing}"


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


# --- AWS Lambda -----------------------------------------------------------------------------------


@pytest.fixture
def lambda_handler(tasklift_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """functions/aws/handlers.py's handler, imported afresh; invoke(event) runs it as Lambda would."""
    monkeypatch.setenv("TASKLIFT_SSE_WINDOW_SECONDS", "0.5")  # handlers.py only sets a default
    get_settings.cache_clear()
    with mock.patch.dict(os.environ):  # whatever the module sets stays out of other tests
        spec = importlib.util.spec_from_file_location("tasklift_aws_handlers", FUNCTIONS / "aws" / "handlers.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    # A thread with its own event loop, like Lambda's main thread (the emulator runs a process per function).
    environment = ThreadPoolExecutor(1, initializer=lambda: asyncio.set_event_loop(asyncio.new_event_loop()))

    def invoke(event: dict[str, Any], function: str = "ApiFunction") -> dict[str, Any]:
        return environment.submit(module.handler, event, LambdaContext(function, 512, 29)).result(30)  # type: ignore[no-any-return]

    yield invoke

    def close_connections() -> None:  # what a Lambda environment never gets to do: it is frozen or ended
        asyncio.get_event_loop().run_until_complete(module.handler.app.host.close())

    environment.submit(close_connections).result(30)
    environment.shutdown()


def test_rest_api_v1_event_submits_a_task_and_reads_it_back(lambda_handler: Any) -> None:
    event = load_event("apigw_v1_rest.json")
    resp = lambda_handler(event)
    assert resp["statusCode"] == 202 and resp["isBase64Encoded"] is False
    task = json.loads(resp["body"])
    assert task["status"] == "PENDING" and task["metadata"] == {"source": "rest-api"}
    assert resp["headers"]["location"] == f"/tasks/{task['task_id']}"
    assert (
        resp["headers"]["operation-location"]
        == f"https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/tasks/{task['task_id']}"
    )
    assert (
        resp["headers"]["azure-asyncoperation"]
        == f"https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/operations/{task['task_id']}"
    )

    get = copy.deepcopy(event)
    get.update(httpMethod="GET", path=f"/tasks/{task['task_id']}", resource="/tasks/{task_id}", body=None)
    get["pathParameters"] = {"task_id": task["task_id"]}
    read = lambda_handler(get)
    assert read["statusCode"] == 200 and json.loads(read["body"])["task_id"] == task["task_id"]
    assert read["headers"]["etag"] and read["headers"]["cache-control"] == "no-store"


def test_http_api_v2_event_lists_tasks_with_its_query_string(lambda_handler: Any) -> None:
    submit = load_event("apigw_v1_rest.json")
    ids = [json.loads(lambda_handler(submit)["body"])["task_id"] for _ in range(2)]
    resp = lambda_handler(load_event("apigw_v2_http.json"))
    assert resp["statusCode"] == 200 and resp["headers"]["content-type"] == "application/json"
    page = json.loads(resp["body"])
    assert [t["task_id"] for t in page["items"]] == [ids[-1]] and page["next_cursor"]


def test_function_url_event_reads_the_task_types(lambda_handler: Any) -> None:
    resp = lambda_handler(load_event("function_url.json"))
    assert resp["statusCode"] == 200
    assert {"vector_processing", "web_scrape"} <= {t["name"] for t in json.loads(resp["body"])}


def test_v2_stream_event_answers_one_bounded_window_ending_with_retry(lambda_handler: Any) -> None:
    task_id = json.loads(lambda_handler(load_event("apigw_v1_rest.json"))["body"])["task_id"]
    event = load_event("apigw_v2_http.json")
    event.update(routeKey="GET /tasks/{task_id}/stream", rawPath=f"/tasks/{task_id}/stream", rawQueryString="")
    event["requestContext"]["http"]["path"] = event["rawPath"]
    event["pathParameters"] = {"task_id": task_id}
    del event["queryStringParameters"]
    resp = lambda_handler(event)  # buffered by Mangum: the events of a 0.5 s window, then a short retry
    assert resp["statusCode"] == 200 and resp["headers"]["content-type"].startswith("text/event-stream")
    body = resp["body"]
    assert body.startswith("retry:") and '"status":"PENDING"' in body
    assert body.rstrip().splitlines()[-1].startswith("retry:")


def test_v2_event_for_an_unknown_route_is_a_404_problem(lambda_handler: Any) -> None:
    event = load_event("function_url.json")
    event.update(rawPath="/nowhere")
    event["requestContext"]["http"]["path"] = "/nowhere"
    resp = lambda_handler(event)
    assert resp["statusCode"] == 404 and resp["headers"]["content-type"] == "application/problem+json"


def test_the_sam_template_declares_one_function_per_core_route_plus_a_fallback() -> None:
    routes = http_api_routes(FUNCTIONS / "aws" / "template.yaml")
    fallback = {"/{proxy+}", "/"}  # every other path, and the site root (the dashboard) a greedy path misses
    assert_one_function_per_route(
        {(r.method, r.path) for r in routes if r.path not in fallback}, frozenset(AWS_FALLBACK_ONLY)
    )
    assert sorted((r.method, r.path) for r in routes if r.path in fallback) == [("ANY", "/"), ("ANY", "/{proxy+}")]
    assert len({r.function for r in routes if r.path in fallback}) == 1, "one fallback function"
    assert len({r.function for r in routes}) == len(routes) - 1, "one function per endpoint"
    stream = next(r for r in routes if r.path.endswith("/stream"))
    assert float(stream.environment["TASKLIFT_SSE_WINDOW_SECONDS"]) < stream.timeout < 30  # inside API Gateway's cut
    module = ast.parse((FUNCTIONS / "aws" / "handlers.py").read_text())
    names = {
        t.id
        for node in ast.walk(module)
        if isinstance(node, ast.Assign)
        for t in ast.walk(node)
        if isinstance(t, ast.Name)
    }
    assert {r.handler.removeprefix("handlers.") for r in routes} <= names


def test_every_lambda_function_verifies_stream_links_with_one_shared_key() -> None:
    # Each function is its own process: without one key in the template, a link signed by the
    # submit function is refused (401) by the stream function, which made up a key of its own.
    template = load_template(FUNCTIONS / "aws" / "template.yaml")
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["TASKLIFT_STREAM_SIGNING_KEY"] == {"Ref": "StreamSigningKey"}
    assert template["Parameters"]["StreamSigningKey"]["NoEcho"] is True
    for resource in template["Resources"].values():
        own = ((resource.get("Properties") or {}).get("Environment") or {}).get("Variables", {})
        assert "TASKLIFT_STREAM_SIGNING_KEY" not in own, "one key for every function"


# --- Azure Functions ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def azure_functions() -> dict[str, HttpFunction]:
    """The functions of functions/azure/function_app.py, as the host indexes them."""
    return {fn.name: fn for fn in index_functions(load_function_app(FUNCTIONS / "azure"))}


def extension_request(
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    route_params: dict[str, str] | None = None,
) -> Request:
    """The request the HTTP streams extension hands a function: FastAPI's (Starlette's) Request."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    all_headers = {"host": "tasklift.azurewebsites.net", **(headers or {})}
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in all_headers.items()],
        "server": ("tasklift.azurewebsites.net", 443),
        "client": ("203.0.113.7", 50000),
        "path_params": route_params or {},  # the extension syncs the host's route parameters here
    }
    return Request(scope, receive)


async def call(fn: HttpFunction, req: Request) -> Any:
    return await fn.call(**{fn.arg_name: req})


@pytest.fixture
async def worker_process_loop() -> AsyncIterator[None]:
    """This test's event loop plays the Functions worker's: close the function app's API runtime
    at the end (an open hub's reader task would outlive the loop; a real worker never closes it)."""
    yield
    import function_app  # what load_function_app imported  # noqa: PLC0415

    await function_app.runtime.close()


async def test_azure_functions_submit_read_cancel_and_stream_a_task(
    tasklift_env: dict[str, str], azure_functions: dict[str, HttpFunction], worker_process_loop: None
) -> None:
    body = json.dumps({"task_type": "test_noop"}).encode()
    submitted = await call(
        azure_functions["submit_task"],
        extension_request("POST", "/tasks", body, {"content-type": "application/json"}),
    )
    assert submitted.status_code == 202
    task = json.loads(submitted.body)
    assert submitted.headers["operation-location"] == f"https://tasklift.azurewebsites.net/tasks/{task['task_id']}"
    assert (
        submitted.headers["azure-asyncoperation"] == f"https://tasklift.azurewebsites.net/operations/{task['task_id']}"
    )

    url, params = f"/tasks/{task['task_id']}", {"task_id": task["task_id"]}
    read = await call(azure_functions["get_task"], extension_request("GET", url, route_params=params))
    assert read.status_code == 200 and json.loads(read.body)["status"] == "PENDING"
    cancelled = await call(azure_functions["cancel_task"], extension_request("DELETE", url, route_params=params))
    assert cancelled.status_code == 204

    stream = await call(azure_functions["stream_task"], extension_request("GET", f"{url}/stream", route_params=params))
    assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
    chunks = [c if isinstance(c, bytes) else str(c).encode() async for c in stream.body_iterator]
    text = b"".join(chunks).decode()
    assert "event: status" in text and '"status":"CANCELLED"' in text  # a live stream ends at the terminal event


async def test_azure_functions_answer_problems_for_bad_requests(
    tasklift_env: dict[str, str], azure_functions: dict[str, HttpFunction], worker_process_loop: None
) -> None:
    big = b'{"vector_data": [' + b"0.5," * 300_000 + b"0.5]}"
    too_large = await call(
        azure_functions["submit_task"], extension_request("POST", "/tasks", big, {"content-type": "application/json"})
    )
    assert too_large.status_code == 413 and too_large.headers["content-type"] == "application/problem+json"
    wrong_method = await call(
        azure_functions["not_found"], extension_request("PUT", "/tasks", route_params={"path": "tasks"})
    )
    assert wrong_method.status_code == 405
    nowhere = await call(
        azure_functions["not_found"], extension_request("GET", "/nowhere", route_params={"path": "nowhere"})
    )
    assert nowhere.status_code == 404 and json.loads(nowhere.body)["instance"] == "/nowhere"


def test_the_azure_app_has_one_function_per_core_route_plus_a_catch_all(
    azure_functions: dict[str, HttpFunction],
) -> None:
    declared = {(m, "/" + fn.route) for fn in azure_functions.values() if fn.name != "not_found" for m in fn.methods}
    assert_one_function_per_route(declared)
    assert all(fn.streams for fn in azure_functions.values()), "an app with HTTP streams uses its types everywhere"
    assert azure_functions["not_found"].route == "{*path}"


def test_the_lambda_fallback_serves_a_tasks_delivery_log_its_redelivery_schedules_and_bulk(lambda_handler: Any) -> None:
    task_id = json.loads(lambda_handler(load_event("apigw_v1_rest.json"))["body"])["task_id"]
    for method, path, status in (
        ("GET", f"/tasks/{task_id}/deliveries", 200),
        ("POST", f"/tasks/{task_id}/deliveries/msg_none:redeliver", 404),
    ):
        event = load_event("function_url.json")
        event.update(rawPath=path)
        event["requestContext"]["http"].update(path=path, method=method)
        resp = lambda_handler(event)
        assert resp["statusCode"] == status, resp
        raw = base64.b64decode(resp["body"]) if resp["isBase64Encoded"] else resp["body"]  # Mangum: problem+json
        if status == 200:
            assert json.loads(raw) == {"items": []}
        else:  # the core route's own answer, not "no endpoint"
            assert json.loads(raw)["detail"] == f"task {task_id} has no delivery msg_none"

    # The schedules and the bulk list come through the same fallback, into their core routes.
    for path, expected in (
        ("/schedules", {"items": [], "next_cursor": None}),
        ("/bulk", {"items": [], "next_cursor": None}),
    ):
        event = load_event("function_url.json")
        event.update(rawPath=path)
        event["requestContext"]["http"].update(path=path, method="GET")
        resp = lambda_handler(event)
        raw = base64.b64decode(resp["body"]) if resp["isBase64Encoded"] else resp["body"]
        assert resp["statusCode"] == 200 and json.loads(raw) == expected, resp


async def test_the_azure_catch_all_serves_a_tasks_delivery_log(
    tasklift_env: dict[str, str], azure_functions: dict[str, HttpFunction], worker_process_loop: None
) -> None:
    body = json.dumps({"task_type": "test_noop"}).encode()
    submitted = await call(
        azure_functions["submit_task"], extension_request("POST", "/tasks", body, {"content-type": "application/json"})
    )
    task_id = json.loads(submitted.body)["task_id"]
    path = f"tasks/{task_id}/deliveries"
    log = await call(azure_functions["not_found"], extension_request("GET", f"/{path}", route_params={"path": path}))
    assert log.status_code == 200 and json.loads(log.body) == {"items": []}
