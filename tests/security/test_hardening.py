"""Hardening: JSON-only Celery, security headers and CSP, CORS allowlist, no secret in logs or errors."""

from __future__ import annotations

import io
import logging
import pathlib
import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tasklift.http.pages import STATIC
from tasklift.security.redaction import RedactingFormatter, install_redaction, redact
from tasklift.settings import get_settings
from tests.conftest import ServerThread


def test_celery_accepts_json_only_and_a_pickled_message_never_runs(
    secure_env: dict[str, str], start_worker: Callable[..., object], tmp_path: Path
) -> None:
    """A pickle payload on the broker (say, from a compromised Redis) is refused, not unpickled."""
    from tasklift.queue.app import celery_app, create_celery_app

    conf = create_celery_app().conf
    assert conf.accept_content == ["json"] and conf.task_serializer == "json" and conf.result_serializer == "json"
    worker = start_worker()
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple:
            return (pathlib.Path.touch, (marker,))

    celery_app.send_task("tasklift.run", args=[Exploit()], serializer="pickle", queue=get_settings().cpu_queue)
    worker.wait_for_output("ContentDisallowed", timeout=30)  # type: ignore[attr-defined]
    time.sleep(0.5)
    assert not marker.exists()


SECURITY_HEADERS = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer", "x-frame-options": "DENY"}


@pytest.mark.parametrize(
    "path",
    ["/", "/static/app.js", "/tasks", "/healthz", "/openapi.json", "/docs", "/redoc", "/nowhere", "/tasks/x/stream"],
)
def test_every_response_carries_the_security_headers(secure_api: str, path: str) -> None:
    resp = httpx.get(secure_api + path)
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers[name] == value, (path, name)
    csp = resp.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp


def test_the_csp_lets_the_dashboard_load_its_own_files_and_stream_but_nothing_else(secure_api: str) -> None:
    csp = dict(
        part.strip().split(" ", 1) for part in httpx.get(secure_api + "/").headers["content-security-policy"].split(";")
    )
    assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
    assert csp["connect-src"] == "'self'"  # fetch() and EventSource to the API itself
    assert csp["img-src"] == "'self' data:"  # the inline SVG favicon
    page = (STATIC / "index.html").read_text()
    # Everything the page loads is its own static file: nothing the policy would block.
    loads = re.findall(r'<(?:script|img)[^>]*\bsrc="([^"]*)"', page) + re.findall(r'<link[^>]*\bhref="([^"]*)"', page)
    assert loads and all(u.startswith("data:") or u in {f"/static/{p.name}" for p in STATIC.iterdir()} for u in loads)
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), "inline script"
    assert " style=" not in page and "<style" not in page, "inline style"


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_scripts_only_from_the_api_itself(secure_api: str, page: str) -> None:
    resp = httpx.get(secure_api + page)
    assert resp.status_code == 200
    csp = dict(part.strip().split(" ", 1) for part in resp.headers["content-security-policy"].split(";"))
    assert csp["script-src"] == "'self'" and "http" not in resp.headers["content-security-policy"]
    html = resp.text
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script"
    loads = re.findall(r'<script[^>]*\bsrc="([^"]*)"', html) + re.findall(r'<link[^>]*\bhref="([^"]*)"', html)
    assert loads and all(u.startswith("/") and not u.startswith("//") for u in loads), loads
    for url in loads:  # every asset is served here, from the package (nothing from a CDN)
        asset = httpx.get(secure_api + url)
        assert asset.status_code == 200 and len(asset.content) > 100, url


def _preflight(url: str, origin: str) -> httpx.Response:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    return httpx.options(f"{url}/tasks", headers=headers)


def test_cors_is_closed_by_default(secure_api: str) -> None:
    assert "access-control-allow-origin" not in _preflight(secure_api, "https://app.example").headers
    simple = httpx.get(secure_api + "/healthz", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in simple.headers


def test_cors_answers_only_the_allowlisted_origins(configure: Callable[..., None]) -> None:
    from tasklift.http.asgi import create_app

    configure(cors_allow_origins='["https://app.example"]')
    server = ServerThread(create_app()).start()
    try:
        allowed = _preflight(server.url, "https://app.example")
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in allowed.headers  # bearer tokens, never cookies
        assert "access-control-allow-origin" not in _preflight(server.url, "https://evil.example").headers
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("connecting to postgresql+psycopg2://tasklift:s3cr3t-pw@db.internal:5432/tasklift", "s3cr3t-pw"),
        ("broker rediss://:redis-Passw0rd@cache.redis.cache.windows.net:6380/0 unreachable", "redis-Passw0rd"),
        ("dsn host=db user=tasklift password=hunter2 sslmode=require", "hunter2"),
        ("GET /tasks with Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", "eyJzdWIiOiJ4In0"),
        ("GET /tasks/1/stream?access_token=v1.ab12cd34.eyJ0IjoxfQ.c2lnbmF0dXJl&x=1", "c2lnbmF0dXJl"),
        ("key tl_2mzHucozYgwdwvSPthqXbyKESV4g4B5KB4BF5wxtvR0 used", "2mzHucozYgwdwvSPthqXbyKESV4g4B5KB4BF5wxtvR0"),
    ],
)
def test_credentials_are_masked_in_log_lines(line: str, secret: str) -> None:
    assert secret not in redact(line)
    assert "***" in redact(line)


def test_installed_redaction_masks_messages_arguments_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("tasklift.test_redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        install_redaction(logger)
        install_redaction(logger)  # idempotent
        assert isinstance(handler.formatter, RedactingFormatter)
        assert not isinstance(handler.formatter.inner, RedactingFormatter)
        logger.warning("database %s is down", "postgresql://app:pw-in-arg@db:5432/x")
        try:
            raise ConnectionError("redis://:pw-in-traceback@cache:6379/0 refused")
        except ConnectionError:
            logger.exception("broker failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "pw-in-arg" not in text and "pw-in-traceback" not in text
    assert "postgresql://app:***@db:5432/x" in text and "Traceback" in text


def test_the_api_process_redacts_its_log_lines(secure_env: dict[str, str]) -> None:
    """create_app() installs redaction on the process's log handlers (after the host configured them)."""
    from tasklift.http.asgi import create_app

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        create_app()
        logging.getLogger("tasklift.test").error("redis at redis://:from-settings@127.0.0.1:6379/0")
    finally:
        root.removeHandler(handler)
    assert "from-settings" not in stream.getvalue() and "redis://:***@127.0.0.1" in stream.getvalue()


def test_no_secret_reaches_a_client_or_the_log_when_the_store_is_down(
    configure: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    """The database URL (with its password) comes from settings; an outage shows neither."""
    from tasklift.embedded import free_port
    from tasklift.http.asgi import create_app

    configure(database_url=f"postgresql://tasklift:Db-Secret-42@127.0.0.1:{free_port()}/tasklift")
    server = ServerThread(create_app()).start()  # its runtime's engine is made from these settings
    caplog.set_level(logging.INFO)
    try:
        resp = httpx.get(f"{server.url}/tasks", headers={"Authorization": "Bearer tl_some-key-0000000000000000000000"})
    finally:
        server.stop()
    assert resp.status_code == 503 and resp.headers["retry-after"]
    assert "Db-Secret-42" not in resp.text and "127.0.0.1" not in resp.text
    assert "Db-Secret-42" not in caplog.text
