"""What /openapi.json says about each route: parameters, security, responses and their links.

FastAPI builds the document from the keyword arguments of ``add_api_route``; :func:`route_options`
returns them for one route. Nothing here runs on a request: the handlers read their parameters
and the guard checks credentials on every host (``tasklift.http._compat.PlainRoute`` never runs
FastAPI's dependencies or validation). So this module must say what the handlers do, and
``tests/unit/test_openapi.py`` and the schemathesis runs (tests/security) hold the two together.
"""

from __future__ import annotations

from typing import Any

from fastapi import Response, Security
from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPBearer

from tasklift.http import schedule_docs
from tasklift.http.guard import PUBLIC_ROUTES
from tasklift.http.schemas import (
    BatchResult,
    BulkCount,
    BulkList,
    BulkOperation,
    DeliveryList,
    GoogleOperation,
    Health,
    LogLine,
    OperationStatus,
    OutputPage,
    ProblemDetail,
    QueueState,
    SignalDelivery,
    TaskList,
    TaskResource,
    TaskSteps,
    TaskTypeInfo,
)
from tasklift.settings import get_settings
from tasklift.store.bulk import ACTION_STATUSES
from tasklift.store.bulk import STATUSES as BULK_STATUSES
from tasklift.tasks.bulk import MAX_IDS, MAX_VALUES
from tasklift.tasks.flow import flow_schema
from tasklift.tasks.registry import all_task_types
from tasklift.tasks.service import DEFAULT_TASK_TYPE
from tasklift.tasks.states import TaskStatus

PROBLEM = {"model": ProblemDetail, "content": {"application/problem+json": {}}}

#: OpenAPI links (3.1 §4.8.20) from an answer that carries a task resource to what a client does
#: next with that task: its ``task_id`` in the body names it (``Location`` holds the same path).
#: Clients and schemathesis' stateful run follow them (tests/security/test_schemathesis_stateful.py).
_TASK_ID_FROM_BODY = {"task_id": "$response.body#/task_id"}
_TASK_LINKS: dict[str, dict[str, Any]] = {
    "GetTask": {"operationId": "get_task", "description": "The task's status (links.self)"},
    "StreamTask": {"operationId": "stream_task", "description": "Its events as Server-Sent Events (links.stream)"},
    "TaskLogs": {"operationId": "task_logs", "description": "Its log lines (links.logs)"},
    "TaskOutput": {"operationId": "task_output", "description": "Its output chunks (ctx.emit)"},
    "CancelTask": {"operationId": "cancel_task", "description": "Cancel it (links.cancel)"},
    "TaskResult": {"operationId": "task_result", "description": "Its result once it has one"},
    "RetryTask": {"operationId": "retry_task", "description": "Run it again once FAILED or CANCELLED"},
    "GetOperationStatus": {
        "operationId": "get_operation_status",
        "description": "Its Azure status monitor (links.operation; Azure-AsyncOperation)",
    },
    "GetGoogleOperation": {
        "operationId": "get_google_operation",
        "description": "It as an AIP-151 google.longrunning.Operation (links.google_operation)",
    },
}
TASK_LINKS = {name: {**link, "parameters": _TASK_ID_FROM_BODY} for name, link in _TASK_LINKS.items()}

_DOCS: dict[str, dict[str, Any]] = {
    "submit_task": {
        "status_code": 202,
        "response_model": TaskResource,
        "responses": {
            202: {"description": "Accepted: the task is committed", "links": TASK_LINKS},
            **dict.fromkeys((400, 413, 415, 422, 503), PROBLEM),
            409: {**PROBLEM, "description": "A request with this Idempotency-Key is still being processed"},
        },
    },
    "submit_tasks_batch": {
        "response_model": BatchResult,
        "responses": {
            200: {
                "description": "One result per item, in order: 202 items with their task, 422/409 items with a problem"
            },
            **dict.fromkeys((400, 413, 415, 422, 503), PROBLEM),
        },
    },
    "list_tasks": {"response_model": TaskList, "responses": {422: PROBLEM}},
    "get_task": {
        "response_model": TaskResource,
        "responses": {
            200: {"description": "The task", "links": TASK_LINKS},
            304: {"description": "Not modified"},
            404: PROBLEM,
        },
    },
    "cancel_task": {
        "status_code": 204,
        "responses": {
            202: {"model": TaskResource, "description": "Cancellation requested", "links": TASK_LINKS},
            404: PROBLEM,
            409: PROBLEM,
        },
    },
    "task_logs": {"response_model": list[LogLine], "responses": {404: PROBLEM}},
    "task_output": {"response_model": OutputPage, "responses": {404: PROBLEM}},
    "stream_task": {
        "responses": {
            200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events (see API.md)"},
            204: {"description": "The stream already ended (reconnect after the terminal event)"},
            404: PROBLEM,
            422: PROBLEM,
        },
    },
    "task_result": {
        "responses": {
            200: {"content": {"application/json": {}}, "description": "The result, inline or from blob storage"},
            303: {"description": "A large result: Location is a short-lived signed download URL"},
            404: PROBLEM,
            409: PROBLEM,
            410: PROBLEM,
            503: PROBLEM,
        },
    },
    "retry_task": {
        "status_code": 202,
        "response_model": TaskResource,
        "responses": {202: {"description": "Queued again", "links": TASK_LINKS}, 404: PROBLEM, 409: PROBLEM},
    },
    "send_signal": {
        "status_code": 202,
        "response_model": SignalDelivery,
        "responses": {
            202: {"description": "Resumed the WAITING task, or kept for its next wait on this name"},
            **dict.fromkeys((404, 413, 415), PROBLEM),
            409: {**PROBLEM, "description": "The task already finished, or holds too many signals no wait took"},
        },
    },
    "task_steps": {"response_model": TaskSteps, "responses": {404: PROBLEM}},
    "get_operation_status": {"response_model": OperationStatus, "responses": {404: PROBLEM}},
    "get_google_operation": {"response_model": GoogleOperation, "responses": {404: PROBLEM}},
    "cancel_google_operation": {
        "responses": {
            200: {"content": {"application/json": {}}, "description": "google.protobuf.Empty: cancelled or cancelling"},
            404: PROBLEM,
            409: PROBLEM,
        },
    },
    "list_deliveries": {"response_model": DeliveryList, "responses": {404: PROBLEM}},
    "redeliver_delivery": {
        "status_code": 202,
        "responses": {202: {"description": "Due again now, with the same webhook-id"}, 404: PROBLEM},
    },
    "pause_queue": {"response_model": QueueState, "responses": {403: PROBLEM, 404: PROBLEM}},
    "resume_queue": {"response_model": QueueState, "responses": {403: PROBLEM, 404: PROBLEM}},
    "create_bulk": {
        "status_code": 202,
        "response_model": BulkOperation,
        "responses": {
            200: {"model": BulkCount, "description": "dry_run: how many tasks it would change now"},
            202: {"description": "Accepted: the operation is committed; Location: /bulk/{bulk_id}"},
            403: {**PROBLEM, "description": "The filter names another owner and the caller is not an admin"},
            **dict.fromkeys((413, 415, 422), PROBLEM),
        },
    },
    "list_bulk": {"response_model": BulkList, "responses": {422: PROBLEM}},
    "get_bulk": {"response_model": BulkOperation, "responses": {404: PROBLEM}},
    "cancel_bulk": {"response_model": BulkOperation, "responses": {404: PROBLEM, 409: PROBLEM}},
    "task_types": {"response_model": list[TaskTypeInfo]},
    "healthz": {"response_model": Health},
    "readyz": {"response_model": Health, "responses": {503: {"model": Health}}},
    **schedule_docs.docs(PROBLEM),  # /schedules (http/schedules.py)
}


def _param(name: str, where: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "schema": schema, "description": description}


_TASK_ID = _param("task_id", "path", {"type": "string"}, "The task's id (a UUID; any other value names no task: 404)")
_BULK_ID = _param("bulk_id", "path", {"type": "string"}, "The bulk operation's id (a UUID; any other value: 404)")
_QUEUE = _param("queue", "path", {"type": "string"}, "A task type's queue (GET /task-types); any other: 404")
#: An event id; empty is no id (as an absent header: EventSource never sends an empty one).
_EVENT_ID = {"type": "string", "pattern": "^([0-9]{1,18})?$"}


def _parameters(route_name: str) -> list[dict[str, Any]]:
    """The path, query and header parameters of one operation, as its handler reads them."""
    settings = get_settings()
    table: dict[str, list[dict[str, Any]]] = {
        "submit_task": [
            _param(
                "Idempotency-Key",
                "header",
                {"type": "string", "minLength": 1, "maxLength": 255},
                "Resending the same key and body returns the original 202 (Idempotent-Replayed: true)",
            )
        ],
        "list_tasks": [
            _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}, "Page size"),
            _param("status", "query", {"type": "string", "enum": [s.value for s in TaskStatus]}, "Only this status"),
            _param("task_type", "query", {"type": "string"}, "Only this task type"),
            _param(
                "created_after",
                "query",
                {"type": "string", "format": "date-time"},
                "Only tasks created after this RFC 3339 time (no offset: UTC)",
            ),
            _param("cursor", "query", {"type": "string"}, "next_cursor of the previous page (opaque; 422 if forged)"),
        ],
        "get_task": [
            _TASK_ID,
            _param(
                "wait",
                "query",
                {"type": "number", "exclusiveMinimum": 0, "maximum": settings.max_long_poll_seconds},
                "Long poll: answer at the task's next change or after this many seconds",
            ),
            _param("If-None-Match", "header", {"type": "string"}, "An ETag of this task: 304 while it is current"),
        ],
        "cancel_task": [_TASK_ID],
        "get_operation_status": [_TASK_ID],
        "get_google_operation": [_TASK_ID],
        "cancel_google_operation": [_TASK_ID],
        "list_bulk": [
            _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}, "Page size"),
            _param("status", "query", {"type": "string", "enum": list(BULK_STATUSES)}, "Only this status"),
            _param("cursor", "query", {"type": "string"}, "next_cursor of the previous page (opaque; 422 if forged)"),
        ],
        "get_bulk": [_BULK_ID],
        "cancel_bulk": [_BULK_ID],
        "pause_queue": [_QUEUE],
        "resume_queue": [_QUEUE],
        "list_deliveries": [
            _TASK_ID,
            _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "At most"),
        ],
        "redeliver_delivery": [
            _TASK_ID,
            _param("delivery_id", "path", {"type": "string"}, "A delivery's id (its webhook-id, msg_…)"),
        ],
        "retry_task": [_TASK_ID],
        "send_signal": [
            _TASK_ID,
            _param(
                "name",
                "path",
                {"type": "string", "pattern": "^[A-Za-z0-9._~:-]{1,200}$"},
                "The signal's name, as the task's ctx.wait_for(name) has it (any other: 422)",
            ),
        ],
        "task_steps": [_TASK_ID],
        "task_result": [_TASK_ID],
        "task_logs": [
            _TASK_ID,
            _param("after", "query", {"type": "integer", "minimum": 0, "maximum": 2**62, "default": 0}, "After seq"),
            _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "At most"),
        ],
        "task_output": [
            _TASK_ID,
            _param("after", "query", {"type": "integer", "minimum": 0, "maximum": 2**62, "default": 0}, "After index"),
            _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "At most"),
        ],
        "stream_task": [
            _TASK_ID,
            _param("Last-Event-ID", "header", _EVENT_ID, "Resume after this event id (EventSource sends it)"),
            _param("last_event_id", "query", _EVENT_ID, "The same as Last-Event-ID, for clients that cannot send it"),
        ],
        **schedule_docs.parameters(),
    }
    return table.get(route_name, [])


#: Documented only: the guard (tasklift.http.guard) checks credentials on every host. These put the
#: security schemes and each operation's security requirement into /openapi.json.
_SECURITY = [
    Security(
        HTTPBearer(scheme_name="bearer", auto_error=False, description="An API key (tl_…) or an OIDC access token")
    ),
    Security(APIKeyHeader(name="X-API-Key", scheme_name="apiKey", auto_error=False, description="An API key (tl_…)")),
]
_STREAM_SECURITY = [
    *_SECURITY,
    Security(
        APIKeyQuery(
            name="access_token",
            scheme_name="streamToken",
            auto_error=False,
            description="links.stream's short-lived token",
        )
    ),
]


#: The submit's webhook fields (tasks/callbacks.py; docs/webhooks.md).
CALLBACK_PROPERTIES: dict[str, Any] = {
    "callback_url": {
        "type": ["string", "null"],
        "minLength": 1,
        "maxLength": 2048,
        "description": "https URL POSTed (signed, Standard Webhooks) on the task's terminal state; SSRF rules apply",
    },
    "callback_events": {
        "type": ["array", "null"],
        "items": {"enum": ["terminal", "progress"]},
        "minItems": 1,
        "description": 'Which events are sent: "terminal" (default) and/or "progress" (25/50/75 % milestones)',
    },
}
#: Events need a URL: the submit's, or the type's default (tasks/callbacks.py refuses them otherwise).
EVENTS_NEED_A_URL: dict[str, Any] = {
    "callback_events": {
        "anyOf": [
            {"properties": {"callback_events": {"type": "null"}}},
            {"required": ["callback_url"], "properties": {"callback_url": {"type": "string"}}},
        ]
    }
}


def _webhook_callbacks() -> dict[str, Any]:
    """The OpenAPI ``callbacks`` of POST /tasks: the webhook tasklift POSTs to ``callback_url``."""

    def header(name: str, description: str) -> dict[str, Any]:
        schema = {"type": "string"}
        return {"name": name, "in": "header", "required": True, "schema": schema, "description": description}

    post = {
        "summary": "The task reached a terminal state (or a progress milestone it asked for)",
        "description": "Signed per Standard Webhooks; retried with back-off until a 2xx (docs/webhooks.md).",
        "parameters": [
            header("webhook-id", "The delivery's id: the same on every retry; dedupe by it"),
            header("webhook-timestamp", "Unix seconds of this attempt"),
            header("webhook-signature", 'v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">, space-separated'),
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": WEBHOOK_BODY}},
        },
        "responses": {"2XX": {"description": "Received; any other answer (or none) is retried"}},
    }
    return {"taskWebhook": {"{$request.body#/callback_url}": {"post": post}}}


#: The body of a webhook: the Standard Webhooks envelope around the task resource.
WEBHOOK_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["type", "timestamp", "data"],
    "properties": {
        "type": {"enum": ["task.succeeded", "task.failed", "task.cancelled", "task.progress"]},
        "timestamp": {"type": "string", "format": "date-time", "description": "The task's updated_at at the event"},
        "data": {"$ref": "#/components/schemas/TaskResource"},
    },
}


def _submit_body_schema() -> dict[str, Any]:
    variants = []
    for ttype in all_task_types():
        schema = ttype.input_schema()
        default = ttype.name == DEFAULT_TASK_TYPE
        # A missing or null task_type is the default type (the original demo's bodies send null).
        task_type = {"enum": [ttype.name, None]} if default else {"const": ttype.name}
        props = {
            "task_type": task_type,
            "metadata": {"type": ["object", "null"]},
            **CALLBACK_PROPERTIES,
            **schema.get("properties", {}),
        }
        props.update(flow_schema(get_settings().max_schedule_seconds))  # flow control: docs/flow-control.md
        variants.append(
            {
                "type": "object",
                "title": ttype.name,
                "properties": props,
                "required": [*schema.get("required", []), *([] if default else ["task_type"])],
                # Inputs forbid unknown fields; only null ones are tolerated (the original demo sends them).
                "additionalProperties": {"type": "null"},
                **({} if ttype.callback_url else {"dependentSchemas": EVENTS_NEED_A_URL}),
            }
        )
    return {
        "required": True,
        "content": {"application/json": {"schema": {"oneOf": variants}}},
        "description": "`task_type` (default vector_processing) plus that type's input fields; see GET /task-types.",
    }


def _batch_body_schema() -> dict[str, Any]:
    task = _submit_body_schema()["content"]["application/json"]["schema"]
    item = {
        "type": "object",
        "properties": {"task": task, "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 255}},
        "required": ["task"],
        "additionalProperties": False,
    }
    items = {"type": "array", "items": item, "minItems": 1, "maxItems": get_settings().batch_max_items}
    schema = {"type": "object", "properties": {"items": items}, "required": ["items"], "additionalProperties": False}
    return {
        "required": True,
        "content": {"application/json": {"schema": schema}},
        "description": "Up to batch_max_items submits: each item's task is a POST /tasks body.",
    }


def _one_or_many(item: dict[str, Any], most: int) -> dict[str, Any]:
    return {"oneOf": [item, {"type": "array", "items": item, "minItems": 1, "maxItems": most}]}


def _bulk_body_schema() -> dict[str, Any]:
    """``POST /bulk``'s body (tasklift.tasks.bulk): one variant per action, each with its statuses."""
    types = _one_or_many({"enum": sorted(t.name for t in all_task_types())}, MAX_VALUES)
    time = {"type": "string", "format": "date-time"}
    text = {"type": "string", "minLength": 1, "maxLength": 255}
    selecting = ("status", "task_type", "created_after", "created_before", "key_prefix", "task_id")
    variants = []
    for action, statuses in ACTION_STATUSES.items():
        properties = {
            "status": _one_or_many({"enum": list(statuses)}, MAX_VALUES),  # repeats are harmless
            "task_type": types,
            "created_after": time,
            "created_before": time,
            "key_prefix": text,
            "task_id": _one_or_many({"type": "string", "format": "uuid"}, MAX_IDS),
            "owner": {**text, "description": "The tasks' owner: admins only (another caller naming another: 403)"},
        }
        filt = {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
            "anyOf": [{"required": [name]} for name in selecting],
        }
        variants.append(
            {
                "type": "object",
                "title": action,
                "properties": {
                    "action": {"const": action},
                    "filter": filt,
                    "dry_run": {"type": "boolean", "default": False},
                },
                "required": ["action", "filter"],
                "additionalProperties": False,
            }
        )
    return {
        "required": True,
        "content": {"application/json": {"schema": {"oneOf": variants}}},
        "description": "What to do with which tasks (docs/bulk.md): status, task_type, a created time range, "
        "an Idempotency-Key prefix, task ids, an owner (admins).",
    }


def route_options(name: str) -> dict[str, Any]:
    """The keyword arguments of FastAPI's ``add_api_route`` that document the route called ``name``."""
    docs: dict[str, Any] = {"response_class": Response, "operation_id": name, **_DOCS.get(name, {})}
    openapi_extra: dict[str, Any] = {}
    if name == "submit_task":
        openapi_extra["requestBody"] = _submit_body_schema()
        openapi_extra["callbacks"] = _webhook_callbacks()
    if name == "submit_tasks_batch":
        openapi_extra["requestBody"] = _batch_body_schema()
    if name == "send_signal":
        openapi_extra["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": {}}},
            "description": "Any JSON value (none: null): what ctx.wait_for returns",
        }
    if name == "create_bulk":
        openapi_extra["requestBody"] = _bulk_body_schema()
    if name == "create_schedule":
        openapi_extra["requestBody"] = schedule_docs.body_schema()
    if parameters := _parameters(name):
        openapi_extra["parameters"] = parameters
    if openapi_extra:
        docs["openapi_extra"] = openapi_extra
    # routes.handle, on every route: too many headers (431), a NUL in any query parameter (422), the
    # store down (503).
    responses = {422: PROBLEM, 431: PROBLEM, 503: PROBLEM, **docs.get("responses", {})}
    if name not in PUBLIC_ROUTES:
        # tasklift.http.guard: no or bad credentials (401), over a limit (429); routes.handle: a value
        # the store refuses (400).
        responses = {**responses, 400: PROBLEM, 401: PROBLEM, 429: PROBLEM}
        docs["dependencies"] = _STREAM_SECURITY if name == "stream_task" else _SECURITY
    docs["responses"] = responses
    return docs
