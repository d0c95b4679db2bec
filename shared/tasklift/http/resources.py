"""How a task row is shown to clients (API.md "Resource: a task")."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tasklift.tasks.resource import task_resource as task_resource  # its home: webhooks send it too
from tasklift.tasks.states import TERMINAL, TaskStatus


def etag(row: Mapping[str, Any]) -> str:
    """A strong validator: every change to a task appends an event and bumps ``last_seq``."""
    return f'"{row["id"].hex}.{row["last_seq"]}"'


def retry_after(row: Mapping[str, Any], floor: int = 1, ceiling: int = 30) -> int | None:
    """Seconds a poller should wait: none for a finished task, more for a long one far from done.

    For a running task with progress p% after t seconds, the rest takes about t·(100-p)/p; polling
    ten times over that estimate keeps latency proportional without hammering the API.
    """
    status = TaskStatus(row["status"])
    if status in TERMINAL:
        return None
    percent = (row["progress"] or {}).get("percent") or 0
    if status != TaskStatus.RUNNING or not row["started_at"] or percent <= 0:
        return floor
    elapsed = (datetime.now(UTC) - row["started_at"]).total_seconds()
    remaining = elapsed * (100 - percent) / percent
    return int(max(floor, min(ceiling, remaining / 10)))
