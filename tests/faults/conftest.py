"""Helpers for fault tests: count what was accepted, finished, lost and duplicated."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass

import psutil
import pytest
import sqlalchemy as sa

TERMINAL = ("SUCCESS", "FAILED", "CANCELLED")


@dataclass
class Tally:
    """Jepsen-style counts over the tasks a fault test submitted."""

    accepted: int
    terminal: int
    succeeded: int
    lost: int  #: accepted but never finished (or finished without its effect)
    duplicated: int  #: effects written more than once

    def __str__(self) -> str:
        return (
            f"accepted={self.accepted} terminal={self.terminal} succeeded={self.succeeded} "
            f"lost={self.lost} duplicated={self.duplicated}"
        )


def tally(db: sa.Engine, task_ids: list[str], expect: str = "SUCCESS") -> Tally:
    """Count outcomes and effects of ``task_ids`` (tasks of type test_effect write one effect each)."""
    with db.connect() as conn:
        status = dict(
            conn.execute(
                sa.text("SELECT id::text, status FROM tasks WHERE id::text = ANY(:ids)"), {"ids": task_ids}
            ).all()
        )
        effects = dict(
            conn.execute(
                sa.text("SELECT task_id::text, count(*) FROM test_effects WHERE task_id::text = ANY(:ids) GROUP BY 1"),
                {"ids": task_ids},
            ).all()
        )
    terminal = sum(status.get(t) in TERMINAL for t in task_ids)
    succeeded = sum(status.get(t) == "SUCCESS" for t in task_ids)
    lost = sum(status.get(t) != expect or (expect == "SUCCESS" and effects.get(t, 0) == 0) for t in task_ids)
    duplicated = sum(max(0, n - 1) for n in effects.values())
    return Tally(len(task_ids), terminal, succeeded, lost, duplicated)


def wait_until_terminal(db: sa.Engine, task_ids: list[str], timeout: float) -> Tally:
    """Poll PostgreSQL until every task is terminal (or ``timeout``); returns the tally."""
    deadline = time.monotonic() + timeout
    while True:
        counts = tally(db, task_ids)
        if counts.terminal == counts.accepted or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


def pool_children(pid: int) -> list[psutil.Process]:
    """The prefork pool processes of a Celery worker."""
    return psutil.Process(pid).children(recursive=True)


def running_count(db: sa.Engine, task_ids: list[str]) -> int:
    with db.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM tasks WHERE status = 'RUNNING' AND id::text = ANY(:ids)"),
                {"ids": task_ids},
            ).scalar()
            or 0
        )


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def own_redis(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """A Redis of this test's own (it may be restarted or frozen), wired into this process's settings."""
    from tasklift.embedded import EmbeddedRedis
    from tasklift.settings import get_settings

    server = EmbeddedRedis(tmp_path / "redis", appendonly=False)
    url = server.start()
    monkeypatch.setenv("TASKLIFT_REDIS_URL", url)
    get_settings.cache_clear()
    yield server
    if server.proc is not None:  # never leave it stopped (SIGSTOP), whatever failed
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.proc.pid, signal.SIGCONT)
    server.stop()
