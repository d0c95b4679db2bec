"""Browser fixtures: Debian's Chromium driven by Playwright, against the real stack from tests/conftest.py.

Every page records its console errors, uncaught exceptions and any request that leaves the API's
origin; :meth:`Dashboard.assert_clean` fails the test on any of them (tests call it at their end,
and teardown calls it for a passing test that forgot).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import tests.browser.task_types  # noqa: F401  (registers test_chatty in this process, for the threaded API)
from tasklift.embedded import free_port
from tasklift.settings import get_settings
from tests.conftest import Proc

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TASK_MODULES = json.dumps(["tests.support.task_types", "tests.browser.task_types"])
DESKTOP = {"width": 1440, "height": 900}
#: How long a UI expectation may take: tasks run in real worker processes on a possibly busy machine.
EXPECT_MS = 30_000


@pytest.fixture
def tasklift_env(tasklift_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The test stack's environment, with the browser tests' task types added for every process."""
    monkeypatch.setenv("TASKLIFT_TASK_MODULES", TASK_MODULES)
    get_settings.cache_clear()
    return {**tasklift_env, "TASKLIFT_TASK_MODULES": TASK_MODULES}


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """Keep each phase's report on the item, so fixtures can tell whether the test itself passed."""
    report: pytest.TestReport = yield
    setattr(item, f"report_{report.when}", report)
    return report


# Module scope, not session: Playwright's sync API runs an event loop in the main thread while it
# is open, and every later test in the session that calls asyncio.run() would then fail.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per test module (Debian's package; Playwright never downloads one)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests drive Debian's Chromium. "
            "Install it with `apt-get update && apt-get install -y chromium` (never `playwright install`).",
            pytrace=False,
        )
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=EXPECT_MS)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Dashboard:
    """A page on the dashboard plus what it logged."""

    page: Any
    base_url: str
    errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)
    checked: bool = False

    def open(self, fragment: str = "") -> Any:
        self.page.goto(f"{self.base_url}/{fragment}")
        return self.page

    def assert_clean(self, allow: tuple[str, ...] = ()) -> None:
        """No console error, no uncaught exception, no request off the API's origin.

        ``allow`` lists regular expressions for errors the test causes on purpose; Chromium logs
        every failed request ("Failed to load resource: …") as a console error even when the page
        handles it, e.g. a 422 the form shows, or connection refusals while the API is down.
        """
        self.checked = True
        unexpected = [e for e in self.errors if not any(re.search(p, e) for p in allow)]
        assert not unexpected, f"console errors: {unexpected}"
        assert not self.foreign_requests, f"requests that left the API's origin: {self.foreign_requests}"

    def submit(self, task_type: str, **fields: str) -> str:
        """Fill the New task form by its labels, submit it, and return the new task's id."""
        page = self.page
        page.get_by_label("Task type").select_option(task_type)
        for label, value in fields.items():
            page.get_by_label(label, exact=True).fill(value)
        page.get_by_role("button", name="Submit task").click()
        status = page.locator("#submit-status")
        from playwright.sync_api import expect

        expect(status).to_contain_text("Submitted")
        return page.evaluate("new URLSearchParams(location.hash.slice(1)).get('task')")


@pytest.fixture
def open_dashboard(browser: Any, request: pytest.FixtureRequest) -> Iterator[Callable[..., Dashboard]]:
    """Factory: ``open_dashboard(base_url, viewport=…, init_script=…, fragment="#task=…")`` opens the dashboard
    in a fresh browser context."""
    contexts: list[Any] = []
    boards: list[Dashboard] = []

    def create(
        base_url: str,
        viewport: dict[str, int] | None = None,
        init_script: str | None = None,
        fragment: str = "",
        **context_args: Any,
    ) -> Dashboard:
        context = browser.new_context(viewport=viewport or DESKTOP, **context_args)
        contexts.append(context)
        if init_script:
            context.add_init_script(init_script)
        page = context.new_page()
        board = Dashboard(page, base_url.rstrip("/"))
        page.on("console", lambda msg: board.errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: board.errors.append(f"uncaught: {exc}"))

        def note_request(request: Any) -> None:
            # data: and the page's own blob: URLs (ReDoc's search worker) never leave the origin.
            if not request.url.startswith((board.base_url, "data:", f"blob:{board.base_url}/")):
                board.foreign_requests.append(request.url)

        page.on("request", note_request)
        boards.append(board)
        board.open(fragment)
        return board

    yield create
    for context in contexts:
        context.close()
    outcome = getattr(request.node, "report_call", None)
    if outcome is not None and outcome.passed:  # a failed test has said what went wrong already
        for board in boards:
            if not board.checked:
                board.assert_clean()


@pytest.fixture
def start_api(spawn: Callable[..., Proc]) -> Callable[..., tuple[Proc, str]]:
    """Factory: the API as a real process (``tasklift api``) on ``port`` (a free one by default)."""

    def create(port: int | None = None, env: dict[str, str] | None = None) -> tuple[Proc, str]:
        port = port or free_port()
        proc = spawn("api", "api", "--port", str(port), env=env)
        proc.wait_for_output("Uvicorn running", timeout=30)
        return proc, f"http://127.0.0.1:{port}"

    return create


def submit_task(base_url: str, body: dict[str, Any]) -> str:
    """POST /tasks outside the page (as another client would); returns the task id."""
    answer = httpx.post(f"{base_url}/tasks", json=body, timeout=10)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["task_id"])
