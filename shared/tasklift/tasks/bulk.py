"""What a bulk operation asks for (``POST /bulk``), validated: the action, the filter, a dry run.

Pure: no store, no I/O. The body is ``{"action": "cancel" | "retry" | "purge", "filter": {...},
"dry_run": false}``; the filter's fields are

- ``status``: one status or a list, among those the action changes (cancel: PENDING, RUNNING, WAITING;
  retry: FAILED, CANCELLED; purge: SUCCESS, FAILED, CANCELLED, EXPIRED); absent: all of those;
- ``task_type``: one registered type or a list;
- ``created_after`` / ``created_before``: RFC 3339 times (no offset: UTC); an empty range selects nothing;
- ``key_prefix``: the Idempotency-Key the task was submitted with starts with this (while the key's
  record lives: ``idempotency_ttl_seconds``);
- ``task_id``: a list of task ids (up to 1,000: the dashboard's selected rows);
- ``owner``: the tasks' owner (a principal), for an admin; another caller may name only itself.

At least one field besides ``status`` or ``owner`` must be given, or ``status`` itself: a filter
says what it selects (``{"status": "PENDING"}`` is a filter; ``{}`` is refused). Everything refused
is an :class:`~tasklift.tasks.service.InvalidInput` whose ``errors[].loc`` points into the body.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tasklift.store.bulk import ACTION_STATUSES
from tasklift.tasks.registry import get_task_type
from tasklift.tasks.service import InvalidInput, utc_instant

ACTIONS = tuple(ACTION_STATUSES)
FILTER_FIELDS = ("status", "task_type", "created_after", "created_before", "key_prefix", "task_id", "owner")
_BODY_FIELDS = frozenset({"action", "filter", "dry_run"})
MAX_VALUES = 100  #: values in one list of the filter
MAX_IDS = 1000  #: task ids in one filter
MAX_TEXT = 255


@dataclass(frozen=True)
class BulkRequest:
    """A validated ``POST /bulk`` body: ``filter`` in its stored form (lists, normalised times)."""

    action: str
    filter: dict[str, Any]
    owner: str | None  #: the filter's ``owner`` (the caller decides who may name whom)
    dry_run: bool


def _invalid(loc: list[Any], detail: str, msg: str) -> InvalidInput:
    return InvalidInput(detail, [{"loc": ["body", *loc], "msg": msg}])


def _text(value: Any, loc: list[Any], what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT or "\x00" in value:
        raise _invalid(loc, f"{what} must be 1 to {MAX_TEXT} characters", "a non-empty string, no NUL")
    return value


def _texts(value: Any, loc: list[Any], what: str) -> list[str]:
    values = value if isinstance(value, list) else [value]
    if not 0 < len(values) <= MAX_VALUES:
        raise _invalid(loc, f"{what} takes 1 to {MAX_VALUES} values", f"a string or a list of 1 to {MAX_VALUES}")
    return sorted({_text(item, [*loc, i] if isinstance(value, list) else loc, what) for i, item in enumerate(values)})


def _task_ids(value: Any) -> list[str]:
    loc = ["filter", "task_id"]
    values = value if isinstance(value, list) else [value]
    if not 0 < len(values) <= MAX_IDS:
        raise _invalid(loc, f"task_id takes 1 to {MAX_IDS} ids", f"a task id or a list of 1 to {MAX_IDS}")
    ids = set()
    for i, item in enumerate(values):
        try:
            ids.add(str(uuid.UUID(item)))
        except (ValueError, TypeError, AttributeError):
            raise _invalid([*loc, i] if isinstance(value, list) else loc, "task_id holds task ids", "a UUID") from None
    return sorted(ids)


def _instant(text: str) -> datetime:
    """An RFC 3339 time in UTC; one beyond UTC's years 1 to 9999 (year 1 at a positive offset, 9999 at
    a negative one) is the edge it lies beyond: as a filter's bound it selects the same tasks."""
    try:
        return utc_instant(text)
    except ValueError:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))  # ValueError: not a time
        return (datetime.min if value.year == 1 else datetime.max).replace(tzinfo=UTC)


def _time_range(given: dict[str, Any]) -> dict[str, str]:
    times: dict[str, str] = {}
    for name in ("created_after", "created_before"):
        if name in given:
            text = _text(given[name], ["filter", name], name)
            try:
                times[name] = _instant(text).isoformat()
            except ValueError:
                raise _invalid(["filter", name], f"{name} must be an RFC 3339 time", "a date-time") from None
    return times


def parse_filter(action: str, raw: Any) -> dict[str, Any]:
    """The filter in its stored form, or :class:`InvalidInput`."""
    if not isinstance(raw, dict):
        raise _invalid(["filter"], "filter must be an object", "an object of filter fields")
    if unknown := sorted(set(raw) - set(FILTER_FIELDS)):
        raise _invalid(["filter", unknown[0]], f"unknown filter field {unknown[0]!r}", f"one of {FILTER_FIELDS}")
    if nulls := sorted(name for name, value in raw.items() if value is None):
        # As the schema says: a field is given with a value, or left out (a null would be read as absent).
        raise _invalid(["filter", nulls[0]], f"{nulls[0]} must not be null", "a value, or leave the field out")
    given = dict(raw)
    if not set(given) - {"owner"}:
        raise _invalid(["filter"], "a bulk operation needs a filter", "give status, task_type, a time range or key")
    filt: dict[str, Any] = {}
    if "status" in given:
        statuses = _texts(given["status"], ["filter", "status"], "status")
        allowed = ACTION_STATUSES[action]
        if wrong := [s for s in statuses if s not in allowed]:
            raise _invalid(
                ["filter", "status"], f"{action} changes only {', '.join(allowed)} tasks, not {wrong[0]}", "a status"
            )
        filt["status"] = statuses
    if "task_type" in given:
        types = _texts(given["task_type"], ["filter", "task_type"], "task_type")
        if unknown_types := [t for t in types if get_task_type(t) is None]:
            raise _invalid(
                ["filter", "task_type"], f"unknown task_type {unknown_types[0]!r}", "a task type (GET /task-types)"
            )
        filt["task_type"] = types
    filt.update(_time_range(given))
    if "key_prefix" in given:
        filt["key_prefix"] = _text(given["key_prefix"], ["filter", "key_prefix"], "key_prefix")
    if "task_id" in given:
        filt["task_id"] = _task_ids(given["task_id"])
    if "owner" in given:
        filt["owner"] = _text(given["owner"], ["filter", "owner"], "owner")
    return filt


def parse_request(body: Any) -> BulkRequest:
    """A ``POST /bulk`` body, validated; :class:`InvalidInput` otherwise."""
    if not isinstance(body, dict):
        raise _invalid([], "the body must be a JSON object", '{"action": ..., "filter": {...}}')
    if unknown := sorted(set(body) - _BODY_FIELDS):
        raise _invalid([unknown[0]], f"unknown field {unknown[0]!r}", "the body has action, filter and dry_run")
    action = body.get("action")
    if action not in ACTIONS:
        raise _invalid(["action"], f"action must be one of {', '.join(ACTIONS)}", f"one of {ACTIONS}")
    if "filter" not in body:
        raise _invalid(["filter"], "a bulk operation needs a filter", "field required")
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise _invalid(["dry_run"], "dry_run must be true or false", "a boolean")
    filt = parse_filter(action, body["filter"])
    return BulkRequest(action, filt, filt.get("owner"), dry_run)
