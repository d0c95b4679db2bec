"""/openapi.json against the route table and the HTTP contract (API.md), route by route.

What the document says is what schemathesis generates from and checks against (tests/security):
a parameter, status or link missing here is never exercised there.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tasklift.http.asgi import create_app
from tasklift.http.guard import PUBLIC_ROUTES
from tasklift.http.routes import ROUTES

#: Every status each operation answers with, from API.md and the handlers (besides the ones every
#: operation can give: 422 a NUL in a query parameter, 431 too many headers, 503 the store down; and,
#: off the public routes, 400 a value the store refuses, 401 no or bad credentials, 429 over a limit).
STATUSES = {
    "submit_task": {202, 409, 413, 415, 422},
    "submit_tasks_batch": {200, 413, 415, 422},
    "list_tasks": {200, 422},
    "get_task": {200, 304, 404, 422},
    "cancel_task": {202, 204, 404, 409},
    "task_logs": {200, 404, 422},
    "task_output": {200, 404, 422},
    "stream_task": {200, 204, 404, 422},
    "task_result": {200, 303, 404, 409, 410},
    "retry_task": {202, 404, 409},
    "send_signal": {202, 404, 409, 413, 415, 422},
    "task_steps": {200, 404},
    "list_deliveries": {200, 404, 422},
    "redeliver_delivery": {202, 404},
    "get_operation_status": {200, 404},
    "get_google_operation": {200, 404},
    "cancel_google_operation": {200, 404, 409},
    "pause_queue": {200, 403, 404},
    "resume_queue": {200, 403, 404},
    "create_bulk": {200, 202, 403, 413, 415, 422},
    "list_bulk": {200, 422},
    "get_bulk": {200, 404},
    "cancel_bulk": {200, 404, 409},
    "create_schedule": {201, 409, 413, 415, 422},
    "list_schedules": {200, 422},
    "get_schedule": {200, 404},
    "delete_schedule": {204, 404},
    "pause_schedule": {200, 404},
    "resume_schedule": {200, 404},
    "schedule_runs": {200, 404, 422},
    "task_types": {200},
    "healthz": {200},
    "readyz": {200},
    "metrics": {200},
}
#: Operations whose answer is a task resource, and so links to what a client does next with it.
LINKED = {("submit_task", "202"), ("get_task", "200"), ("cancel_task", "202"), ("retry_task", "202")}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app().openapi()


def _operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {route.name: document["paths"][route.template][route.method.lower()] for route in ROUTES}


def test_every_route_is_one_operation_named_after_it(document: dict[str, Any]) -> None:
    operations = _operations(document)
    assert {name: op["operationId"] for name, op in operations.items()} == {r.name: r.name for r in ROUTES}
    assert set(STATUSES) == {r.name for r in ROUTES}, "a route was added: say what it answers"


@pytest.mark.parametrize("route", ROUTES, ids=[r.name for r in ROUTES])
def test_each_operation_declares_its_path_parameters_security_and_every_status(
    document: dict[str, Any], route: Any
) -> None:
    operation = _operations(document)[route.name]
    declared = {(p["in"], p["name"]) for p in operation.get("parameters", [])}
    assert {("path", name) for name in re.findall(r"\{(\w+)\}", route.template)} <= declared
    expected = STATUSES[route.name] | {422, 431, 503}
    if route.name not in PUBLIC_ROUTES:
        expected |= {400, 401, 429}
        assert operation["security"], route.name
    else:
        assert "security" not in operation, route.name
    assert {int(code) for code in operation["responses"]} == expected
    for code, response in operation["responses"].items():
        if int(code) >= 400 and route.name not in ("readyz",):
            assert "application/problem+json" in response["content"], (route.name, code)


def test_answers_with_a_task_link_to_its_status_stream_logs_and_cancel(document: dict[str, Any]) -> None:
    operations = _operations(document)
    for name, code in LINKED:
        links = operations[name]["responses"][code]["links"]
        assert {"GetTask", "StreamTask", "TaskLogs", "CancelTask"} <= set(links), name
    unlinked = {
        (name, code) for name, op in operations.items() for code, resp in op["responses"].items() if "links" in resp
    }
    assert unlinked == LINKED


def test_every_link_names_an_operation_and_its_parameters_and_a_field_the_answer_has(
    document: dict[str, Any],
) -> None:
    operations = _operations(document)
    task = document["components"]["schemas"]["TaskResource"]
    for name, code in LINKED:
        for link in operations[name]["responses"][code]["links"].values():
            target = operations[link["operationId"]]
            params = {p["name"] for p in target.get("parameters", [])}
            for param, expression in link["parameters"].items():
                assert param in params, (name, link)
                pointer = expression.removeprefix("$response.body#/")
                assert pointer in task["properties"] and pointer in task["required"], (name, expression)


def test_the_submit_describes_its_webhook_as_an_openapi_callback(document: dict[str, Any]) -> None:
    """docs/webhooks.md: the POST to callback_url, its Standard Webhooks headers and its body."""
    submit = document["paths"]["/tasks"]["post"]
    [(expression, path_item)] = submit["callbacks"]["taskWebhook"].items()
    assert expression == "{$request.body#/callback_url}"
    webhook = path_item["post"]
    assert {p["name"] for p in webhook["parameters"] if p["in"] == "header"} == {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
    body = webhook["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["data"] == {"$ref": "#/components/schemas/TaskResource"}
    assert "TaskResource" in document["components"]["schemas"]
    assert set(webhook["responses"]) == {"2XX"}
    for variant in submit["requestBody"]["content"]["application/json"]["schema"]["oneOf"]:
        assert {"callback_url", "callback_events"} <= set(variant["properties"])
    from openapi_spec_validator import validate

    validate(document)  # the callbacks entry included, the document is valid OpenAPI 3.1
