"""The dashboard's bulk actions in a real browser: tick rows (or all matching the filters), Cancel
or Retry them as ONE bulk operation (POST /bulk), and see its progress; the reaper does the work."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Dashboard, submit_task

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]


def status_of(api: str, task_id: str) -> str:
    return str(httpx.get(f"{api}/tasks/{task_id}").json()["status"])


def test_ticked_rows_are_cancelled_then_all_matching_retried_each_as_one_operation(
    api: str, open_dashboard: Callable[..., Dashboard], start_reaper
) -> None:
    ids = [submit_task(api, {"task_type": "test_noop"}) for _ in range(5)]  # no worker: they stay PENDING
    start_reaper()
    board = open_dashboard(api)
    page = board.page
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" and r.url.endswith("/bulk") else None)
    rows = page.locator("#task-list .row")
    expect(rows).to_have_count(5)
    cancel = page.get_by_role("button", name="Cancel selected")
    expect(cancel).to_be_disabled()  # nothing selected yet

    chosen = ids[1:3]
    for task_id in chosen:
        page.locator(f"#task-list li:has(.row[data-id='{task_id}']) .row-check").check()
    expect(page.locator("#bulk-count")).to_have_text("2 selected")
    cancel.click()
    expect(page.locator("#bulk-state")).to_have_text("Cancelled 2 of 2.", timeout=30_000)
    expect(page.locator("#bulk-progress")).to_be_visible()
    assert len(posts) == 1  # one bulk operation for both rows
    for task_id in ids:
        expected = "Cancelled" if task_id in chosen else "Pending"
        expect(page.locator(f"#task-list .row[data-id='{task_id}'] .badge")).to_have_text(expected, timeout=20_000)
        assert status_of(api, task_id) == expected.upper()
    expect(page.locator("#bulk-count")).to_have_text("")  # the selection is cleared after it ran
    expect(page.locator("#task-list .row-check:checked")).to_have_count(0)

    # "All matching the filters": the list's status filter becomes the operation's filter.
    page.get_by_label("Status", exact=True).select_option("CANCELLED")
    expect(rows).to_have_count(2)
    page.get_by_label("All matching the filters").check()
    expect(page.locator("#bulk-count")).to_have_text("All tasks matching the filters")
    page.get_by_role("button", name="Retry selected").click()
    expect(page.locator("#bulk-state")).to_have_text("Retried 2 of 2.", timeout=30_000)
    assert len(posts) == 2
    assert {status_of(api, task_id) for task_id in ids} == {"PENDING"}
    expect(page.locator("#list-state")).to_have_text("No tasks match these filters.", timeout=20_000)
    board.assert_clean()


def test_a_refused_bulk_action_is_shown_and_changes_nothing(api: str, open_dashboard: Callable[..., Dashboard]) -> None:
    ids = [submit_task(api, {"task_type": "test_noop"}) for _ in range(2)]
    board = open_dashboard(api)
    page = board.page
    expect(page.locator("#task-list .row")).to_have_count(2)
    page.get_by_label("Status", exact=True).select_option("PENDING")
    page.get_by_label("All matching the filters").check()
    page.get_by_role("button", name="Retry selected").click()  # retry changes only FAILED / CANCELLED: 422
    expect(page.locator("#bulk-state")).to_contain_text("Could not retry: Retry changes only FAILED, CANCELLED")
    assert {status_of(api, task_id) for task_id in ids} == {"PENDING"}
    board.assert_clean(allow=(r"422",))
