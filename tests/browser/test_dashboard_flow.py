"""The dashboard shows flow control (docs/flow-control.md): a scheduled task's wait and priority,
and an expired task's state, in a real browser on the real stack."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Dashboard, submit_task

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]


def test_a_scheduled_task_says_when_and_an_expired_one_says_expired(
    api: str, start_reaper: Callable[..., Any], open_dashboard: Callable[..., Dashboard]
) -> None:
    later = submit_task(api, {"task_type": "test_noop", "delay_seconds": 3600, "priority": 7})
    board = open_dashboard(api, fragment=f"#task={later}")
    page = board.page
    expect(page.locator("#detail .detail-head .badge")).to_have_text("Pending")
    expect(page.locator("#detail [data-slot=priority]")).to_have_text("7")
    expect(page.locator("#detail [data-slot=waiting]")).to_contain_text("Scheduled for")
    start_reaper()
    expiring = submit_task(api, {"task_type": "test_noop", "ttl_seconds": 1})  # no worker: it expires
    page.goto(f"{api}/#task={expiring}")
    expect(page.locator("#detail .detail-head .badge")).to_have_text("Expired", timeout=15_000)
    expect(page.locator("#detail [data-slot=waiting]")).to_have_text("–")
    expect(page.locator("#detail [data-slot=outcome-title]")).to_have_text("Expired")
    page.get_by_label("Status", exact=True).select_option("EXPIRED")
    expect(page.locator(".badge.status-EXPIRED").first).to_be_visible()
    board.assert_clean()


def test_a_rate_limited_task_says_so(
    api: str, start_reaper: Callable[..., Any], open_dashboard: Callable[..., Dashboard]
) -> None:
    """``test_rated_slowly`` admits 2 a minute: with the reaper running and no worker, the first
    round admits two of five, and the bucket then holds under one token for 30 s; the last task's
    page says why it waits."""
    start_reaper()
    ids = [submit_task(api, {"task_type": "test_rated_slowly"}) for _ in range(5)]
    deadline = time.monotonic() + 30
    while httpx.get(f"{api}/tasks/{ids[-1]}").json()["waiting_reason"] != "rate_limited":  # the first round
        assert time.monotonic() < deadline, "the dispatcher did not spend the bucket"
        time.sleep(0.1)
    board = open_dashboard(api, fragment=f"#task={ids[-1]}")
    expect(board.page.locator("#detail .detail-head .badge")).to_have_text("Pending")
    expect(board.page.locator("#detail [data-slot=waiting]")).to_have_text("Rate limited", timeout=15_000)
    board.assert_clean()
