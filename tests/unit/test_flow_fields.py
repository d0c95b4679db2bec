"""The flow-control fields of a submit body (tasks/flow.py): what is accepted, what is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tasklift.tasks.flow import Flow, FlowError, split_flow, waiting_reason
from tasklift.tasks.service import utc_instant

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
HORIZON = 366 * 86400.0


def split(body: dict[str, Any]) -> tuple[dict[str, Any], Flow]:
    return split_flow(body, HORIZON, utc_instant, now=NOW)


def test_flow_fields_leave_the_input_and_default_to_run_now_never_expire() -> None:
    rest, flow = split({"task_type": "t", "seconds": 1, "priority": 7, "delay_seconds": 5, "ttl_seconds": 60})
    assert rest == {"task_type": "t", "seconds": 1}
    assert flow == Flow(priority=7, delay=5.0, ttl=60.0)
    assert split({"x": 1}) == ({"x": 1}, Flow())
    assert not Flow().delayed(NOW) and Flow(delay=5).delayed(NOW) and not Flow(delay=0).delayed(NOW)


def test_run_at_in_the_past_is_accepted_and_not_delayed() -> None:
    _, flow = split({"run_at": "2020-01-01T00:00:00Z"})
    assert flow.run_at == datetime(2020, 1, 1, tzinfo=UTC) and not flow.delayed(NOW)
    _, later = split({"run_at": "2026-12-07T13:00:00+01:00"})  # = NOW: not ahead
    assert not later.delayed(NOW)
    _, ahead = split({"run_at": (NOW + timedelta(hours=1)).isoformat()})
    assert ahead.delayed(NOW)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"priority": 10}, "priority"),
        ({"priority": -1}, "priority"),
        ({"priority": "5"}, "priority"),
        ({"priority": True}, "priority"),
        ({"priority": 2.5}, "priority"),
        ({"delay_seconds": -1}, "delay_seconds"),
        ({"delay_seconds": "10"}, "delay_seconds"),
        ({"delay_seconds": True}, "delay_seconds"),
        ({"delay_seconds": HORIZON + 1}, "delay_seconds"),
        ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"ttl_seconds": 1e308 * 10}, "ttl_seconds"),  # inf
        ({"run_at": "tomorrow"}, "run_at"),
        ({"run_at": 1700000000}, "run_at"),
        ({"run_at": "9999-12-31T23:59:59Z"}, "run_at"),  # beyond the horizon
        ({"run_at": "2027-01-01T00:00:00Z", "delay_seconds": 1}, "delay_seconds"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),  # already past
        ({"expires_at": "2027-01-01T00:00:00Z", "ttl_seconds": 5}, "ttl_seconds"),
        ({"delay_seconds": 60, "ttl_seconds": 30}, "ttl_seconds"),  # would expire before it may start
        ({"run_at": "2026-12-08T00:00:00Z", "expires_at": "2026-12-07T18:00:00Z"}, "expires_at"),
    ],
)
def test_absurd_values_are_refused_naming_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(FlowError) as refused:
        split(body)
    assert refused.value.field == field


def test_waiting_reason_says_why_a_pending_task_waits() -> None:
    ahead, past = NOW + timedelta(minutes=1), NOW - timedelta(minutes=1)
    assert waiting_reason({"status": "PENDING", "scheduled_for": ahead}, NOW) == "scheduled"
    assert waiting_reason({"status": "PENDING", "scheduled_for": past}, NOW) == "queued"
    assert waiting_reason({"status": "PENDING", "scheduled_for": None, "paused": True}, NOW) == "paused"
    assert waiting_reason({"status": "RUNNING", "scheduled_for": ahead}, NOW) is None
