"""Standard long-running-operation views of a task, for the pollers SDKs already ship (issue 22).

Two read-only views beside the task resource, each a different representation of the same row,
under the same authorisation as ``GET /tasks/{id}`` (another tenant's task is 404):

- ``GET /operations/{id}``: the status monitor of the Azure REST API guidelines ("Long-running
  operations"): ``{"id", "status": NotStarted|Running|Succeeded|Failed|Canceled, "percentComplete",
  "error": {"code", "message"}, "result", ...}``. ``POST /tasks`` names it in ``Operation-Location``:
  azure-core's ``OperationResourcePolling`` polls that header's URL and reads ``status`` as one of
  the guidelines' words (``succeeded``, ``failed``, ``canceled``, case-insensitive). The task
  resource says ``SUCCESS``, which that poller does not know as terminal, so it would poll the
  task forever; the monitor is what the header's name promises. On success the monitor carries
  ``resourceLocation`` (the task's absolute URL), which the poller GETs for its final result.
- ``GET /v1/operations/{id}``: a ``google.longrunning.Operation`` in its proto3 JSON form (AIP-151):
  ``name`` (``operations/{id}``), ``done``, ``metadata`` and ``response`` as ``google.protobuf.Struct``
  ``Any`` values, ``error`` as a ``google.rpc.Status``. Only the proto's fields appear: Google's
  REST clients parse it with unknown fields refused. ``POST /v1/operations/{id}:cancel`` is
  ``Operations.CancelOperation`` (the same as ``DELETE /tasks/{id}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasklift.blobs import claims
from tasklift.http.guard import owner_scope
from tasklift.http.handlers import request_runtime
from tasklift.http.resources import retry_after, task_resource
from tasklift.http.types import HttpRequest, HttpResponse, json_response, rfc3339
from tasklift.settings import get_settings
from tasklift.tasks.states import TERMINAL, TaskStatus

#: A task's status as the Azure guidelines' operation status. A PENDING task that has run before
#: (a retry's back-off, a lease taken over) is Running: the operation as a whole has started.
AZURE_STATUS: dict[TaskStatus, str] = {
    TaskStatus.PENDING: "NotStarted",
    TaskStatus.RUNNING: "Running",
    TaskStatus.SUCCESS: "Succeeded",
    TaskStatus.FAILED: "Failed",
    TaskStatus.CANCELLED: "Canceled",
    TaskStatus.EXPIRED: "Failed",  # with error code "Expired" (its error's type)
}

#: google.rpc.Code of a FAILED task by its error type; any other failure is UNKNOWN (2), the code
#: for an error raised by code that gives no more information (the task's own exception).
GOOGLE_CODES: dict[str, int] = {"TimeLimitExceeded": 4, "InvalidInput": 3, "UnknownTaskType": 12}
GOOGLE_UNKNOWN = 2
GOOGLE_CANCELLED = 1  #: AIP-151: a cancelled operation has an error with code 1 (CANCELLED)
GOOGLE_DEADLINE_EXCEEDED = 4  #: an EXPIRED task: not started by its expires_at
STRUCT_TYPE = "type.googleapis.com/google.protobuf.Struct"


def azure_status(row: Mapping[str, Any]) -> str:
    """The Azure operation status of the task ``row``."""
    status = TaskStatus(row["status"])
    if status == TaskStatus.PENDING and row["started_at"] is not None:
        return "Running"
    return AZURE_STATUS[status]


def azure_monitor(row: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    """The Azure status monitor of the task ``row``; ``base_url`` makes ``resourceLocation`` absolute."""
    tid = str(row["id"])
    status = azure_status(row)
    body: dict[str, Any] = {
        "id": tid,
        "status": status,
        "percentComplete": (row["progress"] or {}).get("percent") or 0,
        "createdDateTime": rfc3339(row["created_at"]),
        "lastUpdatedDateTime": rfc3339(row["updated_at"]),
    }
    if status == "Failed":
        error = row["error"] or {}
        body["error"] = {"code": error.get("type") or "Failed", "message": error.get("message") or "the task failed"}
    elif status == "Succeeded":
        public = claims.public_result(tid, row["result"])
        body["result"] = public["result"]
        if public.get("result_url"):
            body["resultUrl"] = public["result_url"]
        body["resourceLocation"] = f"{base_url.rstrip('/')}/tasks/{tid}"
    return body


def google_operation(row: Mapping[str, Any]) -> dict[str, Any]:
    """The task ``row`` as a ``google.longrunning.Operation`` in proto3 JSON (AIP-151)."""
    resource = task_resource(row)
    status = TaskStatus(row["status"])
    metadata = {
        name: resource[name]
        for name in ("task_id", "task_type", "status", "progress", "attempts", "cancel_requested")
        + ("created_at", "started_at", "updated_at", "completed_at")
    }
    operation: dict[str, Any] = {
        "name": f"operations/{resource['task_id']}",
        "metadata": {"@type": STRUCT_TYPE, "value": metadata},
        "done": status in TERMINAL,
    }
    if status == TaskStatus.SUCCESS:
        # AIP-151: the response of a create is the resource it created.
        operation["response"] = {"@type": STRUCT_TYPE, "value": resource}
    elif status == TaskStatus.CANCELLED:
        operation["error"] = {"code": GOOGLE_CANCELLED, "message": "the task was cancelled"}
    elif status == TaskStatus.EXPIRED:
        operation["error"] = {"code": GOOGLE_DEADLINE_EXCEEDED, "message": "the task was not started by its expires_at"}
    elif status == TaskStatus.FAILED:
        error = row["error"] or {}
        code = GOOGLE_CODES.get(error.get("type") or "", GOOGLE_UNKNOWN)
        operation["error"] = {"code": code, "message": error.get("message") or "the task failed"}
    return operation


def _headers(row: Mapping[str, Any]) -> dict[str, str]:
    headers = {"Cache-Control": "no-store"}
    seconds = retry_after(row, floor=get_settings().poll_retry_after_seconds)
    if seconds is not None:  # azure-core's poller waits this long (its default without it is 30 s)
        headers["Retry-After"] = str(seconds)
    return headers


async def get_operation_status(req: HttpRequest) -> HttpResponse:
    """GET /operations/{id}: the task's Azure status monitor (``Azure-AsyncOperation`` names it)."""
    row = await request_runtime(req).service.get(owner_scope(req), req.path_params["task_id"])
    base = get_settings().public_url or req.base_url
    return json_response(200, azure_monitor(row, base), _headers(row))


async def get_google_operation(req: HttpRequest) -> HttpResponse:
    """GET /v1/operations/{id}: the task as a ``google.longrunning.Operation`` (AIP-151)."""
    row = await request_runtime(req).service.get(owner_scope(req), req.path_params["task_id"])
    return json_response(200, google_operation(row), _headers(row))


async def cancel_google_operation(req: HttpRequest) -> HttpResponse:
    """POST /v1/operations/{id}:cancel: ``Operations.CancelOperation``, i.e. DELETE /tasks/{id}.

    Answers ``google.protobuf.Empty`` (``{}``) once cancelled or cancelling; a finished task is 409,
    as every conflict with a task's state (Google's clients raise ``google.api_core.exceptions.Conflict``).
    """
    await request_runtime(req).service.cancel(owner_scope(req), req.path_params["task_id"])
    return json_response(200, {}, {"Cache-Control": "no-store"})
