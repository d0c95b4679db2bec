#!/usr/bin/env python
"""Growth: do the API's, dispatcher's and reaper's queries stay flat as the tables grow?

Loads finished tasks with their events (status, progress and log lines; ``--events`` per task,
10 by default: 10 M tasks carry 100 M event rows) straight into the embedded PostgreSQL with
``generate_series`` (foreign-key triggers off for the load, the events' indexes dropped and rebuilt
around it), and at each size of ``--steps`` measures, p50 and p99 of ``--samples`` each:

- over HTTP, against one ``tasklift api`` process (keep-alive, one request at a time):
  ``POST /tasks``; ``GET /tasks/{id}`` of loaded tasks; ``GET /tasks`` as a tenant (no filter,
  ``status``, ``task_type``, ``created_after``, page 2 by cursor) and as an admin across all
  tenants (``status``, ``task_type``); ``GET /tasks/{id}/logs``; a stream resumed with
  ``Last-Event-ID`` on a finished task (replay and end);
- in this process, through the reaper's own functions on a :class:`WorkerRuntime`: a dispatcher
  round with nothing due and with 100 intents due, a lease-reaper round with nothing expired and
  with 20 expired leases, the cancel enforcer, the idempotency-key cleanup, and retention batches
  (``purge_batch``, per 200 tasks purged: the loaded tasks span 30 days, retention is 29 days).

Goal (issue 24): every p99 at the largest size within 1.5x of its value at the smallest; for one
that is not, the EXPLAIN (ANALYZE, BUFFERS) of its statement is printed when it is known here.
The tenants: 1,000 principals own the loaded tasks round-robin (the measured tenant owns 1/1,000).

    .venv/bin/python local/bench/growth.py                       # 0, 1 M, 10 M tasks (~30 min)
    .venv/bin/python local/bench/growth.py --scale 0.01          # 0, 10 k, 100 k (a quick check)
    .venv/bin/python local/bench/growth.py --steps 0,200000 --samples 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchkit as bk  # noqa: E402

GOAL = 1.5
TENANTS = 1000
TENANT = "tenant-7"  #: the measured tenant's principal (owner ``key:tenant-7``)
SPAN_SECONDS = 30 * 86400  #: the loaded tasks' created_at spread (a month)
RETENTION_DAYS = 29.0
TYPES = ("bench_noop", "bench_ticker", "peer_work")
CHUNK = 500_000  #: tasks per load transaction
MIN_TASKS = 1000
WARMUP = 10  #: uncounted requests before each HTTP figure

#: One statement per chunk: tasks :a .. :b, ids derived from the number so events can join.
LOAD_TASKS = f"""
INSERT INTO tasks (id, owner, task_type, queue, status, input, result, error, attempts, last_seq,
                   created_at, started_at, updated_at, completed_at)
SELECT md5('task' || i)::uuid, 'key:tenant-' || (i %% {TENANTS}), (ARRAY{list(TYPES)})[1 + i %% {len(TYPES)}],
       'tasklift.cpu',
       CASE WHEN i %% 50 = 0 THEN 'FAILED' WHEN i %% 97 = 0 THEN 'CANCELLED' ELSE 'SUCCESS' END,
       '{{"n": 1}}'::jsonb,
       CASE WHEN i %% 50 = 0 OR i %% 97 = 0 THEN NULL ELSE '{{"ok": true}}'::jsonb END,
       CASE WHEN i %% 50 = 0 THEN '{{"type": "RuntimeError", "message": "boom"}}'::jsonb END,
       1, %(events)s, c, c + interval '1 second', c + interval '2 seconds', c + interval '2 seconds'
FROM (SELECT i, now() - make_interval(secs => ((i * 7919) %% {SPAN_SECONDS}) + 60) AS c
      FROM generate_series(%(a)s::bigint, %(b)s::bigint) AS i) AS g
"""
LOAD_EVENTS = f"""
INSERT INTO task_events (task_id, seq, kind, data, created_at)
SELECT md5('task' || i)::uuid, s,
       CASE WHEN s <= 2 OR s = %(events)s THEN 'status' WHEN s = %(events)s - 1 THEN 'log' ELSE 'progress' END,
       CASE WHEN s = 1 THEN '{{"status": "PENDING"}}'::jsonb
            WHEN s = 2 THEN '{{"status": "RUNNING", "attempts": 1}}'::jsonb
            WHEN s = %(events)s THEN '{{"status": "SUCCESS", "attempts": 1}}'::jsonb
            WHEN s = %(events)s - 1 THEN '{{"level": "INFO", "message": "a line of the task log", "attempt": 1}}'::jsonb
            ELSE '{{"status": "RUNNING", "progress": {{"current": 1, "total": 10}}}}'::jsonb END,
       now() - make_interval(secs => ((i * 7919) %% {SPAN_SECONDS}) + 60)
FROM generate_series(%(a)s::bigint, %(b)s::bigint) AS i, generate_series(1, %(events)s) AS s
"""


def load(url: str, start: int, stop: int, events: int) -> float:
    """Insert tasks ``start`` .. ``stop - 1`` (and their events); returns the seconds it took."""
    import psycopg

    if stop <= start:
        return 0.0
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # no FK trigger per event row
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("SET max_parallel_maintenance_workers = 2")
        conn.execute("SET synchronous_commit = off")  # a load; the measurements run with the defaults
        defs = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'task_events'"
            " AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = 'task_events'::regclass)"
        ).fetchall()
        pk = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'task_events'::regclass AND contype = 'p'"
        ).fetchone()
        for name, _ in defs:
            conn.execute(f'DROP INDEX "{name}"')
        conn.execute(f'ALTER TABLE task_events DROP CONSTRAINT "{pk[0]}"')
        for a in range(start, stop, CHUNK):
            b = min(a + CHUNK, stop) - 1
            with conn.transaction():
                conn.execute(LOAD_TASKS, {"a": a, "b": b, "events": events})
                conn.execute(LOAD_EVENTS, {"a": a, "b": b, "events": events})
            bk.log(f"  loaded tasks {a:,} .. {b:,} ({time.perf_counter() - t0:.0f} s)")
        bk.log("  rebuilding task_events' primary key and indexes")
        conn.execute(f'ALTER TABLE task_events ADD CONSTRAINT "{pk[0]}" {pk[1]}')
        for _, indexdef in defs:
            conn.execute(indexdef)
        conn.execute("VACUUM (ANALYZE) tasks")
        conn.execute("VACUUM (ANALYZE) task_events")
    return time.perf_counter() - t0


def table_sizes(url: str) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT relname, pg_total_relation_size(oid), pg_indexes_size(oid), reltuples::bigint FROM pg_class"
            " WHERE relname IN ('tasks', 'task_events', 'task_outbox') ORDER BY relname"
        ).fetchall()
    return {name: {"total_mib": round(t / 2**20, 1), "index_mib": round(i / 2**20, 1), "rows": n}
            for name, t, i, n in rows}  # fmt: skip


def sample_tasks(url: str, n: int) -> list[dict[str, Any]]:
    """``n`` loaded finished tasks of the measured tenant, spread over the table (not just the newest)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, last_seq FROM tasks WHERE owner = %s AND status = 'SUCCESS' ORDER BY md5(id::text) LIMIT %s",
            (f"key:{TENANT}", n),
        ).fetchall()
    return [{"id": str(r[0]), "last_seq": r[1]} for r in rows]


# --- HTTP measurements --------------------------------------------------------------------------


async def timed(conn: bk.HttpConn, method: str, path: str, headers: dict[str, str], body: bytes | None = None,
                expect: int = 200) -> tuple[float, bytes]:  # fmt: skip
    t0 = time.perf_counter()
    await conn.send_head(method, path, body, headers)
    status, head = await conn.read_head()
    assert conn.reader is not None
    if "content-length" in head:
        data = await conn.reader.readexactly(int(head["content-length"]))
    else:
        data = b"".join([chunk async for chunk in conn.chunks()])
    elapsed = (time.perf_counter() - t0) * 1000
    if status != expect:
        raise RuntimeError(f"{method} {path} → {status}: {data[:300]!r}")
    if head.get("connection", "").lower() == "close":
        await conn.close()
    return elapsed, data


async def http_round(
    port: int, keys: dict[str, str], tasks: list[dict[str, Any]], samples: int
) -> dict[str, list[float]]:
    tenant = {"Authorization": f"Bearer {keys['tenant']}"}
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    conn = await bk.HttpConn(port).connect()
    out: dict[str, list[float]] = {}

    async def measure(name: str, make: Callable[[int], tuple[str, str, dict[str, str], bytes | None, int]]) -> None:
        times = []
        for i in range(-WARMUP, samples):  # the first calls (caches, prepared statements) are not counted
            method, path, headers, body, expect = make(i % samples)
            ms = (await timed(conn, method, path, headers, body, expect))[0]
            if i >= 0:
                times.append(ms)
        out[name] = times

    body = json.dumps({"task_type": "bench_idle"}).encode()
    submitted: list[str] = []
    times = []
    for _ in range(samples):
        ms, data = await timed(conn, "POST", "/tasks", tenant, body, 202)
        times.append(ms)
        submitted.append(json.loads(data)["task_id"])
    out["POST /tasks"] = times
    ids = [t["id"] for t in tasks] or submitted
    await measure("GET /tasks/{id}", lambda i: ("GET", f"/tasks/{ids[i % len(ids)]}", tenant, None, 200))
    after = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86400))
    listings = {
        "list (tenant)": "/tasks?limit=20",
        "list status=FAILED (tenant)": "/tasks?status=FAILED&limit=20",
        "list task_type (tenant)": "/tasks?task_type=bench_ticker&limit=20",
        "list created_after (tenant)": f"/tasks?created_after={after}&limit=20",
        "list status=FAILED (admin)": "/tasks?status=FAILED&limit=20",
        "list task_type (admin)": "/tasks?task_type=bench_ticker&limit=20",
    }
    for name, path in listings.items():
        who = admin if "admin" in name else tenant
        await measure(name, lambda i, p=path, h=who: ("GET", p, h, None, 200))
    _, first = await timed(conn, "GET", "/tasks?limit=20", tenant)
    cursor = json.loads(first)["next_cursor"]
    if cursor:
        await measure("list page 2 (tenant)", lambda i: ("GET", f"/tasks?limit=20&cursor={cursor}", tenant, None, 200))
    if tasks:
        await measure("GET /tasks/{id}/logs", lambda i: ("GET", f"/tasks/{ids[i % len(ids)]}/logs", tenant, None, 200))

        def resume(i: int) -> tuple[str, str, dict[str, str], bytes | None, int]:
            task = tasks[i % len(tasks)]
            headers = {**tenant, "Last-Event-ID": str(task["last_seq"] - 3), "Accept": "text/event-stream"}
            return "GET", f"/tasks/{task['id']}/stream", headers, None, 200

        await measure("stream resume (replay 3, end)", resume)
    await conn.close()
    return out


# --- the reaper's rounds, in process -------------------------------------------------------------


def reaper_round(url: str, samples: int) -> dict[str, list[float]]:
    import psycopg

    from tasklift.queue import reaper
    from tasklift.queue.broker import Dispatcher
    from tasklift.queue.runtime import WorkerRuntime
    from tasklift.settings import get_settings
    from tasklift.tasks import retention

    rt = WorkerRuntime.open(get_settings())
    out: dict[str, list[float]] = {}
    try:
        dispatcher = Dispatcher(rt.engine, rt.broker)
        dispatcher.round()  # the first round also reconciles with Redis: not a steady round

        def clock(name: str, job: Callable[[], Any], setup: Callable[[], None] | None = None, n: int = samples) -> None:
            times = []
            for i in range(-1, n):  # one round first, not counted
                if setup is not None:
                    setup()
                t0 = time.perf_counter()
                job()
                if i >= 0:
                    times.append((time.perf_counter() - t0) * 1000)
            out[name] = times

        def make_due() -> None:  # 100 of the measured tenant's idle submits become due, unpublished
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO task_outbox (task_id, queue, available_at) SELECT id, queue, now() - interval '1 s'"
                    " FROM tasks WHERE owner = %s AND status = 'PENDING' LIMIT 100"
                    " ON CONFLICT (task_id) DO UPDATE SET published_at = NULL, available_at = excluded.available_at",
                    (f"key:{TENANT}",),
                )

        def expire_leases() -> None:  # 20 idle submits look RUNNING with a lapsed lease
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "UPDATE tasks SET status = 'RUNNING', attempts = attempts + 1, redispatches = 0,"
                    " lease_expires_at = now() - interval '1 s'"
                    " WHERE id IN (SELECT id FROM tasks WHERE owner = %s AND status = 'PENDING' LIMIT 20)",
                    (f"key:{TENANT}",),
                )

        clock("dispatcher round, nothing due", dispatcher.round)
        clock("dispatcher round, 100 due", dispatcher.round, make_due, n=max(5, samples // 10))
        clock("lease reaper, nothing expired", lambda: reaper.reap_expired_leases(rt))
        reap = lambda: reaper.reap_expired_leases(rt)  # noqa: E731
        clock("lease reaper, 20 expired", reap, expire_leases, n=max(5, samples // 10))
        clock("cancel enforcer", lambda: reaper.enforce_cancels(rt))
        clock("idempotency cleanup", lambda: reaper.cleanup(rt))
        # Retention: the time of a purge batch per BATCH tasks purged (a small database has fewer
        # than a batch past the cutoff), over batches that purged something.
        purges = []
        for _ in range(max(3, samples // 20)):
            t0 = time.perf_counter()
            purged = retention.purge_batch(rt.engine, RETENTION_DAYS, rt.blobs)
            if purged:
                purges.append((time.perf_counter() - t0) * 1000 * retention.BATCH / purged)
        out[f"retention, per {retention.BATCH} tasks purged"] = purges
    finally:
        rt.close()
    return out


#: Statements this script can EXPLAIN when their figure grows (the API's own SQL text).
def explain(url: str, name: str) -> str | None:
    import psycopg

    from tasklift.store import repository as repo

    owner = f"key:{TENANT}"
    cases: dict[str, tuple[str, dict[str, Any]]] = {
        "list status=FAILED (admin)": (repo.list_tasks_sql(["status"]), {"status": "FAILED"}),
        "list task_type (admin)": (repo.list_tasks_sql(["task_type"]), {"task_type": "bench_ticker"}),
        "list status=FAILED (tenant)": (repo.list_tasks_sql(["owner", "status"]), {"owner": owner, "status": "FAILED"}),
        "list task_type (tenant)": (
            repo.list_tasks_sql(["owner", "task_type"]),
            {"owner": owner, "task_type": "bench_ticker"},
        ),
        "list (tenant)": (repo.list_tasks_sql(["owner"]), {"owner": owner}),
    }
    if name not in cases:
        return None
    sql, params = cases[name]
    params["limit"] = 21
    for key in params:  # the store's :name placeholders as psycopg's
        sql = sql.replace(f":{key}", f"%({key})s")
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, params).fetchall()
    return "\n".join(r[0] for r in rows)


# --- main ----------------------------------------------------------------------------------------


def create_keys(url: str) -> dict[str, str]:
    from sqlalchemy import create_engine

    from tasklift.security.keys_admin import create_key

    engine = create_engine(url)
    with engine.begin() as conn:
        keys = {"tenant": create_key(conn, "growth-tenant", principal=TENANT).secret,
                "admin": create_key(conn, "growth-admin", admin=True).secret}  # fmt: skip
    engine.dispose()
    return keys


def summarize(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    first, last = steps[0], steps[-1]
    rows = []
    for name, times in last["ms"].items():
        base = first["ms"].get(name)
        p99 = bk.percentile(times, 99)
        p99_0 = bk.percentile(base, 99) if base else float("nan")
        rows.append({"op": name, "p50": [round(bk.percentile(s["ms"][name], 50), 2) if name in s["ms"] else None
                                         for s in steps],
                     "p99": [round(bk.percentile(s["ms"][name], 99), 2) if name in s["ms"] else None for s in steps],
                     "ratio": round(p99 / p99_0, 2) if base else None})  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="0,1000000,10000000", help="table sizes (tasks) to measure at")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step (0.01: a quick check)")
    parser.add_argument("--events", type=int, default=10, help="event rows per loaded task (>= 4)")
    parser.add_argument("--samples", type=int, default=200, help="requests or rounds per figure")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args()
    # "0" is an (almost) empty database: 1,000 tasks, so that reads have something to read.
    sizes = sorted({max(MIN_TASKS, int(int(s) * args.scale)) for s in args.steps.split(",")})
    bk.install_signal_handlers()
    logging.getLogger("tasklift").setLevel(logging.ERROR)  # the in-process reaper's per-task lines
    results: dict[str, Any] = {"machine": bk.machine_info(), "args": vars(args), "steps": []}
    extra = {"TASKLIFT_ANONYMOUS": "false", "TASKLIFT_MAX_ACTIVE_TASKS": "0", "TASKLIFT_RATE_LIMIT_REQUESTS": "0",
             "TASKLIFT_RETENTION_DAYS": str(RETENTION_DAYS)}  # fmt: skip
    with bk.Stack(extra_env=extra) as stack:
        os.environ.update(stack.env)  # the in-process reaper reads the same settings
        sys.path.insert(0, str(bk.REPO / "shared"))
        keys = create_keys(stack.database_url)
        url = stack.database_url.replace("postgresql+psycopg://", "postgresql://", 1)  # libpq's form
        port = bk.free_port()
        stack.api(port)
        loaded = 1
        for size in sizes:
            seconds = load(url, loaded, size + 1, args.events)
            loaded = max(loaded, size + 1)
            sizes_now = table_sizes(url)
            bk.log(f"{size:,} tasks loaded ({seconds:.0f} s); measuring")
            tasks = sample_tasks(url, args.samples)
            ms = asyncio.run(http_round(port, keys, tasks, args.samples))
            ms.update(reaper_round(url, args.samples))
            stack.check_alive()
            results["steps"].append({"tasks": size, "load_seconds": round(seconds, 1), "tables": sizes_now, "ms": ms})
            for name, times in ms.items():
                p50, p99 = bk.percentile(times, 50), bk.percentile(times, 99)
                print(f"  {size:>11,}  {name:<38} p50 {p50:8.2f} ms  p99 {p99:8.2f} ms")
        rows = summarize(results["steps"])
        results["summary"] = rows
        print(f"\nGrowth (p99 at {sizes[-1]:,} tasks / p99 at {sizes[0]:,}; goal <= {GOAL}x)")
        print(f"  {'operation':<38} " + " ".join(f"{'p99@' + format(s, ','):>14}" for s in sizes) + "   ratio")
        for row in rows:
            ratio = row["ratio"]
            mark = "" if ratio is None else ("met" if ratio <= GOAL else "NOT MET")
            cells = " ".join(f"{v:>14.2f}" if v is not None else f"{'-':>14}" for v in row["p99"])
            print(f"  {row['op']:<38} {cells}   {ratio if ratio is not None else '-'} {mark}")
        for step in results["steps"]:
            print(f"  tables at {step['tasks']:,} tasks: {json.dumps(step['tables'])}")
        for row in rows:
            if row["ratio"] is not None and row["ratio"] > GOAL and (plan := explain(url, row["op"])):
                print(f"\nEXPLAIN of {row['op']} at {sizes[-1]:,} tasks:\n{plan}")
    bk.save_results("growth", results)
    if not args.no_plot:
        plot(results)
    return 0


def plot(results: dict[str, Any]) -> None:
    plt = bk.pyplot()
    if plt is None:
        return
    steps = results["steps"]
    xs = [max(s["tasks"], 1) for s in steps]
    fig, ax = plt.subplots(figsize=(9, 5))
    for row in results["summary"]:
        ax.plot(xs, row["p99"], marker="o", label=row["op"])
    ax.set_xscale("symlog", linthresh=1000)
    ax.set_yscale("log")
    ax.set_xlabel("tasks in the database")
    ax.set_ylabel("p99 (ms)")
    ax.set_title("p99 of each operation as the tables grow")
    ax.legend(fontsize=6, ncol=2)
    bk.save_figure(fig, "growth")


if __name__ == "__main__":
    raise SystemExit(main())
