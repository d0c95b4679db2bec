"""The dashboard follows tasks live in a real browser: progress, results, errors, cancel, API restarts.

Each test drives the page the way a person does (labels, buttons) against real worker and API
processes, and ends by asserting the page logged no console error and fetched nothing off-origin.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tasklift.embedded import free_port
from tests.browser.conftest import Dashboard, submit_task

# Real processes on a machine that may be busy: more room than the suite's default 120 s per test.
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]

# Records, in the page, every value the progress bar took and every log line ever inserted, so a
# test can prove the bar moved live and no line was shown twice even for a moment.
RECORDER = """
window.__progress = [];
window.__logSeqs = [];
new MutationObserver((mutations) => {
  for (const m of mutations) {
    if (m.type === "attributes" && m.target.getAttribute("role") === "progressbar") {
      window.__progress.push(Number(m.target.getAttribute("aria-valuenow")));
    }
    for (const node of m.addedNodes) {
      if (node.nodeType === 1 && node.matches("ol.log > li")) window.__logSeqs.push(Number(node.dataset.seq));
    }
  }
}).observe(document, {subtree: true, childList: true, attributes: true, attributeFilter: ["aria-valuenow"]});
"""

#: Chromium logs each refused or cut connection as a console error while the API is down on purpose.
API_DOWN_NOISE = (
    r"net::ERR_CONNECTION_REFUSED",
    r"net::ERR_EMPTY_RESPONSE",
    r"net::ERR_CONNECTION_RESET",
    r"net::ERR_INCOMPLETE_CHUNKED_ENCODING",
)


def recorded_dashboard(open_dashboard: Callable[..., Dashboard], base_url: str) -> Dashboard:
    return open_dashboard(base_url, init_script=RECORDER)


def detail(page: Any, part: str) -> Any:
    return page.locator(f"#detail {part}")


def log_messages(page: Any) -> list[str]:
    return [str(m) for m in page.locator("#detail ol.log > li .msg").all_inner_texts()]


def assert_each_line_once_in_order(board: Dashboard, lines: int) -> None:
    page = board.page
    expect(page.locator("#detail ol.log > li")).to_have_count(lines)
    assert log_messages(page) == [f"line {n} of {lines}" for n in range(1, lines + 1)]
    inserted = page.evaluate("window.__logSeqs")
    assert len(inserted) == len(set(inserted)) == lines, f"a log line was inserted twice: {inserted}"


def test_a_task_submitted_from_the_form_streams_its_progress_to_100_percent_and_shows_its_result(
    api: str, start_worker: Callable[..., Any], open_dashboard: Callable[..., Dashboard]
) -> None:
    start_worker()
    board = recorded_dashboard(open_dashboard, api)
    page = board.page

    board.submit("test_sleep", Seconds="3", Steps="10")

    bar = page.get_by_role("progressbar", name="Progress")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(detail(page, ".detail-head .badge")).to_have_text("Succeeded")
    expect(page.get_by_label("Result JSON")).to_contain_text('"steps": 10')
    expect(detail(page, "[data-slot=percent]")).to_have_text("100 %")
    expect(detail(page, "[data-slot=feed]")).to_have_text("Complete")
    seen = page.evaluate("window.__progress")
    assert any(0 < value < 100 for value in seen), f"the bar never showed progress between 0 and 100: {seen}"
    assert seen == sorted(seen), f"the bar went backwards: {seen}"
    expect(page.locator("#task-list .row[aria-current=true] .badge")).to_have_text("Succeeded")
    board.assert_clean()


def test_a_failing_task_shows_its_error_and_offers_a_retry(
    api: str, start_worker: Callable[..., Any], open_dashboard: Callable[..., Dashboard]
) -> None:
    start_worker()
    board = open_dashboard(api)
    page = board.page

    board.submit("test_fail", Message="disk quota exceeded")

    expect(detail(page, ".detail-head .badge")).to_have_text("Failed")
    expect(detail(page, ".outcome h3")).to_have_text("Error")
    expect(detail(page, ".error-text")).to_have_text("ValueError: disk quota exceeded")
    expect(detail(page, "ol.log")).to_contain_text("about to fail")
    expect(page.get_by_role("button", name="Retry task")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel task")).to_be_hidden()
    expect(page.locator("#task-list .row[aria-current=true]")).to_contain_text("disk quota exceeded")
    board.assert_clean()


def test_the_cancel_button_stops_a_running_task(
    api: str, start_worker: Callable[..., Any], open_dashboard: Callable[..., Dashboard]
) -> None:
    start_worker()
    board = open_dashboard(api)
    page = board.page
    task_id = board.submit("test_sleep", Seconds="60", Steps="120")
    expect(detail(page, ".detail-head .badge")).to_have_text("Running")
    expect(page.get_by_role("progressbar", name="Progress")).not_to_have_attribute("aria-valuenow", "0")

    page.get_by_role("button", name="Cancel task").click()

    expect(detail(page, ".detail-head .badge")).to_have_text("Cancelled")
    expect(detail(page, ".outcome")).to_contain_text("cancelled")
    expect(page.get_by_role("button", name="Cancel task")).to_be_hidden()
    expect(page.get_by_role("button", name="Retry task")).to_be_visible()
    assert httpx.get(f"{api}/tasks/{task_id}").json()["status"] == "CANCELLED"
    board.assert_clean()


def test_the_page_carries_on_across_an_api_restart_without_missing_or_repeating_a_log_line(
    start_api: Callable[..., Any], start_worker: Callable[..., Any], open_dashboard: Callable[..., Dashboard]
) -> None:
    port = free_port()
    first_api, base_url = start_api(port)
    start_worker()
    board = recorded_dashboard(open_dashboard, base_url)
    page = board.page
    resumed: list[str] = []  # Last-Event-ID of each stream request the page made

    def note_stream(request: Any) -> None:
        if request.url.endswith("/stream"):
            resumed.append(request.all_headers().get("last-event-id", ""))

    page.on("request", note_stream)
    # 40 lines over 30 s: the task still runs when the page finds the new process, even when the
    # restart and the page's probe back-off take 20 s on a loaded machine (CI once took longer than
    # a 16 s task, and the page then read the finished task's log without a stream to resume).
    board.submit("test_chatty", Lines="40", Seconds="30")
    expect(page.locator("#detail ol.log > li").nth(4)).to_be_attached()  # five lines in

    first_api.kill()  # a crash: connections cut mid-stream, nothing answers until the new process

    banner = page.locator("#banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("not answering")
    expect(page.locator("#conn")).to_contain_text("Offline")
    start_api(port)  # a new process on the same address
    # The page probes with back-off (1, 2, 4, 8, then every 10 s: static/app.js): it sees the new
    # process within one probe interval, more than expect's default 5 s once the restart took a few.
    expect(banner).to_be_hidden(timeout=15_000)
    expect(page.locator("#conn")).to_contain_text("Connected", timeout=15_000)

    expect(detail(page, ".detail-head .badge")).to_have_text("Succeeded", timeout=90_000)
    assert_each_line_once_in_order(board, 40)
    expect(page.get_by_label("Result JSON")).to_contain_text('"lines": 40')
    assert any(resumed), f"EventSource should have resumed with Last-Event-ID on the new API: {resumed}"
    board.assert_clean(allow=API_DOWN_NOISE)


def test_the_page_follows_a_bounded_window_stream_that_ends_every_second(
    start_api: Callable[..., Any], start_worker: Callable[..., Any], open_dashboard: Callable[..., Dashboard]
) -> None:
    """Hosts that buffer (Lambda, Functions without HTTP streams) answer a few events at a time."""
    _, base_url = start_api(env={"TASKLIFT_SSE_WINDOW_SECONDS": "1"})
    start_worker()
    board = recorded_dashboard(open_dashboard, base_url)
    page = board.page
    streams: list[str] = []
    page.on("request", lambda request: streams.append(request.url) if request.url.endswith("/stream") else None)

    board.submit("test_chatty", Lines="20", Seconds="6")

    expect(detail(page, ".detail-head .badge")).to_have_text("Succeeded")
    assert_each_line_once_in_order(board, 20)
    assert len(streams) >= 3, f"expected EventSource to reconnect after each window, saw {streams}"
    expect(page.get_by_role("progressbar", name="Progress")).to_have_attribute("aria-valuenow", "100")
    board.assert_clean()


def test_rows_of_tasks_submitted_elsewhere_appear_and_update_without_being_opened(
    api: str, start_worker: Callable[..., Any], open_dashboard: Callable[..., Dashboard]
) -> None:
    start_worker()
    board = open_dashboard(api)
    page = board.page
    expect(page.locator("#list-state")).to_have_text("No tasks yet. Submit one with the form.")

    task_id = submit_task(api, {"task_type": "test_sleep", "seconds": 4, "steps": 8})

    row = page.locator(f"#task-list .row[data-id='{task_id}']")
    expect(row).to_be_visible()
    expect(row.locator(".badge")).to_have_text("Succeeded")
    expect(row.locator(".row-pct")).to_have_text("100 %")
    expect(page.locator("#detail-empty")).to_be_visible()  # it was never opened
    board.assert_clean()


def test_a_stream_the_browser_gave_up_on_is_reopened_and_the_log_backfilled_without_gaps(
    start_api: Callable[..., Any], start_worker: Callable[..., Any], open_dashboard: Callable[..., Dashboard]
) -> None:
    """A proxy answering 502 makes EventSource stop for good; the page must reopen and catch up itself."""
    _, base_url = start_api(env={"TASKLIFT_SSE_WINDOW_SECONDS": "1"})  # each response ends: reconnects
    start_worker()
    board = recorded_dashboard(open_dashboard, base_url)
    page = board.page
    streams: list[dict[str, str]] = []

    def flaky_proxy(route: Any) -> None:
        streams.append(route.request.all_headers())
        if 2 <= len(streams) <= 4:  # the first reconnect and the next two probes hit a "restarting" proxy
            route.fulfill(status=502, content_type="text/plain", body="Bad Gateway")
        else:
            route.continue_()

    page.route("**/tasks/*/stream", flaky_proxy)
    board.submit("test_chatty", Lines="30", Seconds="12")

    expect(detail(page, ".detail-head .badge")).to_have_text("Succeeded", timeout=90_000)
    assert_each_line_once_in_order(board, 30)
    fresh_after_outage = [h for h in streams[5:] if "last-event-id" not in h]
    assert fresh_after_outage, f"expected a fresh stream (snapshot + log backfill) after the 502s: {streams}"
    board.assert_clean(allow=(r"status of 502",))


def test_without_a_stream_endpoint_the_page_falls_back_to_long_polling(
    api: str, start_worker: Callable[..., Any], open_dashboard: Callable[..., Dashboard]
) -> None:
    start_worker()
    board = recorded_dashboard(open_dashboard, api)
    page = board.page
    no_stream = json.dumps({"type": "about:blank", "title": "Not Found", "status": 404, "detail": "no endpoint"})
    page.route(
        "**/tasks/*/stream",
        lambda route: route.fulfill(status=404, content_type="application/problem+json", body=no_stream),
    )

    board.submit("test_chatty", Lines="15", Seconds="5")

    expect(detail(page, "[data-slot=feed]")).to_have_text("Polling")
    expect(detail(page, ".detail-head .badge")).to_have_text("Succeeded")
    assert_each_line_once_in_order(board, 15)
    expect(page.get_by_role("progressbar", name="Progress")).to_have_attribute("aria-valuenow", "100")
    board.assert_clean(allow=(r"status of 404",))
