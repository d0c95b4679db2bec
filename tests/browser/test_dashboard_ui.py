"""The dashboard's form, list, keyboard use and small screens, in a real browser.

These need no worker unless they say so: tasks then simply stay PENDING, which is all a list,
a form or a keyboard test needs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Dashboard, submit_task

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "images" / "dashboard.png"
PHONE = {"width": 375, "height": 812}


def test_form_fields_come_from_the_schema_with_their_defaults_and_hints(
    api: str, open_dashboard: Callable[..., Dashboard]
) -> None:
    board = open_dashboard(api)
    page = board.page

    page.get_by_label("Task type").select_option("test_sleep")
    expect(page.get_by_label("Seconds")).to_have_value("1")
    expect(page.get_by_label("Seconds")).to_have_attribute("type", "number")
    expect(page.get_by_label("Steps")).to_have_value("10")
    expect(page.get_by_label("Check Cancel")).to_be_checked()
    expect(page.locator("#field-seconds-hint")).to_contain_text("≥ 0")

    page.get_by_label("Task type").select_option("vector_processing")
    expect(page.get_by_label("Vector Data")).to_have_attribute("type", "text")  # numbers as a comma list
    expect(page.locator("#field-vector_data-hint")).to_contain_text("numbers separated by commas")
    expect(page.locator("textarea#field-metadata")).to_be_visible()  # an object: a JSON textarea
    expect(page.get_by_label("Duration")).to_have_value("10")
    board.assert_clean()


def test_client_side_hints_stop_an_invalid_submission_before_it_is_sent(
    api: str, open_dashboard: Callable[..., Dashboard]
) -> None:
    board = open_dashboard(api)
    page = board.page
    posts: list[str] = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    page.get_by_label("Task type").select_option("vector_processing")

    page.get_by_label("Vector Data").fill("1, 2, x")
    page.get_by_label("Metadata").fill("{not json")
    page.get_by_role("button", name="Submit task").click()

    expect(page.locator("#field-vector_data-error")).to_have_text("Item 3 (“x”): Enter a number.")
    expect(page.locator("#field-metadata-error")).to_contain_text("Not valid JSON")
    expect(page.get_by_label("Vector Data")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Vector Data")).to_be_focused()
    assert posts == []
    board.assert_clean()


def test_the_servers_422_errors_are_shown_next_to_their_fields(
    api: str, open_dashboard: Callable[..., Dashboard]
) -> None:
    board = open_dashboard(api)
    page = board.page
    page.get_by_label("Task type").select_option("web_scrape")

    page.get_by_label("Url").fill("ftp://example.com/file")  # well-formed, but not a scheme the type accepts
    page.get_by_role("button", name="Submit task").click()

    error = page.locator("#field-url-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("http")
    expect(page.get_by_label("Url")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#form-errors")).to_contain_text("The server refused this task")
    assert httpx.get(f"{api}/tasks").json()["items"] == []
    board.assert_clean(allow=(r"status of 422",))


def test_the_list_filters_by_status_and_type_and_pages_with_the_cursor(
    api: str, open_dashboard: Callable[..., Dashboard]
) -> None:
    ids = [submit_task(api, {"task_type": "test_noop"}) for _ in range(22)]
    ids += [submit_task(api, {"task_type": "test_fail"}) for _ in range(3)]
    for task_id in ids[:2]:
        assert httpx.delete(f"{api}/tasks/{task_id}").status_code == 204  # PENDING → CANCELLED
    board = open_dashboard(api)
    page = board.page
    rows = page.locator("#task-list .row")

    expect(rows).to_have_count(20)
    assert rows.first.get_attribute("data-id") == ids[-1]  # newest first
    page.get_by_role("button", name="Load older tasks").click()
    expect(rows).to_have_count(25)
    assert [r.get_attribute("data-id") for r in rows.all()] == ids[::-1]
    expect(page.get_by_role("button", name="Load older tasks")).to_be_hidden()

    page.get_by_label("Status", exact=True).select_option("CANCELLED")
    expect(rows).to_have_count(2)
    expect(rows.locator(".badge")).to_have_text(["Cancelled", "Cancelled"])
    page.get_by_label("Status", exact=True).select_option("")
    page.get_by_label("Type", exact=True).select_option("test_fail")
    expect(rows).to_have_count(3)
    page.get_by_label("Status", exact=True).select_option("SUCCESS")
    expect(page.locator("#list-state")).to_have_text("No tasks match these filters.")
    board.assert_clean()


def test_the_dashboard_is_usable_with_the_keyboard_alone(api: str, open_dashboard: Callable[..., Dashboard]) -> None:
    submit_task(api, {"task_type": "test_sleep", "seconds": 30})
    board = open_dashboard(api)
    page = board.page
    expect(page.locator("#task-list .row")).to_have_count(1)
    keys = page.keyboard

    keys.press("Tab")
    expect(page.get_by_role("link", name="Skip to the task list")).to_be_focused()
    keys.press("Tab")  # API docs
    keys.press("Tab")
    expect(page.get_by_role("button", name="New task")).to_be_focused()
    keys.press("Tab")
    expect(page.get_by_label("Task type")).to_be_focused()
    keys.type("test_noop")  # type-ahead on the focused picker
    expect(page.get_by_label("Task type")).to_have_value("test_noop")
    keys.press("Tab")
    expect(page.get_by_role("button", name="Submit task")).to_be_focused()
    keys.press("Enter")
    expect(page.locator("#submit-status")).to_contain_text("Submitted test_noop")

    keys.press("Tab")  # Status filter
    keys.press("Tab")  # Type filter
    keys.press("Tab")  # "All matching the filters" (the bulk buttons are disabled: nothing selected)
    expect(page.get_by_label("All matching the filters")).to_be_focused()
    keys.press("Tab")
    first_row = page.locator("#task-list .row").first
    expect(first_row).to_be_focused()
    assert first_row.evaluate("el => getComputedStyle(el).outlineStyle") == "solid"  # focus is visible
    expect(first_row).to_contain_text("test_noop")
    keys.press("ArrowDown")  # buttons ignore arrows: focus stays put
    keys.press("Tab")
    expect(page.locator("#task-list .row-check").first).to_be_focused()  # the row's bulk checkbox
    keys.press("Tab")
    second_row = page.locator("#task-list .row").nth(1)
    expect(second_row).to_be_focused()
    keys.press("Enter")
    heading = page.locator("#detail-title")
    expect(heading).to_be_focused()
    expect(heading).to_have_text("test_sleep")
    expect(second_row).to_have_attribute("aria-current", "true")

    keys.press("Tab")
    expect(page.get_by_role("button", name="Cancel task")).to_be_focused()
    keys.press("Enter")
    expect(page.locator("#detail .detail-head .badge")).to_have_text("Cancelled")
    expect(page.locator("#detail [aria-live=polite]")).to_have_text("Task Cancelled")
    board.assert_clean()


def test_the_dashboard_fits_a_phone_screen(api: str, open_dashboard: Callable[..., Dashboard]) -> None:
    for body in ({"task_type": "test_sleep", "seconds": 30}, {"task_type": "vector_processing", "duration": 5}):
        submit_task(api, body)
    board = open_dashboard(api, viewport=PHONE, is_mobile=True, has_touch=True)
    page = board.page
    rows = page.locator("#task-list .row")
    expect(rows).to_have_count(2)

    toggle = page.get_by_role("button", name="New task")
    expect(toggle).to_have_attribute("aria-expanded", "false")  # folded: the list comes first
    expect(page.get_by_label("Task type")).to_be_hidden()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    rows.nth(1).tap()
    expect(page.locator("#detail-title")).to_have_text("test_sleep")
    expect(page.locator("#detail-title")).to_be_in_viewport()
    toggle.tap()
    expect(page.get_by_label("Task type")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    board.assert_clean()


def test_the_retry_button_queues_a_failed_task_again_and_follows_it(
    api: str, start_worker: Callable[..., Any], open_dashboard: Callable[..., Dashboard]
) -> None:
    start_worker()
    task_id = submit_task(api, {"task_type": "test_fail", "message": "first try"})
    board = open_dashboard(api, fragment=f"#task={task_id}")
    page = board.page
    expect(page.locator("#detail .detail-head .badge")).to_have_text("Failed")
    expect(page.locator("#detail [data-slot=attempts]")).to_have_text("1")

    page.get_by_role("button", name="Retry task").click()

    expect(page.locator("#detail [data-slot=action-status]")).to_have_text("Retry submitted: the task is queued again.")
    expect(page.locator("#detail [data-slot=attempts]")).to_have_text("2")  # it ran again, live
    expect(page.locator("#detail .detail-head .badge")).to_have_text("Failed")  # test_fail fails every time
    expect(page.locator("#detail ol.log > li")).to_have_count(2)  # "about to fail", once per attempt
    board.assert_clean()


def test_a_screenshot_of_a_busy_dashboard_shows_every_status(
    api: str, start_worker: Callable[..., Any], open_dashboard: Callable[..., Dashboard], tmp_path: Path
) -> None:
    """Also the picture in docs/: set TASKLIFT_UPDATE_SCREENSHOTS=1 to write docs/images/dashboard.png."""
    start_worker(concurrency=4)
    bodies = [
        {"task_type": "vector_processing", "vector_data": [0.1, 0.2, 0.3], "duration": 3, "step_seconds": 0.2},
        {"task_type": "test_fail", "message": "upstream answered 503 three times"},
        {"task_type": "test_sleep", "seconds": 60, "steps": 60},
        {"task_type": "test_noop"},
        {"task_type": "vector_processing", "vector_data": [1, 2, 3, 4], "duration": 300, "step_seconds": 0.5},
        {"task_type": "test_chatty", "lines": 60, "seconds": 45},
    ]
    ids = [submit_task(api, body) for body in bodies]
    board = open_dashboard(api, fragment=f"#task={ids[-1]}", color_scheme="light")
    page = board.page
    rows = page.locator("#task-list .row")
    expect(rows).to_have_count(len(bodies))
    expect(page.locator(f"#task-list .row[data-id='{ids[0]}'] .badge")).to_have_text("Succeeded")
    expect(page.locator(f"#task-list .row[data-id='{ids[2]}'] .badge")).to_have_text("Running")
    assert httpx.delete(f"{api}/tasks/{ids[2]}").status_code == 202
    expect(page.locator(f"#task-list .row[data-id='{ids[2]}'] .badge")).to_have_text("Cancelled")
    expect(page.locator(f"#task-list .row[data-id='{ids[1]}'] .badge")).to_have_text("Failed")
    expect(page.locator("#detail ol.log > li").nth(11)).to_be_attached()
    expect(page.locator("#detail [data-slot=eta]")).to_contain_text("about")

    target = SCREENSHOT if os.environ.get("TASKLIFT_UPDATE_SCREENSHOTS") == "1" else tmp_path / "dashboard.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target))
    assert target.stat().st_size > 20_000
    board.assert_clean()


def test_an_unavailable_task_store_raises_a_banner_that_clears_by_itself(
    api: str, open_dashboard: Callable[..., Dashboard]
) -> None:
    submit_task(api, {"task_type": "test_noop"})  # pending: the list re-reads every few seconds
    board = open_dashboard(api)
    page = board.page
    expect(page.locator("#task-list .row")).to_have_count(1)
    unavailable = json.dumps({"title": "Service Unavailable", "status": 503, "detail": "the task store is unavailable"})

    def store_down(route: Any) -> None:
        route.fulfill(
            status=503, headers={"Retry-After": "1"}, content_type="application/problem+json", body=unavailable
        )

    def list_reads(url: str) -> bool:
        return "/tasks?" in url

    page.route(list_reads, store_down)
    banner = page.get_by_role("alert").filter(has_text="unavailable")
    expect(banner).to_have_text("The task store is unavailable. Retrying by itself; tasks keep running on the server.")
    expect(page.locator("#conn")).to_contain_text("Offline")
    expect(page.locator("#task-list .row")).to_have_count(1)  # what was shown stays

    page.unroute(list_reads, store_down)  # the store is back

    expect(page.locator("#banner")).to_be_hidden()
    expect(page.locator("#conn")).to_contain_text("Connected")
    board.assert_clean(allow=(r"status of 503",))


def test_an_api_that_wants_credentials_gets_a_key_from_the_sign_in_form(
    api: str, open_dashboard: Callable[..., Dashboard]
) -> None:
    """With anonymous access off the API answers 401; the page asks for a key and sends it as a bearer token."""
    submit_task(api, {"task_type": "test_noop"})
    board = open_dashboard(api)
    page = board.page
    refused = json.dumps({"title": "Unauthorized", "status": 401, "detail": "send an API key"})
    sent: list[str | None] = []

    def bearer_gate(route: Any) -> None:  # a gate that wants one key, in front of the (anonymous) test API
        headers = route.request.all_headers()
        sent.append(headers.pop("authorization", None))
        if sent[-1] == "Bearer tl_right_key":
            route.continue_(headers=headers)  # the key is checked here, not by the API behind
        else:
            route.fulfill(
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="tasklift"'},
                content_type="application/problem+json",
                body=refused,
            )

    page.route(lambda url: urlparse(url).path.startswith(("/tasks", "/task-types")), bearer_gate)
    page.reload()

    expect(page.get_by_role("form", name="This tasklift needs an API key")).to_be_visible()
    expect(page.get_by_role("textbox", name="API key")).to_be_focused()
    page.get_by_role("textbox", name="API key").fill("tl_wrong_key")
    page.get_by_role("button", name="Use this key").click()
    expect(page.locator("#signin-error")).to_have_text("The API refused this key. Enter another one.")
    page.get_by_role("textbox", name="API key").fill("tl_right_key")
    page.get_by_role("button", name="Use this key").click()

    expect(page.locator("#signin")).to_be_hidden()
    expect(page.locator("#task-list .row")).to_have_count(1)
    expect(page.get_by_label("Task type")).to_be_enabled()
    expect(page.get_by_role("button", name="Forget API key")).to_be_visible()
    assert sent[-1] == "Bearer tl_right_key"
    board.assert_clean(allow=(r"status of 401",))


def test_the_retry_button_says_so_when_the_server_has_no_retry_endpoint(
    api: str, open_dashboard: Callable[..., Dashboard]
) -> None:
    task_id = submit_task(api, {"task_type": "test_noop"})
    assert httpx.delete(f"{api}/tasks/{task_id}").status_code == 204  # CANCELLED: Retry is offered
    board = open_dashboard(api, fragment=f"#task={task_id}")
    page = board.page
    not_allowed = json.dumps({"title": "Method Not Allowed", "status": 405, "detail": "POST is not allowed"})
    page.route(
        "**/retry",
        lambda route: route.fulfill(status=405, content_type="application/problem+json", body=not_allowed),
    )

    page.get_by_role("button", name="Retry task").click()

    status = page.locator("#detail [data-slot=action-status]")
    expect(status).to_have_text("Retry is not available on this server yet (it answered 405).")
    expect(page.get_by_role("button", name="Retry task")).to_be_enabled()
    board.assert_clean(allow=(r"status of 405",))
