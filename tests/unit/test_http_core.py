"""Host-neutral HTTP pieces: routing, problem+json, Retry-After and ETags."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tasklift.http.problems import Problem, problem_response
from tasklift.http.resources import etag, retry_after
from tasklift.http.routes import match


def test_routes_match_methods_and_extract_ids() -> None:
    found = match("GET", "/tasks/abc")
    assert found and not isinstance(found, bool)
    assert found[0].name == "get_task" and found[1] == {"task_id": "abc"}
    assert match("DELETE", "/tasks/abc")[0].name == "cancel_task"  # type: ignore[index]
    assert match("PUT", "/tasks/abc") is False  # known path, wrong method → 405
    assert match("GET", "/nowhere") is None


def test_problem_json_shape_has_no_internals() -> None:
    resp = problem_response(Problem(422, "bad", errors=[{"loc": ["body"], "msg": "x"}]), "/tasks")
    body = json.loads(resp.body)
    assert resp.status == 422 and resp.headers["Content-Type"] == "application/problem+json"
    assert set(body) == {"type", "title", "status", "detail", "instance", "errors"}
    assert body["title"] == "Unprocessable Content" or body["title"].startswith("Unprocessable")


def _row(status: str, percent: float | None = None, started_ago: float | None = None) -> dict:
    now = datetime.now(UTC)
    return {
        "id": uuid.uuid4(),
        "last_seq": 7,
        "status": status,
        "progress": {"percent": percent} if percent is not None else None,
        "started_at": now - timedelta(seconds=started_ago) if started_ago is not None else None,
    }


@pytest.mark.parametrize("status", ["SUCCESS", "FAILED", "CANCELLED"])
def test_no_retry_after_once_finished(status: str) -> None:
    assert retry_after(_row(status)) is None  # type: ignore[arg-type]


def test_retry_after_grows_with_the_estimated_time_left_and_is_bounded() -> None:
    early = retry_after(_row("RUNNING", percent=1, started_ago=60))  # type: ignore[arg-type]
    late = retry_after(_row("RUNNING", percent=99, started_ago=60))  # type: ignore[arg-type]
    assert early == 30 and late == 1
    assert retry_after(_row("PENDING")) == 1  # type: ignore[arg-type]


def test_etag_changes_with_every_event() -> None:
    row = _row("RUNNING")
    first = etag(row)  # type: ignore[arg-type]
    row["last_seq"] += 1
    assert etag(row) != first  # type: ignore[arg-type]
