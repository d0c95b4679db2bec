"""Rate limits (issue 21 part 4, docs/flow-control.md "Rate limits"): a task type declared with
``rate_limit="N/period"`` is admitted to the Celery queue at most as a token bucket of N allows (a
burst of N, then N per period), across every dispatcher and worker, per type or per concurrency key.
Real API, PostgreSQL, Redis, Celery workers and reapers; ``test_rated`` is 5/s, ``test_rated_keyed``
2/s per key (tests/support/task_types.py)."""

from __future__ import annotations

import time
from datetime import datetime

import httpx
import pytest
import sqlalchemy as sa

from tasklift.queue.broker import Broker, rate_rules
from tasklift.settings import get_settings, parse_rate
from tasklift.store import flow
from tasklift.store.db import make_engine
from tests.conftest import wait_for_status

pytestmark = pytest.mark.timeout(240)


def submit(http: httpx.Client, task_type: str, label: str, key: str | None = None) -> str:
    body = {"task_type": task_type, "label": label} | ({"concurrency_key": key} if key else {})
    resp = http.post("/tasks", json=body)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["task_id"])


def starts(db: sa.Engine, label: str) -> list[datetime]:
    with db.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT created_at FROM test_effects WHERE key = :k ORDER BY created_at"), {"k": f"start:{label}"}
        ).scalars()
        return list(rows)


def most_in_any_window(times: list[datetime], seconds: float) -> int:
    """The most of ``times`` (sorted) inside one window of ``seconds``."""
    most, first = 0, 0
    for last, at in enumerate(times):
        while (at - times[first]).total_seconds() >= seconds:
            first += 1
        most = max(most, last - first + 1)
    return most


def test_a_type_limited_to_5_per_second_starts_no_faster_across_two_dispatchers(
    client: httpx.Client, db: sa.Engine, start_reaper, start_worker
) -> None:
    start_worker(concurrency=2), start_worker(concurrency=2)
    start_reaper(), start_reaper()  # two dispatchers spend from the same bucket
    ids = [submit(client, "test_rated", "five") for _ in range(40)]
    seen = {client.get(f"/tasks/{ids[-1]}").json()["waiting_reason"]}
    deadline = time.monotonic() + 10
    while "rate_limited" not in seen and time.monotonic() < deadline:
        seen.add(client.get(f"/tasks/{ids[-1]}").json()["waiting_reason"])
        time.sleep(0.05)
    assert "rate_limited" in seen, seen
    for task_id in ids:
        wait_for_status(client, task_id, "SUCCESS", timeout=60)
    times = starts(db, "five")
    assert len(times) == 40
    # A bucket of 5 refilled at 5/s: in any window of T seconds at most 5 + 5 T are admitted, and a
    # task starts only after its admission. Without the limit 40 no-op tasks run in well under 2 s.
    assert most_in_any_window(times, 1.0) <= 10, times
    assert (times[-1] - times[0]).total_seconds() >= (40 - 5) / 5 - 1, (times[0], times[-1])
    with db.connect() as conn:
        bucket = conn.execute(sa.text("SELECT * FROM rate_buckets WHERE task_type = 'test_rated'")).mappings().one()
    assert (bucket["bucket_key"], bucket["capacity"], bucket["period_seconds"]) == ("", 5.0, 1.0)
    assert 0 <= bucket["tokens"] <= 5


def test_per_key_buckets_are_independent_and_keyless_tasks_are_not_limited(
    client: httpx.Client, db: sa.Engine, start_reaper, start_worker
) -> None:
    start_worker(concurrency=2)
    start_reaper()
    a = [submit(client, "test_rated_keyed", "key-a", "a") for _ in range(6)]
    b = [submit(client, "test_rated_keyed", "key-b", "b") for _ in range(6)]
    free = [submit(client, "test_rated_keyed", "no-key") for _ in range(6)]
    for task_id in a + b + free:
        wait_for_status(client, task_id, "SUCCESS", timeout=60)
    key_a, key_b, no_key = starts(db, "key-a"), starts(db, "key-b"), starts(db, "no-key")
    for times in (key_a, key_b):
        assert len(times) == 6
        assert most_in_any_window(times, 1.0) <= 4, times  # a bucket of 2 refilled at 2/s
        assert (times[-1] - times[0]).total_seconds() >= (6 - 2) / 2 - 1
    # Each key has its own bucket: b's first two start with a's first two, not after a's six.
    assert abs((key_b[1] - key_a[1]).total_seconds()) < 1.0, (key_a, key_b)
    # Without a key a per-key limit does not hold: published at submit, all six within a second.
    assert (no_key[-1] - no_key[0]).total_seconds() < (6 - 2) / 2 - 1, no_key
    with db.connect() as conn:
        keys = conn.execute(sa.text("SELECT bucket_key FROM rate_buckets WHERE task_type = 'test_rated_keyed'"))
        assert sorted(keys.scalars()) == ["a", "b"]


def test_a_dispatcher_without_the_buckets_lock_admits_everything_but_the_rate_limited(
    client: httpx.Client, tasklift_env: dict[str, str], db: sa.Engine
) -> None:
    """Two dispatchers at once: the one that holds the rate buckets' lock spends tokens, the other
    admits the rest and no rate-limited intent (so no token is spent twice)."""
    rated = [submit(client, "test_rated", "locked") for _ in range(3)]
    other = submit(client, "test_keyed", "unrated", "k")  # limited by a concurrency key, not a rate
    engine = make_engine(tasklift_env["TASKLIFT_DATABASE_URL"])
    rules = rate_rules()
    assert flow.RateRule("test_rated", 5, 1.0) in rules
    try:
        with engine.connect() as first, engine.connect() as second:
            assert flow.lock_rate_buckets(first)
            assert not flow.lock_rate_buckets(second)
            ids = {str(r["task_id"]) for r in flow.admit(second, rates=rules, spend=False)}
            assert other in ids and not ids & set(rated)
            second.rollback()
            ids = {str(r["task_id"]) for r in flow.admit(first, rates=rules, spend=True)}
            assert set(rated) <= ids
            first.rollback()
    finally:
        engine.dispose()


def test_the_dispatcher_spends_only_what_it_published(client: httpx.Client, worker_runtime, db: sa.Engine) -> None:
    """A round debits the bucket by the messages that reached Redis; the next round admits only
    what is left."""
    rules = [r for r in rate_rules() if r.task_type == "test_rated"]
    ids = [submit(client, "test_rated", "spend") for _ in range(8)]
    broker: Broker = worker_runtime.broker
    assert broker.dispatch_due(worker_runtime.engine, rates=rules) == 5  # a full bucket of 5
    spent_at = time.monotonic()
    again = broker.dispatch_due(worker_runtime.engine, rates=rules)
    assert again <= 5 * (time.monotonic() - spent_at) + 1, again  # only what 5/s refilled meanwhile
    with db.connect() as conn:
        waiting = conn.execute(
            sa.text(
                "SELECT count(*) FROM task_outbox WHERE published_at IS NULL AND task_id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": ids},
        ).scalar_one()
    assert waiting == 8 - 5 - again
    assert client.get(f"/tasks/{ids[-1]}").json()["waiting_reason"] in {"rate_limited", "queued"}


def test_rates_read_as_n_per_period_and_bad_ones_are_refused() -> None:
    assert parse_rate("10/s") == (10, 1.0)
    assert parse_rate("100/m") == (100, 60.0)
    assert parse_rate("1000/h") == (1000, 3600.0)
    assert parse_rate("5/10s") == (5, 10.0)
    assert parse_rate("1/d") == (1, 86400.0)
    for bad in ("", "10", "0/s", "-1/s", "10/x", "10/0s", "1.5/s", "10 /s", "10/s ", "ten/s"):
        with pytest.raises(ValueError, match="not a rate"):
            parse_rate(bad)


def test_a_bad_rate_is_refused_at_import_and_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import BaseModel

    from tasklift.tasks.registry import task

    class Empty(BaseModel):
        pass

    with pytest.raises(ValueError, match="rate_limit '10 per second' is not a rate"):
        task("test_badly_rated", input=Empty, rate_limit="10 per second")
    monkeypatch.setenv("TASKLIFT_TASK_RATE_LIMITS", '{"report": "fast"}')
    get_settings.cache_clear()
    try:
        with pytest.raises(ValueError, match="task_rate_limits\\['report'\\]"):
            get_settings()
    finally:
        monkeypatch.delenv("TASKLIFT_TASK_RATE_LIMITS")
        get_settings.cache_clear()


def test_the_setting_overrides_a_declared_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    from tasklift.tasks.registry import get_task_type

    monkeypatch.setenv("TASKLIFT_TASK_RATE_LIMITS", '{"test_rated": "50/m", "test_keyed": "3/s"}')
    get_settings.cache_clear()
    try:
        rules = {r.task_type: r for r in rate_rules()}
        assert rules["test_rated"] == flow.RateRule("test_rated", 50, 60.0)
        assert rules["test_keyed"] == flow.RateRule("test_keyed", 3, 1.0)
        rated, per_key = get_task_type("test_rated"), get_task_type("test_rated_keyed")
        assert rated is not None and rated.rate == (50, 60.0) and rated.rate_limited(None)
        assert per_key is not None and per_key.rate == (2, 1.0)
        assert per_key.rate_limited("k") and not per_key.rate_limited(None)
    finally:
        monkeypatch.delenv("TASKLIFT_TASK_RATE_LIMITS")
        get_settings.cache_clear()
