"""Real LRO pollers drive tasklift tasks to their end: azure-core's LROPoller on the status monitor
that Azure-AsyncOperation names (API.md keeps Operation-Location the task itself), and
google-api-core's operation future over its REST Operations client.

Real API (uvicorn), PostgreSQL, Redis and Celery worker; the pollers are the SDKs' own code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from azure.core import PipelineClient
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline import PipelineContext, PipelineResponse
from azure.core.polling import LROPoller
from azure.core.polling.base_polling import LROBasePolling, OperationResourcePolling
from azure.core.rest import HttpRequest
from google.api_core import exceptions as google_exceptions
from google.api_core import operation as google_operation
from google.api_core import operations_v1
from google.api_core.operations_v1.transports.rest import OperationsRestTransport
from google.auth.credentials import AnonymousCredentials
from google.protobuf import struct_pb2

from tests.conftest import wait_for_status

#: The one binding a client of this service configures (its URL layout; every Google API states its own).
GOOGLE_HTTP_OPTIONS = {
    "google.longrunning.Operations.GetOperation": [{"method": "get", "uri": "/v1/{name=operations/*}"}],
    "google.longrunning.Operations.CancelOperation": [
        {"method": "post", "uri": "/v1/{name=operations/*}:cancel", "body": "*"}
    ],
}


@pytest.fixture
def azure_client(api: str) -> Iterator[PipelineClient]:
    with PipelineClient(base_url=api) as pipeline:
        yield pipeline


def begin_submit(pipeline: PipelineClient, api: str, body: dict[str, Any]) -> tuple[str, LROPoller[dict[str, Any]]]:
    """What a generated azure-core client's ``begin_*`` does: send, then poll with LROBasePolling, its
    operation-resource algorithm reading the monitor's URL from Azure-AsyncOperation (a constructor
    argument of azure-core's own class: the polling code is azure-core's)."""
    response = pipeline.send_request(HttpRequest("POST", f"{api}/tasks", json=body))
    assert response.status_code == 202, response.text()
    initial = PipelineResponse(response.request, response, PipelineContext(None))
    monitor = OperationResourcePolling(operation_location_header="azure-asyncoperation")
    poller = LROPoller(
        pipeline, initial, lambda final: final.http_response.json(), LROBasePolling(lro_algorithms=[monitor])
    )
    return response.json()["task_id"], poller


def test_azure_asyncoperation_names_the_azure_status_monitor(client: httpx.Client, api: str) -> None:
    resp = client.post("/tasks", json={"task_type": "test_noop"})
    task = resp.json()
    assert resp.headers["Azure-AsyncOperation"] == f"{api}/operations/{task['task_id']}"
    assert resp.headers["Operation-Location"] == f"{api}/tasks/{task['task_id']}"  # API.md
    assert resp.headers["Location"] == f"/tasks/{task['task_id']}"
    assert task["links"]["operation"] == f"/operations/{task['task_id']}"
    monitor = client.get(resp.headers["Azure-AsyncOperation"])
    assert monitor.status_code == 200 and monitor.headers["Retry-After"] == "1"
    body = monitor.json()
    assert body["id"] == task["task_id"] and body["status"] == "NotStarted" and body["percentComplete"] == 0
    assert "error" not in body and "result" not in body


def test_azure_core_poller_drives_a_task_to_success_and_gets_the_task(
    azure_client: PipelineClient, api: str, start_worker
) -> None:
    start_worker()
    task_id, poller = begin_submit(azure_client, api, {"task_type": "test_sleep", "seconds": 1})
    task = poller.result(timeout=60)
    assert poller.status() == "Succeeded" and poller.done()
    # The final GET follows the monitor's resourceLocation: the result is the task resource.
    assert task["task_id"] == task_id and task["status"] == "SUCCESS" and task["result"] is not None


def test_azure_core_poller_reports_a_failed_task_as_failed(
    azure_client: PipelineClient, api: str, start_worker
) -> None:
    start_worker()
    task_id, poller = begin_submit(azure_client, api, {"task_type": "test_fail", "message": "disk on fire"})
    with pytest.raises(HttpResponseError, match="disk on fire") as raised:  # azure-core reads the monitor's error
        poller.result(timeout=60)
    assert raised.value.error is not None and raised.value.error.code == "ValueError"
    assert poller.status() == "Failed"
    monitor = poller.polling_method().resource()  # the last answer it read: the monitor
    assert monitor["id"] == task_id and monitor["error"] == {"code": "ValueError", "message": "disk on fire"}


def test_azure_core_poller_reports_a_cancelled_task_as_canceled(
    azure_client: PipelineClient, api: str, client: httpx.Client
) -> None:
    task_id, poller = begin_submit(azure_client, api, {"task_type": "test_noop"})  # no worker: it stays PENDING
    assert client.delete(f"/tasks/{task_id}").status_code == 204
    with pytest.raises(HttpResponseError, match='"status":"Canceled"'):  # OperationFailed, with the monitor
        poller.result(timeout=60)
    assert poller.status() == "Canceled"


def google_client(api: str) -> operations_v1.AbstractOperationsClient:
    transport = OperationsRestTransport(
        host=api, credentials=AnonymousCredentials(), url_scheme="http", http_options=GOOGLE_HTTP_OPTIONS
    )
    return operations_v1.AbstractOperationsClient(transport=transport)


def google_future(ops: operations_v1.AbstractOperationsClient, task_id: str) -> google_operation.Operation:
    first = ops.get_operation(f"operations/{task_id}")
    return google_operation.from_gapic(first, ops, struct_pb2.Struct, metadata_type=struct_pb2.Struct)


def test_google_operation_future_gets_the_task_on_success(client: httpx.Client, api: str, start_worker) -> None:
    task_id = client.post("/tasks", json={"task_type": "test_noop"}).json()["task_id"]
    future = google_future(google_client(api), task_id)
    assert not future.done() and future.metadata["status"] == "PENDING"
    start_worker()
    response = future.result(timeout=60)
    assert response["task_id"] == task_id and response["status"] == "SUCCESS"
    assert dict(response["result"]) == {"ok": True}
    assert future.metadata["status"] == "SUCCESS" and future.metadata["attempts"] == 1


def test_google_operation_future_raises_the_rpc_error_of_a_failed_task(
    client: httpx.Client, api: str, start_worker
) -> None:
    start_worker()
    task_id = client.post("/tasks", json={"task_type": "test_fail", "message": "disk on fire"}).json()["task_id"]
    future = google_future(google_client(api), task_id)
    with pytest.raises(google_exceptions.Unknown, match="disk on fire"):  # google.rpc.Code 2
        future.result(timeout=60)


def test_google_client_cancels_a_pending_task_and_sees_code_1(client: httpx.Client, api: str) -> None:
    task_id = client.post("/tasks", json={"task_type": "test_noop"}).json()["task_id"]
    future = google_future(google_client(api), task_id)
    assert future.cancel() is True  # Operations.CancelOperation → POST /v1/operations/{id}:cancel
    assert future.cancelled()
    assert wait_for_status(client, task_id, "CANCELLED")["status"] == "CANCELLED"
    with pytest.raises(google_exceptions.Cancelled):
        future.result(timeout=10)


def test_a_missing_operation_is_not_found_to_both_clients(client: httpx.Client, api: str) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(google_exceptions.NotFound):
        google_client(api).get_operation(f"operations/{missing}")
    resp = client.get(f"/operations/{missing}")
    assert resp.status_code == 404 and resp.headers["Content-Type"] == "application/problem+json"
