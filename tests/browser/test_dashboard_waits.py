"""The dashboard shows a task's steps as a timeline with durations, its live output, and, while it is
WAITING, a form that sends the signal it waits for: in a real browser, with real workers and the
real dispatcher (issue 23 part 4)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tasklift.settings import get_settings
from tests.browser.conftest import TASK_MODULES, Dashboard, submit_task

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]
MODULES = json.dumps([*json.loads(TASK_MODULES), "tests.support.wait_types"])


@pytest.fixture
def tasklift_env(tasklift_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The browser tests' environment with the wait task types added for every process."""
    monkeypatch.setenv("TASKLIFT_TASK_MODULES", MODULES)
    get_settings.cache_clear()
    return {**tasklift_env, "TASKLIFT_TASK_MODULES": MODULES}


def test_a_waiting_task_shows_its_steps_and_output_and_resumes_from_the_signal_form(
    api: str,
    start_worker: Callable[..., Any],
    start_reaper: Callable[..., Any],
    open_dashboard: Callable[..., Dashboard],
    tmp_path: Path,
) -> None:
    start_worker(concurrency=1)
    start_reaper()
    task_id = submit_task(api, {"task_type": "test_wait", "path": str(tmp_path / "effects"), "emit": 3})
    board = open_dashboard(api, fragment=f"#task={task_id}")
    page = board.page
    detail = page.locator("#detail")

    expect(detail.locator(".detail-head .badge")).to_have_text("Waiting")
    expect(detail.locator("ol.steps > li")).to_have_count(1)
    expect(detail.locator("ol.steps > li .step-name")).to_have_text(["before"])
    expect(detail.locator("ol.steps > li .step-duration")).to_have_text([re.compile(r"^\d+(\.\d)? (ms|s)$")])
    expect(detail.locator("pre.output")).to_have_text("line 0\nline 1\nline 2\n")
    expect(detail.get_by_text("Waiting for the signal “approval”")).to_be_visible()
    expect(detail.get_by_label("Signal name")).to_have_value("approval")

    payload = detail.get_by_label("Signal payload (JSON)")
    payload.fill("{not json")
    detail.get_by_role("button", name="Send signal").click()
    expect(detail.locator("[data-slot=signal-status]")).to_contain_text("not JSON")
    expect(detail.locator(".detail-head .badge")).to_have_text("Waiting")  # nothing was sent

    payload.fill('{"approved_by": "browser"}')
    detail.get_by_role("button", name="Send signal").click()
    expect(detail.locator("[data-slot=signal-status]")).to_have_text("Signal sent: the task resumes.")
    expect(detail.locator(".detail-head .badge")).to_have_text("Succeeded")
    expect(detail.locator("ol.steps > li .step-name")).to_have_text(["before", "waited for “approval”", "after"])
    expect(detail.locator("[data-slot=wait-block]")).to_be_hidden()
    result = json.loads(detail.get_by_label("Result JSON").inner_text())
    assert result == {"payload": {"approved_by": "browser"}, "second": None}
    board.assert_clean()
