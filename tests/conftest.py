"""Fixtures: real PostgreSQL and Redis (embedded wheels), a fresh database per test, and factories
that start real worker, reaper and API processes against them.

Nothing here is a mock: the engines are the same PostgreSQL 16 and Redis that `tasklift dev` runs.
Each test gets a database cloned from a migrated template (about 50 ms) and an empty Redis.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa

from tasklift.embedded import EmbeddedPostgres, EmbeddedRedis, free_port, stop_process
from tasklift.http.runtime import ApiRuntime
from tasklift.queue.runtime import WorkerRuntime
from tasklift.settings import get_settings
from tasklift.store.db import make_engine
from tests.support.pgbouncer import PgBouncer

# The OpenID provider fixture (``issuer``): tests/security and tests/infra both use it.
pytest_plugins = ["tests.support.oidc"]

REPO = Path(__file__).resolve().parents[1]
TEMPLATE_DB = "tasklift_template"
TEST_TASK_MODULES = json.dumps(["tests.support.task_types"])

#: Settings every test process gets: short leases and intervals so recovery is observable quickly.
TEST_SETTINGS = {
    "TASKLIFT_TASK_MODULES": TEST_TASK_MODULES,
    "TASKLIFT_FLAKY_FAILURE_RATE": "0",
    "TASKLIFT_LEASE_SECONDS": "3",
    "TASKLIFT_HEARTBEAT_SECONDS": "0.5",
    "TASKLIFT_REAPER_INTERVAL_SECONDS": "0.5",
    "TASKLIFT_DISPATCH_INTERVAL_SECONDS": "0.2",
    "TASKLIFT_DISPATCH_GRACE_SECONDS": "1",
    "TASKLIFT_OUTBOX_VERIFY_SECONDS": "1",
    "TASKLIFT_CANCEL_GRACE_SECONDS": "2",
    "TASKLIFT_SOFT_SHUTDOWN_SECONDS": "5",
    "TASKLIFT_LOG_LEVEL": "INFO",
    # POST /tasks accepts up to max_large_body_bytes (64 MiB) by default; the suites that test the
    # 413 cap keep it at max_body_bytes (1 MiB). tests/blobs turns large inputs on.
    "TASKLIFT_MAX_LARGE_BODY_BYTES": "0",
    # The suites before tests/security call the API without credentials; tests/security turns it off.
    "TASKLIFT_ANONYMOUS": "true",
}


#: ``TASKLIFT_TEST_PGBOUNCER=1``: every test process reaches PostgreSQL through a real PgBouncer in
#: transaction mode (tests/support/pgbouncer.py), with server-side prepared statements off, as a
#: deployment behind PgBouncer < 1.21 runs; .ci/run runs the contract suites this way too.
THROUGH_PGBOUNCER = os.environ.get("TASKLIFT_TEST_PGBOUNCER") == "1"
if THROUGH_PGBOUNCER:
    TEST_SETTINGS["TASKLIFT_DB_STATEMENT_CACHE_SIZE"] = "0"


def _admin_engine(pg: EmbeddedPostgres) -> sa.Engine:
    return sa.create_engine(pg.url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def _db_url(pg: EmbeddedPostgres, name: str) -> str:
    return pg.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    """One real PostgreSQL for the session, with a migrated template database.

    Its data lives outside pytest's temporary root: as root, PostgreSQL runs as an unprivileged
    user (tasklift.embedded) that must traverse the folders above its data, and every pytest
    process that starts on the machine makes that root private again (chmod 0700), which left the
    session's server unable to read its own pg_control (PANIC) when another test run started.
    """
    scratch = Path(tempfile.mkdtemp(prefix="tasklift-test-pg-"))
    pg = EmbeddedPostgres(scratch / "postgres", fsync=False)
    pg.start()
    admin = _admin_engine(pg)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {TEMPLATE_DB}")
    old = os.environ.get("TASKLIFT_DATABASE_URL")
    os.environ["TASKLIFT_DATABASE_URL"] = _db_url(pg, TEMPLATE_DB)
    get_settings.cache_clear()
    try:
        from tasklift.store.migrate import upgrade

        upgrade()
        template = sa.create_engine(_db_url(pg, TEMPLATE_DB), poolclass=sa.pool.NullPool)
        with template.begin() as conn:
            # Effects of the test task type: duplicates stay visible (no unique constraint on purpose).
            conn.exec_driver_sql(
                "CREATE TABLE test_effects (task_id uuid NOT NULL, key text NOT NULL, attempt int NOT NULL,"
                " created_at timestamptz NOT NULL DEFAULT now())"
            )
        template.dispose()
    finally:
        if old is None:
            os.environ.pop("TASKLIFT_DATABASE_URL", None)
        else:
            os.environ["TASKLIFT_DATABASE_URL"] = old
        get_settings.cache_clear()
    yield pg
    admin.dispose()
    pg.stop()
    shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One real Redis for the session (emptied before each test)."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("engines") / "redis", appendonly=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pgbouncer(pg_server: EmbeddedPostgres) -> Iterator[PgBouncer]:
    """A real PgBouncer (transaction pooling) in front of the session's PostgreSQL."""
    assert pg_server.port is not None
    bouncer = PgBouncer(pg_server.port).start()
    yield bouncer
    bouncer.stop()


@pytest.fixture
def database_url(pg_server: EmbeddedPostgres, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, migrated database for this test, dropped afterwards (through PgBouncer when
    ``TASKLIFT_TEST_PGBOUNCER=1``; created and dropped directly)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = _admin_engine(pg_server)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    url = _db_url(pg_server, name)
    yield request.getfixturevalue("pgbouncer").url(url) if THROUGH_PGBOUNCER else url
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.dispose()


@pytest.fixture
def tasklift_env(
    database_url: str, redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """Point this process at the test's database and Redis; returns the env for child processes."""
    redis.Redis.from_url(redis_server.url).flushall()
    env = {"TASKLIFT_DATABASE_URL": database_url, "TASKLIFT_REDIS_URL": redis_server.url, **TEST_SETTINGS}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


@pytest.fixture
async def runtime(tasklift_env: dict[str, str]) -> AsyncIterator[ApiRuntime]:
    """An API runtime on the test's event loop (what the ASGI lifespan builds), closed at the end."""
    built = ApiRuntime.open(get_settings())
    yield built
    await built.close()


@pytest.fixture
def worker_runtime(tasklift_env: dict[str, str]) -> Iterator[WorkerRuntime]:
    """This process's worker runtime, as worker_process_init installs it, for tasks run in process."""
    from tasklift.queue import runtime

    built = WorkerRuntime.open(get_settings())
    runtime.install(built)
    yield built
    runtime.close()


@pytest.fixture
def engine(tasklift_env: dict[str, str]) -> Iterator[sa.Engine]:
    """A pooled engine as a runtime makes one (tasklift.store.db.make_engine), on the test database."""
    made = make_engine(tasklift_env["TASKLIFT_DATABASE_URL"], 5)
    yield made
    made.dispose()


@pytest.fixture
def autocommit_engine(tasklift_env: dict[str, str]) -> Iterator[sa.Engine]:
    """The worker's kind of autocommit engine (its ``writer``), on the test database."""
    made = make_engine(tasklift_env["TASKLIFT_DATABASE_URL"], 5, autocommit=True)
    yield made
    made.dispose()


@pytest.fixture
def db(tasklift_env: dict[str, str]) -> Iterator[sa.Engine]:
    """An engine on the test database, for assertions on stored state."""
    engine = sa.create_engine(tasklift_env["TASKLIFT_DATABASE_URL"], poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


class Proc:
    """A child process started by a fixture, with its log."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.name, self.popen, self.log = name, popen, log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for_output(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.output()[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} did not print {text!r}:\n{self.output()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        stop_process(self.popen, sig, timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group (a worker and its pool children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)


@pytest.fixture
def spawn(tasklift_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Factory: ``spawn(name, *cli_args, env={...})`` runs ``tasklift <args>`` as a child; cleaned up after."""
    started: list[Proc] = []

    def create(name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        log = tmp_path / f"{name}-{len(started)}.log"
        full_env = {**os.environ, **tasklift_env, **(env or {}), "PYTHONPATH": f"{REPO}:{REPO / 'shared'}"}
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "tasklift.cli", *args],
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
                start_new_session=True,  # its own process group, so kill() reaches pool children
            )
        proc = Proc(name, popen, log)
        started.append(proc)
        return proc

    yield create
    for proc in reversed(started):
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGTERM)
            try:
                proc.popen.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def start_worker(spawn: Callable[..., Proc]) -> Callable[..., Proc]:
    """Factory: a real Celery worker (prefork) on the test stack, ready when returned."""

    def create(concurrency: int = 2, env: dict[str, str] | None = None, pool: str = "prefork") -> Proc:
        proc = spawn("worker", "worker", "--concurrency", str(concurrency), "--pool", pool, env=env)
        proc.wait_for_output("ready.", timeout=60)
        return proc

    return create


@pytest.fixture
def start_reaper(spawn: Callable[..., Proc]) -> Callable[..., Proc]:
    """Factory: the reaper/dispatcher process."""

    def create(env: dict[str, str] | None = None) -> Proc:
        proc = spawn("reaper", "reaper", env=env)
        proc.wait_for_output("reaper started", timeout=30)
        return proc

    return create


class ServerThread:
    """The ASGI app served by uvicorn on a real socket, in a thread of the test process."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture
def api(tasklift_env: dict[str, str]) -> Iterator[str]:
    """The ASGI app on a real port (uvicorn in a thread); yields its base URL."""
    from tasklift.http.asgi import create_app

    server = ServerThread(create_app()).start()
    yield server.url
    server.stop()


@pytest.fixture
def client(api: str) -> Iterator[httpx.Client]:
    """An HTTP client on the test API."""
    with httpx.Client(base_url=api, timeout=30) as http:
        yield http


def wait_for_status(http: httpx.Client, task_id: str, statuses: set[str] | str, timeout: float = 30) -> dict[str, Any]:
    """Poll GET /tasks/{id} until its status is one of ``statuses``; returns the resource."""
    wanted = {statuses} if isinstance(statuses, str) else statuses
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = http.get(f"/tasks/{task_id}").json()
        if body["status"] in wanted:
            return body
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} stayed {body.get('status')} (wanted {wanted}): {body}")
