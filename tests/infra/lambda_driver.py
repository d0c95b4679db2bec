"""Run in a fresh interpreter with only a built Lambda layer on sys.path (tests/infra/test_sam_build.py).

Imports ``handlers`` the way Lambda does at init, then calls each function of template.yaml once with
an API Gateway HTTP API (v2) event, in an order that walks one task through its life: submit, read,
list, logs, a bounded stream window, cancel, result, retry. With ``LAMBDA_DRIVER_TOKEN`` set, every
call carries it as a bearer token (the OIDC path). Prints one JSON line: each call's status,
the time the init import took, and the top-level modules the process imported (its real closure).
Not a pytest module (no ``test_`` prefix): it must import nothing but the layer and the standard library.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time


class Context:
    function_name = "tasklift"
    aws_request_id = "r"

    def get_remaining_time_in_millis(self) -> int:
        return 25_000


def event(method: str, path: str, body: object = None, query: str = "") -> dict[str, object]:
    headers = {"host": "api.example", "content-type": "application/json"}
    if token := os.environ.get("LAMBDA_DRIVER_TOKEN"):
        headers["authorization"] = f"Bearer {token}"
    return {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "http": {"method": method, "path": path, "sourceIp": "127.0.0.1", "protocol": "HTTP/1.1"},
            "stage": "$default",
            "requestId": "r",
            "accountId": "1",
            "apiId": "a",
            "domainName": "api.example",
            "timeEpoch": 0,
        },
        "body": None if body is None else json.dumps(body),
        "isBase64Encoded": False,
    }


def body(response: dict[str, object]) -> str:
    text = str(response["body"])
    return base64.b64decode(text).decode() if response.get("isBase64Encoded") else text


def main() -> None:
    builtin = set(sys.modules)
    started = time.perf_counter()
    import handlers

    init_seconds = time.perf_counter() - started
    calls: list[tuple[str, int]] = []

    def call(name: str, method: str, path: str, body: object = None, query: str = "") -> dict[str, object]:
        response: dict[str, object] = getattr(handlers, name)(event(method, path, body, query), Context())
        calls.append((name, int(str(response["statusCode"]))))
        return response

    call("healthz", "GET", "/healthz")
    call("readyz", "GET", "/readyz")
    call("task_types", "GET", "/task-types")
    submitted = call("submit_task", "POST", "/tasks", {"task_type": "vector_processing", "duration": 1})
    assert submitted["statusCode"] == 202, submitted
    task_id = json.loads(body(submitted))["task_id"]
    call("get_task", "GET", f"/tasks/{task_id}")
    call("list_tasks", "GET", "/tasks")
    call("task_logs", "GET", f"/tasks/{task_id}/logs")
    call("task_output", "GET", f"/tasks/{task_id}/output")
    call("task_steps", "GET", f"/tasks/{task_id}/steps")
    call("get_operation_status", "GET", f"/operations/{task_id}")
    call("get_google_operation", "GET", f"/v1/operations/{task_id}")
    call("cancel_task", "DELETE", f"/tasks/{task_id}")
    call("stream_task", "GET", f"/tasks/{task_id}/stream")
    call("task_result", "GET", f"/tasks/{task_id}/result")
    call("retry_task", "POST", f"/tasks/{task_id}/retry")
    call("send_signal", "POST", f"/tasks/{task_id}/signals/approval", {"ok": True})
    call("not_found", "GET", "/nothing-here")
    modules = sorted({name.split(".")[0] for name in set(sys.modules) - builtin})
    print(json.dumps({"init_seconds": init_seconds, "calls": calls, "modules": modules}))


if __name__ == "__main__":
    main()
