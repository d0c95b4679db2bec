"""The dashboard's Schedules panel in a real browser: the caller's schedules with their timing, next
fire time and last task, and Pause / Resume (POST /schedules/{id}:pause | :resume)."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Dashboard

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]


def test_the_panel_lists_pauses_resumes_and_links_the_last_task(
    api: str, open_dashboard: Callable[..., Dashboard], start_reaper
) -> None:
    nightly = httpx.post(
        f"{api}/schedules",
        json={"name": "nightly", "task_type": "test_noop", "cron": "30 2 * * *", "timezone": "Europe/Berlin"},
    ).json()
    start_reaper()
    tick = httpx.post(f"{api}/schedules", json={"name": "tick", "task_type": "test_noop", "interval_seconds": 1})
    assert tick.status_code == 201, tick.text
    board = open_dashboard(api)
    page = board.page
    rows = page.locator("#schedule-list .schedule")
    expect(rows).to_have_count(2)
    row = page.locator(f"#schedule-list [data-schedule='{nightly['schedule_id']}']")
    expect(row).to_contain_text("30 2 * * * (Europe/Berlin)")
    expect(row).to_contain_text("next ")
    row.get_by_role("button", name="Pause schedule nightly").click()
    expect(row.locator(".schedule-next")).to_have_text("paused")
    assert httpx.get(f"{api}/schedules/{nightly['schedule_id']}").json()["paused"] is True
    row.get_by_role("button", name="Resume schedule nightly").click()
    expect(row.locator(".schedule-next")).not_to_have_text("paused")
    assert httpx.get(f"{api}/schedules/{nightly['schedule_id']}").json()["paused"] is False
    ticking = page.locator(f"#schedule-list [data-schedule='{tick.json()['schedule_id']}']")
    link = ticking.get_by_role("link", name="last task")
    expect(link).to_be_visible(timeout=20_000)  # it fired, and the panel re-read it
    link.click()
    expect(page).to_have_url(re.compile(r"#task="))
    board.assert_clean()
