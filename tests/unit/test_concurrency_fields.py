"""The ``concurrency_key`` and ``fairness_key`` submit fields, a type's ``concurrency_limit`` (issue 21 parts 3, 2)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tasklift.tasks.flow import MAX_KEY_LENGTH, Flow, FlowError, split_flow, waiting_reason
from tasklift.tasks.registry import TaskInput, task
from tasklift.tasks.service import utc_instant

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def split(body: dict[str, Any]) -> tuple[dict[str, Any], Flow]:
    return split_flow(body, 366 * 86400.0, utc_instant, now=NOW)


def test_a_concurrency_key_leaves_the_input_and_is_kept_as_given() -> None:
    rest, flow = split({"task_type": "t", "seconds": 1, "concurrency_key": "customer-42"})
    assert rest == {"task_type": "t", "seconds": 1}
    assert flow.concurrency_key == "customer-42"
    assert split({"concurrency_key": "k" * MAX_KEY_LENGTH})[1].concurrency_key == "k" * MAX_KEY_LENGTH
    assert split({"concurrency_key": "Zurich / tenant 7"})[1].concurrency_key == "Zurich / tenant 7"
    with pytest.raises(FlowError):  # printable ASCII only, as the OpenAPI pattern says
        split({"concurrency_key": "Zürich / 東京"})
    assert split({"concurrency_key": None})[1].concurrency_key is None


@pytest.mark.parametrize("field", ["concurrency_key", "fairness_key"])
@pytest.mark.parametrize(
    "value", ["", "k" * (MAX_KEY_LENGTH + 1), "a\nb", "tab\there", "nul\x00", 42, True, ["a"], {"k": 1}]
)
def test_bad_keys_are_refused_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(FlowError) as caught:
        split({field: value})
    assert caught.value.field == field


def test_a_fairness_key_leaves_the_input_beside_a_concurrency_key() -> None:
    rest, flow = split({"x": 1, "fairness_key": "tenant-7", "concurrency_key": "customer-1"})
    assert rest == {"x": 1}
    assert (flow.fairness_key, flow.concurrency_key) == ("tenant-7", "customer-1")


def test_waiting_reason_says_concurrency_limited_after_paused_and_scheduled() -> None:
    row = {"status": "PENDING", "scheduled_for": None, "concurrency_limited": True}
    assert waiting_reason(row, NOW) == "concurrency_limited"
    assert waiting_reason({**row, "paused": True}, NOW) == "paused"
    assert waiting_reason({**row, "concurrency_limited": False}, NOW) == "queued"
    assert waiting_reason({**row, "status": "RUNNING"}, NOW) is None


class _In(TaskInput):
    pass


@pytest.mark.parametrize("limit", [0, -1, True])
def test_a_task_type_refuses_a_limit_that_is_not_positive(limit: Any) -> None:
    with pytest.raises(ValueError, match="concurrency_limit"):
        task(f"unit_bad_limit_{limit}", input=_In, concurrency_limit=limit)(lambda ctx, inp: None)
