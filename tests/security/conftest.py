"""Security fixtures: the test stack with authentication on, small limits, keys and clients.

Everything else in the suite runs with ``TASKLIFT_ANONYMOUS=true`` (tests/conftest.py); here it is
false, as in production, and the limits are small enough to reach in a test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
import sqlalchemy as sa

import tests.support.task_types  # noqa: F401  (registers test_noop & co. in this process, for the threaded API)
from tasklift.security.keys_admin import create_key
from tasklift.settings import get_settings
from tests.conftest import ServerThread

SIGNING_KEY = "test-stream-signing-key-0123456789abcdef"

#: Production-like settings, with limits a test can reach.
SECURITY_SETTINGS = {
    "TASKLIFT_ANONYMOUS": "false",
    "TASKLIFT_STREAM_SIGNING_KEY": SIGNING_KEY,
    "TASKLIFT_RATE_LIMIT_REQUESTS": "10000",
    "TASKLIFT_RATE_LIMIT_WINDOW_SECONDS": "60",
    "TASKLIFT_MAX_OPEN_STREAMS": "2",
    "TASKLIFT_MAX_ACTIVE_TASKS": "50",
}


@pytest.fixture
def secure_env(tasklift_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The test stack with authentication required; returns the env for child processes."""
    for name, value in SECURITY_SETTINGS.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return {**tasklift_env, **SECURITY_SETTINGS}


@pytest.fixture
def configure(secure_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``configure(rate_limit_requests=5)``: change settings of this process (and of its threaded API)."""

    def apply(**values: object) -> None:
        for name, value in values.items():
            monkeypatch.setenv(f"TASKLIFT_{name.upper()}", str(value))
            secure_env[f"TASKLIFT_{name.upper()}"] = str(value)
        get_settings.cache_clear()

    return apply


@pytest.fixture
def secure_api(secure_env: dict[str, str]) -> Iterator[str]:
    """The ASGI app on a real port, authentication on; yields its base URL."""
    from tasklift.http.asgi import create_app

    server = ServerThread(create_app()).start()
    yield server.url
    server.stop()


@pytest.fixture
def make_key(secure_env: dict[str, str]) -> Callable[..., str]:
    """Factory: ``make_key("alice", admin=False, principal=None)`` stores a key and returns its secret."""

    def create(name: str, *, admin: bool = False, principal: str | None = None) -> str:
        engine = sa.create_engine(secure_env["TASKLIFT_DATABASE_URL"], poolclass=sa.pool.NullPool)
        try:
            with engine.begin() as conn:
                return create_key(conn, name, admin=admin, principal=principal).secret
        finally:
            engine.dispose()

    return create


@pytest.fixture
def client_for(secure_api: str) -> Iterator[Callable[..., httpx.Client]]:
    """Factory: ``client_for(key)`` is an HTTP client on the secure API sending ``Authorization: Bearer key``."""
    clients: list[httpx.Client] = []

    def create(key: str | None = None, *, header: str = "authorization") -> httpx.Client:
        headers = {}
        if key is not None:
            headers = {"Authorization": f"Bearer {key}"} if header == "authorization" else {"X-API-Key": key}
        http = httpx.Client(base_url=secure_api, timeout=30, headers=headers)
        clients.append(http)
        return http

    yield create
    for http in clients:
        http.close()


@pytest.fixture
def alice(make_key: Callable[..., str], client_for: Callable[..., httpx.Client]) -> httpx.Client:
    """A client authenticated as principal ``key:alice``."""
    return client_for(make_key("alice"))


@pytest.fixture
def bob(make_key: Callable[..., str], client_for: Callable[..., httpx.Client]) -> httpx.Client:
    """A client authenticated as principal ``key:bob``."""
    return client_for(make_key("bob"))


def submit(http: httpx.Client, **body: object) -> dict:
    """POST /tasks (default: a test_noop task, which stays PENDING without a worker); returns the resource."""
    resp = http.post("/tasks", json={"task_type": "test_noop", **body})
    assert resp.status_code == 202, resp.text
    return resp.json()
