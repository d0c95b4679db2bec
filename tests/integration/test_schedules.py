"""Cron / interval schedules (issue 21 part 5, docs/flow-control.md "Schedules"): the resource, its
4xx, firings that run on a real worker, pause, two firers racing, a firer down for several periods,
and a repeated firing. Real API, PostgreSQL, Redis, Celery worker and reaper."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa

from tasklift.store.db import make_engine
from tasklift.tasks import schedule_firer
from tests.conftest import wait_for_status


def create(http: httpx.Client, **body: Any) -> dict[str, Any]:
    resp = http.post("/schedules", json={"task_type": "test_noop", **body})
    assert resp.status_code == 201, resp.text
    assert resp.headers["location"] == f"/schedules/{resp.json()['schedule_id']}"
    return dict(resp.json())


def runs(db: sa.Engine, schedule_id: str) -> list[tuple[datetime, uuid.UUID]]:
    with db.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT fire_at, task_id FROM schedule_runs WHERE schedule_id = :s ORDER BY fire_at"),
            {"s": schedule_id},
        ).all()
    return [(row[0], row[1]) for row in rows]


def count(db: sa.Engine, sql: str, **params: Any) -> int:
    with db.connect() as conn:
        return int(conn.execute(sa.text(sql), params).scalar_one())


def test_crud_pagination_and_conflict(client: httpx.Client, db: sa.Engine) -> None:
    made = create(client, name="nightly", cron="30 2 * * *", timezone="Europe/Berlin", priority=4, ttl_seconds=60)
    assert made["paused"] is False and made["timezone"] == "Europe/Berlin" and made["priority"] == 4
    assert made["ttl_seconds"] == 60 and made["catchup"] == "latest" and made["last_task_id"] is None
    nxt = datetime.fromisoformat(made["next_fire_at"])
    assert nxt > datetime.now(UTC) and nxt.astimezone(ZoneInfo("Europe/Berlin")).hour in (2, 3)
    sid = made["schedule_id"]
    assert client.get(f"/schedules/{sid}").json() == made

    again = client.post("/schedules", json={"task_type": "test_noop", "name": "nightly", "interval_seconds": 5})
    assert again.status_code == 409 and again.headers["content-type"].startswith("application/problem+json")

    for n in range(3):
        create(client, name=f"every-{n}", interval_seconds=60 + n)
    first = client.get("/schedules", params={"limit": 2}).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    second = client.get("/schedules", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    names = [s["name"] for s in first["items"] + second["items"]]
    assert names == ["every-2", "every-1", "every-0", "nightly"] and second["next_cursor"] is None

    paused = client.post(f"/schedules/{sid}:pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True and paused.json()["next_fire_at"] is None
    assert client.post(f"/schedules/{sid}:pause").json()["paused"] is True  # idempotent
    resumed = client.post(f"/schedules/{sid}:resume").json()
    assert resumed["paused"] is False and datetime.fromisoformat(resumed["next_fire_at"]) > datetime.now(UTC)

    assert client.delete(f"/schedules/{sid}").status_code == 204
    for resp in (
        client.get(f"/schedules/{sid}"),
        client.delete(f"/schedules/{sid}"),
        client.post(f"/schedules/{sid}:pause"),
    ):
        assert resp.status_code == 404, resp.text
    assert client.get("/schedules/not-a-uuid").status_code == 404
    assert count(db, "SELECT count(*) FROM schedules") == 3


def test_another_principals_schedule_is_not_found(client: httpx.Client, db: sa.Engine) -> None:
    sid = uuid.uuid4()
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO schedules (id, owner, name, task_type, payload, flow, interval_seconds, next_fire_at)"
                " VALUES (:id, 'someone-else', 'theirs', 'test_noop', '{}', '{}', 60, now() + interval '1 hour')"
            ),
            {"id": sid},
        )
    assert client.get(f"/schedules/{sid}").status_code == 404
    assert client.post(f"/schedules/{sid}:pause").status_code == 404
    assert client.get(f"/schedules/{sid}/runs").status_code == 404
    assert client.delete(f"/schedules/{sid}").status_code == 404
    assert [s["name"] for s in client.get("/schedules").json()["items"]] == []


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"name": "x", "cron": "61 * * * *"}, ["body", "cron"]),
        ({"name": "x", "cron": "* * * *"}, ["body", "cron"]),
        ({"name": "x", "cron": "0 0 30 2 *"}, ["body", "cron"]),
        ({"name": "x", "cron": "0 3 * * *", "timezone": "Mars/Olympus"}, ["body", "timezone"]),
        ({"name": "x", "cron": "0 3 * * *", "timezone": "UTC\u0000"}, ["body", "timezone"]),
        ({"name": "x"}, ["body", "cron"]),
        ({"name": "x", "interval_seconds": 0.5}, ["body", "interval_seconds"]),
        ({"name": "x", "interval_seconds": "5"}, ["body", "interval_seconds"]),
        ({"name": "x", "interval_seconds": 5, "task_type": "no_such_type"}, ["body", "task_type"]),
        ({"name": "x", "interval_seconds": 5, "task_type": 7}, ["body", "task_type"]),
        ({"name": "x", "interval_seconds": 5, "task_type": "test_sleep", "payload": {"seconds": -1}}, None),
        ({"name": "x", "interval_seconds": 5, "payload": {"priority": 3}}, ["body", "payload", "priority"]),
        ({"name": "x", "interval_seconds": 5, "priority": 10}, ["body", "priority"]),
        ({"name": "x", "interval_seconds": 5, "ttl_seconds": -1}, ["body", "ttl_seconds"]),
        ({"name": "x", "interval_seconds": 5, "concurrency_key": ""}, ["body", "concurrency_key"]),
        ({"name": "", "interval_seconds": 5}, ["body", "name"]),
        ({"name": "x", "interval_seconds": 5, "catchup": "never"}, ["body", "catchup"]),
        ({"name": "x", "interval_seconds": 5, "run_at": "2030-01-01T00:00:00Z"}, ["body", "run_at"]),
    ],
)
def test_bad_bodies_are_422_and_store_nothing(
    client: httpx.Client, db: sa.Engine, body: dict[str, Any], loc: list[str] | None
) -> None:
    resp = client.post("/schedules", json={"task_type": "test_noop", **body})
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    errors = resp.json()["errors"]
    if loc is None:  # the payload's own field, under payload
        assert errors[0]["loc"][:3] == ["body", "payload", "seconds"], errors
    else:
        assert errors[0]["loc"] == loc, errors
    assert count(db, "SELECT count(*) FROM schedules") == 0


def test_not_json_and_not_an_object(client: httpx.Client) -> None:
    assert client.post("/schedules", content=b"[1]", headers={"content-type": "application/json"}).status_code == 422
    assert client.post("/schedules", content=b"{", headers={"content-type": "application/json"}).status_code in (
        400,
        422,
    )
    assert client.post("/schedules", content=b"x", headers={"content-type": "text/plain"}).status_code == 415


def test_a_schedule_every_second_fires_tasks_that_succeed_and_a_paused_one_fires_nothing(
    client: httpx.Client, db: sa.Engine, start_reaper, start_worker
) -> None:
    start_worker(concurrency=1)
    start_reaper()
    paused = create(client, name="held", interval_seconds=1, paused=True)
    every = create(client, name="tick", interval_seconds=1, priority=2)
    deadline = time.monotonic() + 30
    while len(runs(db, every["schedule_id"])) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    fired = runs(db, every["schedule_id"])
    assert len(fired) >= 3
    gaps = [(b[0] - a[0]).total_seconds() for a, b in zip(fired, fired[1:], strict=False)]
    assert all(gap == pytest.approx(1.0) for gap in gaps), gaps  # nominal times one interval apart
    for _, task_id in fired[:3]:
        task = wait_for_status(client, str(task_id), "SUCCESS")
        assert task["task_type"] == "test_noop" and task["priority"] == 2
    listing = client.get(f"/schedules/{every['schedule_id']}/runs").json()["items"]
    assert {item["task_id"] for item in listing} >= {str(t) for _, t in fired[:3]}
    assert listing[0]["fire_at"] > listing[-1]["fire_at"]  # latest first
    current = client.get(f"/schedules/{every['schedule_id']}").json()
    assert current["fired"] >= 3 and current["links"]["last_task"] == f"/tasks/{current['last_task_id']}"
    assert runs(db, paused["schedule_id"]) == []
    assert client.get(f"/schedules/{paused['schedule_id']}").json()["fired"] == 0

    client.post(f"/schedules/{every['schedule_id']}:pause")
    time.sleep(0.5)  # a round in flight commits
    frozen = len(runs(db, every["schedule_id"]))
    time.sleep(2.5)
    assert len(runs(db, every["schedule_id"])) == frozen, "a paused schedule fired"


def _insert_due(db: sa.Engine, n: int, *, seconds_ago: float, interval: float, catchup: str = "latest") -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO schedules (id, owner, name, task_type, payload, flow, interval_seconds, catchup,"
                " next_fire_at) SELECT CAST(i AS uuid), 'dev', 'due-' || i, 'test_noop', '{}', '{}', :interval,"
                " :catchup, date_trunc('second', now()) - make_interval(secs => :ago)"
                " FROM unnest(CAST(:ids AS text[])) AS i"
            ),
            {"ids": ids, "interval": interval, "catchup": catchup, "ago": seconds_ago},
        )
    return ids


def test_two_firers_racing_over_n_due_schedules_submit_exactly_n_tasks(
    tasklift_env: dict[str, str], db: sa.Engine
) -> None:
    n = 120
    _insert_due(db, n, seconds_ago=1, interval=3600)
    engines = [make_engine(tasklift_env["TASKLIFT_DATABASE_URL"], 2) for _ in range(2)]
    fired = [0, 0]
    start = threading.Barrier(2)

    def firer(k: int) -> None:
        start.wait()
        while True:
            got = schedule_firer.fire_due(engines[k], limit=7)  # many small rounds: they interleave
            if not got:
                return
            fired[k] += got

    threads = [threading.Thread(target=firer, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for engine in engines:
        engine.dispose()
    assert sum(fired) == n and all(fired), fired  # both took part, neither doubled
    assert count(db, "SELECT count(*) FROM tasks") == n
    assert count(db, "SELECT count(*) FROM schedule_runs") == n
    assert count(db, "SELECT count(DISTINCT schedule_id) FROM schedule_runs") == n
    assert count(db, "SELECT count(*) FROM idempotency_keys WHERE key LIKE 'schedule:%'") == n
    assert count(db, "SELECT count(*) FROM schedules WHERE next_fire_at <= now()") == 0


def test_a_repeated_firing_is_never_doubled(engine: sa.Engine, db: sa.Engine) -> None:
    [sid] = _insert_due(db, 1, seconds_ago=0, interval=3600)
    assert schedule_firer.fire_due(engine) == 1
    [(fire_at, task_id)] = runs(db, sid)
    with db.begin() as conn:  # as if the round ran again for the same time (a restored backup, a bug)
        conn.execute(sa.text("UPDATE schedules SET next_fire_at = :t WHERE id = :s"), {"t": fire_at, "s": sid})
    assert schedule_firer.fire_due(engine) == 0
    assert runs(db, sid) == [(fire_at, task_id)] and count(db, "SELECT count(*) FROM tasks") == 1
    assert count(db, "SELECT count(*) FROM schedules WHERE next_fire_at > now()") == 1  # it moved on


def test_missed_firings_latest_fires_once_and_all_catches_up_each(engine: sa.Engine, db: sa.Engine) -> None:
    [latest] = _insert_due(db, 1, seconds_ago=5.5 * 60, interval=60)  # 6 times missed: -5.5 .. -0.5 min
    [every] = _insert_due(db, 1, seconds_ago=5.5 * 60, interval=60, catchup="all")
    assert schedule_firer.fire_due(engine) == 1 + 6
    [(when, _)] = runs(db, latest)
    now = datetime.now(UTC)
    assert now - timedelta(seconds=60) < when <= now  # the latest missed time
    caught = [t for t, _ in runs(db, every)]
    assert (
        len(caught) == 6 and [(b - a).total_seconds() for a, b in zip(caught, caught[1:], strict=False)] == [60.0] * 5
    )
    assert schedule_firer.fire_due(engine) == 0  # nothing more until the next time


def test_a_reaper_stopped_for_several_periods_fires_once_for_the_latest_missed_time(
    client: httpx.Client, db: sa.Engine, start_reaper
) -> None:
    reaper = start_reaper()
    sched = create(client, name="tick", interval_seconds=1)
    deadline = time.monotonic() + 20
    while len(runs(db, sched["schedule_id"])) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    reaper.stop()
    before = runs(db, sched["schedule_id"])
    stopped_at = datetime.now(UTC)
    time.sleep(4.2)  # four periods without a firer
    start_reaper()
    restarted_at = datetime.now(UTC)
    time.sleep(1.5)
    after = runs(db, sched["schedule_id"])[len(before) :]
    assert after, "nothing fired after the restart"
    in_gap = [t for t, _ in after if t < restarted_at - timedelta(seconds=1)]
    # Of the ~4 times missed while stopped, only the latest (≤ the restart) fired.
    assert len(in_gap) <= 1, [t.isoformat() for t, _ in after]
    assert after[0][0] > stopped_at + timedelta(seconds=2), "an early missed time was fired, not the latest"
    times = [t for t, _ in before + after]
    assert times == sorted(set(times))  # never twice


def test_a_firing_whose_task_no_longer_validates_records_why_and_keeps_its_times(
    engine: sa.Engine, db: sa.Engine, client: httpx.Client
) -> None:
    [gone] = _insert_due(db, 1, seconds_ago=0, interval=3600)
    [changed] = _insert_due(db, 1, seconds_ago=0, interval=3600)
    with db.begin() as conn:  # the type was removed; the other's input model now refuses its payload
        conn.execute(sa.text("UPDATE schedules SET task_type = 'retired_type' WHERE id = :s"), {"s": gone})
        conn.execute(
            sa.text("UPDATE schedules SET task_type = 'test_sleep', payload = '{\"seconds\": -5}' WHERE id = :s"),
            {"s": changed},
        )
    assert schedule_firer.fire_due(engine) == 0
    assert count(db, "SELECT count(*) FROM tasks") == 0
    with db.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT last_error, next_fire_at > now() FROM schedules WHERE id IN (:a, :b) ORDER BY id = :a"),
            {"a": gone, "b": changed},
        ).all()
    assert "test_sleep" in rows[0][0] and "retired_type" in rows[1][0]
    assert all(ahead for _, ahead in rows)  # moved on to their next time: no retry loop
