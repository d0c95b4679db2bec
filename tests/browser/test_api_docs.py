"""/docs (Swagger UI) and /redoc (ReDoc) render in a real browser from packaged assets alone.

The pages load nothing from another origin (a CDN would be a blank page offline, and the CSP
allows scripts only from the API itself); a CSP violation is a console error, which fails the test.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Dashboard

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]


def test_swagger_ui_renders_every_operation_and_can_try_one(api: str, open_dashboard: Callable[..., Dashboard]) -> None:
    board = open_dashboard(api, fragment="docs")
    page = board.page
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    paths = set(page.locator(".opblock-summary-path").all_inner_texts())
    assert {"/tasks", "/tasks/{task_id}", "/tasks/{task_id}/stream"} <= {p.replace("\u200b", "") for p in paths}
    # "Try it out" on GET /task-types sends a real request from the page to the API.
    operation = page.locator(".opblock-get", has_text="/task-types").first
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    with page.expect_response(lambda r: r.url.endswith("/task-types")) as answer:
        operation.get_by_role("button", name="Execute").click()
    assert answer.value.status == 200
    expect(operation.locator(".live-responses-table tbody .response-col_status").first).to_contain_text("200")
    board.assert_clean()


def test_redoc_renders_the_api_offline(api: str, open_dashboard: Callable[..., Dashboard]) -> None:
    board = open_dashboard(api, fragment="redoc")
    page = board.page
    expect(page.get_by_role("heading", name="Submit Task").first).to_be_visible()
    expect(page.get_by_text("Long-running operations behind HTTP").first).to_be_visible()
    # ReDoc's "API docs by Redocly" footer points its logo at Redocly's CDN (and hides it when it
    # fails to load). The CSP blocks that one image: the request never leaves, Chromium logs the block.
    blocked = "https://cdn.redoc.ly/redoc/logo-mini.svg"
    assert board.foreign_requests in ([], [blocked])
    assert any(blocked in e and "Content Security Policy" in e for e in board.errors) or not board.foreign_requests
    board.foreign_requests.clear()
    board.assert_clean(allow=(r"^Loading the image 'https://cdn\.redoc\.ly/redoc/logo-mini\.svg' violates",))
