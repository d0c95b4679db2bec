"""How a task row maps onto the Azure status monitor and the AIP-151 Operation (http/operations.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from tasklift.http.operations import AZURE_STATUS, azure_monitor, google_operation
from tasklift.tasks.states import TaskStatus

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def row(status: str, **fields: Any) -> dict[str, Any]:
    base = {
        "id": uuid.UUID("6f1c0000-0000-4000-8000-000000000001"),
        "task_type": "test_noop",
        "status": status,
        "progress": {"percent": 40, "current": None, "total": None, "message": None},
        "result": None,
        "error": None,
        "attempts": 1,
        "cancel_requested": False,
        "metadata": {},
        "created_at": NOW,
        "started_at": None,
        "updated_at": NOW,
        "completed_at": None,
        "trace_id": None,
        "priority": 0,
        "scheduled_for": None,
        "expires_at": None,
        "concurrency_key": None,
        "fairness_key": None,
    }
    return {**base, **fields}


def test_every_task_status_has_an_azure_operation_status() -> None:
    assert set(AZURE_STATUS) == set(TaskStatus)
    assert set(AZURE_STATUS.values()) == {"NotStarted", "Running", "Succeeded", "Failed", "Canceled"}


@pytest.mark.parametrize(
    ("status", "started", "expected"),
    [
        ("PENDING", None, "NotStarted"),
        ("PENDING", NOW, "Running"),  # between attempts: the operation has started
        ("RUNNING", NOW, "Running"),
        ("WAITING", NOW, "Running"),  # suspended on ctx.wait_for / ctx.sleep: still in progress
        ("SUCCESS", NOW, "Succeeded"),
        ("FAILED", NOW, "Failed"),
        ("CANCELLED", None, "Canceled"),
        ("EXPIRED", None, "Failed"),
    ],
)
def test_task_statuses_map_onto_the_azure_guidelines_words(status: str, started: Any, expected: str) -> None:
    assert azure_monitor(row(status, started_at=started), "https://x")["status"] == expected


def test_a_succeeded_monitor_has_the_result_and_the_absolute_resource_location() -> None:
    body = azure_monitor(row("SUCCESS", result={"n": 1}, started_at=NOW), "https://api.example/")
    assert body["result"] == {"n": 1} and body["percentComplete"] == 40
    assert body["resourceLocation"] == "https://api.example/tasks/6f1c0000-0000-4000-8000-000000000001"
    assert "error" not in body


def test_a_failed_monitor_has_an_error_with_code_and_message_and_no_result() -> None:
    body = azure_monitor(row("FAILED", error={"type": "ValueError", "message": "no"}), "https://x")
    assert body["error"] == {"code": "ValueError", "message": "no"}
    assert "result" not in body and "resourceLocation" not in body


def test_an_expired_task_is_a_failed_monitor_with_code_expired() -> None:
    body = azure_monitor(row("EXPIRED", error={"type": "Expired", "message": "not started"}), "https://x")
    assert body["status"] == "Failed" and body["error"]["code"] == "Expired"


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        ("FAILED", {"type": "ValueError", "message": "m"}, 2),
        ("FAILED", {"type": "TimeLimitExceeded", "message": "m"}, 4),
        ("FAILED", {"type": "InvalidInput", "message": "m"}, 3),
        ("CANCELLED", None, 1),
        ("EXPIRED", {"type": "Expired", "message": "m"}, 4),  # DEADLINE_EXCEEDED
    ],
)
def test_google_errors_carry_google_rpc_codes(status: str, error: Any, code: int) -> None:
    operation = google_operation(row(status, error=error))
    assert operation["done"] is True and operation["error"]["code"] == code and "response" not in operation


def test_google_operation_has_only_the_protos_fields() -> None:
    pending = google_operation(row("PENDING"))
    assert set(pending) == {"name", "metadata", "done"} and pending["done"] is False
    assert pending["name"] == "operations/6f1c0000-0000-4000-8000-000000000001"
    assert pending["metadata"]["@type"] == "type.googleapis.com/google.protobuf.Struct"
    done = google_operation(row("SUCCESS", result={"ok": True}))
    assert set(done) == {"name", "metadata", "done", "response"}
    assert done["response"]["value"]["result"] == {"ok": True}


def test_a_waiting_task_is_an_operation_not_done() -> None:
    waiting = google_operation(row("WAITING", started_at=NOW))
    assert waiting["done"] is False and set(waiting) == {"name", "metadata", "done"}
