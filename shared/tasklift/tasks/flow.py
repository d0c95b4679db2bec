"""Flow control on submit (docs/flow-control.md): when a task may run, until when, and how urgently.

A POST /tasks body (and a batch item's ``task``) may carry, beside the task type's input:

- ``run_at`` (RFC 3339) or ``delay_seconds``: not admitted to the Celery queue before then; a
  past ``run_at`` runs now. The task is PENDING with ``scheduled_for``.
- ``expires_at`` (RFC 3339) or ``ttl_seconds``: a task not started by then ends EXPIRED.
- ``priority``: 0 (the default) to 9; within a queue the dispatcher admits higher first.
- ``concurrency_key``: a string of 1 to 128 printable ASCII characters; a task type declared with
  ``concurrency_limit=N`` runs at most N of its tasks with the same key at once.
- ``fairness_key``: the same form; under an admission window a queue's waiting tasks are admitted
  round-robin across fairness keys (the submitting principal's name when none is given).

:func:`split_flow` takes these fields out of the body before the input is validated, or raises
:class:`~tasklift.tasks.service.InvalidInput`-shaped errors (:class:`FlowError`) for values that
make no sense: a wrong type, both forms of one rule, a time beyond ``max_schedule_seconds``, a
deadline not after the start.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

# A key's length and characters (``concurrency_key``, ``fairness_key``) live beside the settings,
# which check ``fairness_weights``' keys by the same rule.
from tasklift.settings import KEY_CHARS, KEY_PATTERN, MAX_KEY_LENGTH

#: The fields a submit body may carry for flow control (never passed to the task's input).
FLOW_FIELDS = ("run_at", "delay_seconds", "expires_at", "ttl_seconds", "priority", "concurrency_key", "fairness_key")
MIN_PRIORITY, MAX_PRIORITY, DEFAULT_PRIORITY = 0, 9, 0


class FlowError(ValueError):
    """A flow field that does not validate: ``field`` names it, ``msg`` says why."""

    def __init__(self, field: str, msg: str) -> None:
        super().__init__(f"{field}: {msg}")
        self.field = field
        self.msg = msg


@dataclass(frozen=True)
class Flow:
    """The flow-control options of one submit (all None/default: run now, never expire)."""

    priority: int = DEFAULT_PRIORITY
    run_at: datetime | None = None  #: absolute start (UTC)
    delay: float | None = None  #: seconds after the database's now()
    expires_at: datetime | None = None  #: absolute deadline (UTC)
    ttl: float | None = None  #: seconds after the database's now()
    concurrency_key: str | None = None  #: limited per (type, key) when the type has a concurrency_limit
    fairness_key: str | None = None  #: whose turn it is under a window (None: the owner's)

    def delayed(self, now: datetime | None = None) -> bool:
        """True when the task must wait (by this machine's clock): it is not published at submit,
        the dispatcher admits it when the database's clock says it is due."""
        if self.delay is not None:
            return self.delay > 0
        return self.run_at is not None and self.run_at > (now or datetime.now(UTC))


def _number(body: dict[str, Any], name: str, low: float, high: float, *, strict_low: bool) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FlowError(name, "must be a number of seconds")
    if value < low or (strict_low and value == low) or value > high:
        bound = "greater than" if strict_low else "at least"
        raise FlowError(name, f"must be {bound} {low:g} and at most {high:g} seconds")
    return float(value)


def _instant(body: dict[str, Any], name: str, parse: Callable[[str], datetime]) -> datetime | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise FlowError(name, "must be an RFC 3339 date-time string")
    try:
        return parse(value)
    except ValueError:
        raise FlowError(name, "must be an RFC 3339 date-time, e.g. 2030-01-02T03:04:05Z") from None


def _priority(body: dict[str, Any]) -> int:
    value = body.get("priority")
    if value is None:
        return DEFAULT_PRIORITY
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise FlowError("priority", f"must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY}")
    return value


def _key(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_KEY_LENGTH or not KEY_PATTERN.fullmatch(value):
        raise FlowError(name, f"must be a string of 1 to {MAX_KEY_LENGTH} printable ASCII characters")
    return value


def split_flow(
    body: dict[str, Any], horizon: float, parse: Callable[[str], datetime], now: datetime | None = None
) -> tuple[dict[str, Any], Flow]:
    """``body`` without its flow fields, and the :class:`Flow` they give; raises :class:`FlowError`.

    ``horizon`` is the furthest ahead (seconds) a start or a deadline may be (``max_schedule_seconds``);
    ``parse`` reads an RFC 3339 time as UTC (:func:`tasklift.tasks.service.utc_instant`).
    """
    rest = {k: v for k, v in body.items() if k not in FLOW_FIELDS}
    now = now or datetime.now(UTC)
    latest = now + timedelta(seconds=horizon)
    priority = _priority(body)
    concurrency_key, fairness_key = _key(body, "concurrency_key"), _key(body, "fairness_key")
    run_at, delay = _instant(body, "run_at", parse), _number(body, "delay_seconds", 0, horizon, strict_low=False)
    expires_at, ttl = _instant(body, "expires_at", parse), _number(body, "ttl_seconds", 0, horizon, strict_low=True)
    if run_at is not None and delay is not None:
        raise FlowError("delay_seconds", "give run_at or delay_seconds, not both")
    if expires_at is not None and ttl is not None:
        raise FlowError("ttl_seconds", "give expires_at or ttl_seconds, not both")
    if run_at is not None and run_at > latest:
        raise FlowError("run_at", f"must be at most {horizon:g} seconds from now")
    if expires_at is not None and not now < expires_at <= latest:
        raise FlowError("expires_at", f"must be in the future, at most {horizon:g} seconds from now")
    start = run_at if run_at is not None else now + timedelta(seconds=delay or 0)
    deadline = expires_at if expires_at is not None else (now + timedelta(seconds=ttl) if ttl is not None else None)
    if deadline is not None and deadline <= start:
        field = "expires_at" if expires_at is not None else "ttl_seconds"
        raise FlowError(field, "the task would expire before it may start")
    return rest, Flow(
        priority=priority,
        run_at=run_at,
        delay=delay,
        expires_at=expires_at,
        ttl=ttl,
        concurrency_key=concurrency_key,
        fairness_key=fairness_key,
    )


def waiting_reason(row: Any, now: datetime | None = None) -> str | None:
    """Why a PENDING task is not running yet, as the task resource's ``waiting_reason``.

    ``paused`` (its queue is paused), ``scheduled`` (its ``scheduled_for`` is ahead),
    ``concurrency_limited`` (its type's limit of RUNNING tasks with its ``concurrency_key`` is
    reached; :data:`tasklift.store.repository.GET_TASKS_SQL` counts them), ``rate_limited`` (its
    type's rate limit has no token left in its bucket and it is not admitted yet), ``queued`` (due:
    admitted or about to be; a worker will take it), or None for a task that is not PENDING.
    """
    if row["status"] != "PENDING":
        return None
    if row.get("paused"):
        return "paused"
    scheduled = row.get("scheduled_for")
    if scheduled is not None and scheduled > (now or datetime.now(UTC)):
        return "scheduled"
    if row.get("concurrency_limited"):
        return "concurrency_limited"
    if row.get("rate_limited"):
        return "rate_limited"
    return "queued"


def flow_schema(max_seconds: float) -> dict[str, Any]:
    """The flow fields as JSON Schema properties (the OpenAPI submit body), with the settings' bound
    on how far ahead they may reach (``max_schedule_seconds``). What no schema can say: a time's
    validity depends on the clock (``expires_at`` in the future, either time within the bound) and on
    the other fields (the deadline after the start)."""
    schema = {name: dict(prop) for name, prop in FLOW_SCHEMA.items()}
    schema["delay_seconds"]["maximum"] = max_seconds
    schema["ttl_seconds"]["maximum"] = max_seconds
    return schema


#: The flow fields as JSON Schema properties, without the bound (:func:`flow_schema` adds it).
FLOW_SCHEMA: dict[str, Any] = {
    "run_at": {"type": ["string", "null"], "format": "date-time", "description": "Not before this (RFC 3339)"},
    "delay_seconds": {"type": ["number", "null"], "minimum": 0, "description": "Not before this many seconds"},
    "expires_at": {
        "type": ["string", "null"],
        "format": "date-time",
        "description": "EXPIRED unless started by then (RFC 3339, in the future)",
    },
    "ttl_seconds": {
        "type": ["number", "null"],
        "exclusiveMinimum": 0,
        "description": "EXPIRED unless started within this many seconds",
    },
    "priority": {
        "type": ["integer", "null"],
        "minimum": MIN_PRIORITY,
        "maximum": MAX_PRIORITY,
        "description": "0 (default) to 9: within a queue, higher is admitted first",
    },
    "concurrency_key": {
        "type": ["string", "null"],
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
        "pattern": KEY_CHARS,
        "description": "At most the task type's concurrency_limit tasks with this key run at once",
    },
    "fairness_key": {
        "type": ["string", "null"],
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
        "pattern": KEY_CHARS,
        "description": "Under an admission window, tasks are admitted round-robin across these (default: the owner)",
    },
}
