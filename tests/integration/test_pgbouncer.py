"""Through PgBouncer in transaction mode: the API, workers and reaper work, and the setting that
makes it work is the one docs/sizing.md names.

A real PgBouncer (Debian's, 1.18: no protocol-level prepared statements) pools every process of
the test onto at most four PostgreSQL connections per database. With
``TASKLIFT_DB_STATEMENT_CACHE_SIZE=0`` (asyncpg's statement cache off, psycopg never prepares)
submits, the worker's lease, progress and finish, streams, listings and cancels all run
correctly; PgBouncer's own counters show the traffic went through it. With the cache on, asyncpg
reuses a statement prepared on another server connection and fails: the control that shows the
setting matters. (``TASKLIFT_TEST_PGBOUNCER=1`` runs whole suites this way: .ci/run does for the
contract suites.)
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import httpx
import pytest

from tasklift.settings import get_settings
from tests.conftest import THROUGH_PGBOUNCER, wait_for_status
from tests.support import pgbouncer as pgb

pytestmark = pytest.mark.skipif(
    pgb.binary() is None and os.environ.get("CI") != "true",
    reason=f"needs the pgbouncer binary ({pgb.BINARY_HINT}); CI always runs it",
)


@pytest.fixture
def database_url(database_url: str, pgbouncer: pgb.PgBouncer) -> str:
    """This module's databases are always reached through PgBouncer."""
    return database_url if THROUGH_PGBOUNCER else pgbouncer.url(database_url)


@pytest.fixture
def tasklift_env(tasklift_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    tasklift_env["TASKLIFT_DB_STATEMENT_CACHE_SIZE"] = "0"
    monkeypatch.setenv("TASKLIFT_DB_STATEMENT_CACHE_SIZE", "0")
    get_settings.cache_clear()
    yield tasklift_env
    get_settings.cache_clear()


def _database(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_tasks_run_end_to_end_through_pgbouncer(
    pgbouncer: pgb.PgBouncer, database_url: str, client: httpx.Client, start_worker, start_reaper
) -> None:
    start_worker(concurrency=2)
    start_reaper()
    before = pgbouncer.stats(_database(database_url)).get("total_xact_count", 0)

    def submit(i: int) -> str:
        r = client.post("/tasks", json={"task_type": "test_noop"})
        assert r.status_code == 202, r.text
        return r.json()["task_id"]

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(submit, range(40)))
    for task_id in ids:
        assert wait_for_status(client, task_id, "SUCCESS", timeout=60)["status"] == "SUCCESS"

    # A stream of a finished task replays its events and ends with the terminal one.
    with client.stream("GET", f"/tasks/{ids[0]}/stream", headers={"Accept": "text/event-stream"}) as r:
        data = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
    assert data[-1]["status"] == "SUCCESS"

    # A long task is cancelled while it runs; a listing sees every task.
    sleeper = {"task_type": "test_sleep", "seconds": 60, "steps": 120}
    long = client.post("/tasks", json=sleeper).json()["task_id"]
    wait_for_status(client, long, "RUNNING", timeout=30)
    assert client.delete(f"/tasks/{long}").status_code == 202
    assert wait_for_status(client, long, "CANCELLED", timeout=30)["status"] == "CANCELLED"
    listed = client.get("/tasks", params={"limit": 100}).json()["items"]
    assert {t["task_id"] for t in listed} >= set(ids) | {long}

    after = pgbouncer.stats(_database(database_url)).get("total_xact_count", 0)
    assert after - before > 40 * 3  # every submit, lease and finish went through PgBouncer


async def test_statement_cache_on_fails_through_pgbouncer(pgbouncer: pgb.PgBouncer, database_url: str) -> None:
    """The control: asyncpg's statement cache (the direct-connection default) breaks in transaction
    pooling, because a statement prepared on one server connection is executed on another."""
    url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    pool = await asyncpg.create_pool(url, min_size=8, max_size=8, statement_cache_size=100)
    try:

        async def read(i: int) -> None:
            async with pool.acquire() as conn:
                for _ in range(20):
                    await conn.fetchval("SELECT count(*) FROM tasks WHERE attempts > $1", i)

        with pytest.raises(asyncpg.PostgresError, match="prepared statement"):
            await asyncio.gather(*(read(i) for i in range(8)))
    finally:
        pool.terminate()
