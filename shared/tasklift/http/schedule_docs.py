"""What /openapi.json says about ``/schedules`` (http/schedules.py): its models, parameters and body.

Kept beside :mod:`tasklift.http.openapi`, which merges :data:`DOCS`, :func:`parameters` and
:func:`body_schema` into the routes' options.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from tasklift.settings import KEY_CHARS, MAX_KEY_LENGTH
from tasklift.tasks import schedules
from tasklift.tasks.flow import MAX_PRIORITY, MIN_PRIORITY


class ScheduleLinks(BaseModel):
    self: str
    runs: str
    pause: str
    resume: str
    last_task: str | None = None


class ScheduleResource(BaseModel):
    """A cron or interval schedule (docs/flow-control.md, "Schedules")."""

    schedule_id: str
    name: str
    task_type: str
    payload: dict[str, Any]
    cron: str | None = Field(None, description="5-field cron expression, in timezone")
    timezone: str | None = Field(None, description="IANA time zone of cron (null for an interval)")
    interval_seconds: float | None = None
    catchup: str = Field(description="latest | all: what a late firer fires (docs/flow-control.md)")
    priority: int | None = None
    ttl_seconds: float | None = None
    concurrency_key: str | None = None
    fairness_key: str | None = None
    paused: bool
    next_fire_at: str | None = Field(None, description="Its next fire time (null while paused)")
    last_fired_at: str | None = Field(None, description="The nominal time of its latest firing")
    last_task_id: str | None = None
    last_error: str | None = Field(
        None, description="Why its latest time fired nothing (its payload no longer validates)"
    )
    fired: int = Field(description="Tasks it has submitted")
    created_at: str
    updated_at: str
    links: ScheduleLinks


class ScheduleList(BaseModel):
    items: list[ScheduleResource]
    next_cursor: str | None = None


class ScheduleRun(BaseModel):
    fire_at: str = Field(description="The nominal fire time")
    task_id: str
    status: str
    created_at: str
    links: dict[str, str]


class ScheduleRuns(BaseModel):
    items: list[ScheduleRun]


def docs(problem: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The routes' responses (``problem``: the problem+json response of openapi.py)."""
    found = {"responses": {404: problem}}
    return {
        "create_schedule": {
            "status_code": 201,
            "response_model": ScheduleResource,
            "responses": {
                201: {"description": "Created; Location: /schedules/{schedule_id}"},
                409: {**problem, "description": "The caller has a schedule of this name"},
                **dict.fromkeys((413, 415, 422), problem),
            },
        },
        "list_schedules": {"response_model": ScheduleList},
        "get_schedule": {"response_model": ScheduleResource, **found},
        "pause_schedule": {"response_model": ScheduleResource, **found},
        "resume_schedule": {"response_model": ScheduleResource, **found},
        "delete_schedule": {"status_code": 204, "responses": {204: {"description": "Deleted"}, 404: problem}},
        "schedule_runs": {"response_model": ScheduleRuns, **found},
    }


def _param(name: str, where: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "schema": schema, "description": description}


_ID = _param("schedule_id", "path", {"type": "string"}, "The schedule's id (a UUID; any other value: 404)")
_LIMIT = _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}, "Page size")


def parameters() -> dict[str, list[dict[str, Any]]]:
    return {
        "list_schedules": [
            _LIMIT,
            _param("cursor", "query", {"type": "string"}, "next_cursor of the previous page (opaque; 422 if forged)"),
        ],
        "get_schedule": [_ID],
        "pause_schedule": [_ID],
        "resume_schedule": [_ID],
        "delete_schedule": [_ID],
        "schedule_runs": [
            _ID,
            _LIMIT,
            _param("before", "query", {"type": "string", "format": "date-time"}, "Only firings before this time"),
        ],
    }


def body_schema() -> dict[str, Any]:
    """``POST /schedules``'s body (tasklift.tasks.schedules.parse_spec)."""
    key = {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": KEY_CHARS}
    common: dict[str, Any] = {
        "name": {**key, "maxLength": schedules.MAX_NAME_LENGTH, "description": "Unique per principal"},
        "task_type": {**key, "description": "A task type (GET /task-types)"},
        "payload": {"type": "object", "description": "The type's input, as in POST /tasks"},
        "catchup": {"type": "string", "enum": list(schedules.CATCHUP_POLICIES), "default": "latest"},
        "paused": {"type": "boolean", "default": False},
        "priority": {"type": "integer", "minimum": MIN_PRIORITY, "maximum": MAX_PRIORITY},
        "ttl_seconds": {"type": "number", "exclusiveMinimum": 0},
        "concurrency_key": key,
        "fairness_key": key,
    }
    cron = {
        "type": "object",
        "required": ["name", "task_type", "cron"],
        "additionalProperties": False,
        "properties": {
            **common,
            "cron": {"type": "string", "description": "5 fields: minute hour day-of-month month day-of-week"},
            "timezone": {"type": "string", "default": "UTC", "description": "An IANA time zone name"},
        },
    }
    interval = {
        "type": "object",
        "required": ["name", "task_type", "interval_seconds"],
        "additionalProperties": False,
        "properties": {
            **common,
            "interval_seconds": {
                "type": "number",
                "minimum": schedules.MIN_INTERVAL,
                "maximum": schedules.MAX_INTERVAL,
            },
        },
    }
    return {
        "required": True,
        "content": {"application/json": {"schema": {"oneOf": [cron, interval]}}},
        "description": "A cron or interval schedule; each firing submits task_type with payload (docs/flow-control.md)",
    }
