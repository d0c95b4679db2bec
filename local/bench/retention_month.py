#!/usr/bin/env python
"""Retention over a simulated month: does the purge keep up, and do the tables stay flat?

Each simulated day loads ``--per-day`` finished tasks (``generate_series``: created and completed
that day, ``--events`` event rows each, one of them a log line, and a published outbox row) into the
embedded PostgreSQL, then runs the reaper's own purge (:func:`tasklift.tasks.retention.purge_expired`
on a :class:`WorkerRuntime`, called until it has nothing left) with ``--retention`` days. The
simulated day ``d`` of ``N`` lies ``N - d`` days in the past, so the purge on day ``d`` is called
with ``days = retention + (N - d)``: its cutoff is that day's "now" minus the retention.

Per day it prints the purge's seconds and rows, the total size of tasks / task_events / task_outbox,
each of their indexes, and their dead tuples (pg_stat_user_tables). Goal (issue 24 part 2): after
day R the sizes stay within ~20 %% of day R's and the purge time stays flat.

    .venv/bin/python local/bench/retention_month.py                     # 30 days x 100 k tasks
    .venv/bin/python local/bench/retention_month.py --per-day 20000     # a quick run
    .venv/bin/python local/bench/retention_month.py --per-day 1000000   # the full figure
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchkit as bk  # noqa: E402

TABLES = ("tasks", "task_events", "task_outbox")
CHUNK = 200_000  #: tasks per load transaction

#: Tasks :a .. :b of simulated day :ago (days before now); ids derived from the number.
LOAD_TASKS = """
INSERT INTO tasks (id, owner, task_type, queue, status, input, result, error, attempts, last_seq,
                   created_at, started_at, updated_at, completed_at)
SELECT md5('rtask' || i)::uuid, 'key:tenant-' || (i %% 100), 'bench_noop', 'tasklift.cpu',
       CASE WHEN i %% 50 = 0 THEN 'FAILED' ELSE 'SUCCESS' END, '{"n": 1}'::jsonb,
       CASE WHEN i %% 50 = 0 THEN NULL ELSE '{"ok": true}'::jsonb END,
       CASE WHEN i %% 50 = 0 THEN '{"type": "RuntimeError", "message": "boom"}'::jsonb END,
       1, %(events)s, c, c + interval '1 second', c + interval '2 seconds', c + interval '2 seconds'
FROM (SELECT i, now() - make_interval(days => %(ago)s) + make_interval(secs => (i * 7919) %% 86000) AS c
      FROM generate_series(%(a)s::bigint, %(b)s::bigint) AS i) AS g
"""
LOAD_EVENTS = """
INSERT INTO task_events (task_id, seq, kind, data, created_at)
SELECT md5('rtask' || i)::uuid, s,
       CASE WHEN s <= 2 OR s = %(events)s THEN 'status' WHEN s = %(events)s - 1 THEN 'log' ELSE 'progress' END,
       CASE WHEN s = %(events)s - 1 THEN '{"level": "INFO", "message": "a line of the task log"}'::jsonb
            ELSE '{"status": "RUNNING", "progress": {"current": 1, "total": 10}}'::jsonb END,
       now() - make_interval(days => %(ago)s) + make_interval(secs => (i * 7919) %% 86000)
FROM generate_series(%(a)s::bigint, %(b)s::bigint) AS i, generate_series(1, %(events)s) AS s
"""
LOAD_OUTBOX = """
INSERT INTO task_outbox (task_id, queue, available_at, published_at, created_at)
SELECT md5('rtask' || i)::uuid, 'tasklift.cpu', c, c, c
FROM (SELECT i, now() - make_interval(days => %(ago)s) + make_interval(secs => (i * 7919) %% 86000) AS c
      FROM generate_series(%(a)s::bigint, %(b)s::bigint) AS i) AS g
"""
SIZES = """
SELECT c.relname, pg_total_relation_size(c.oid), s.n_dead_tup, s.n_live_tup,
       coalesce(s.last_autovacuum::text, '-')
FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.relname = ANY(%s)
"""
INDEX_SIZES = """
SELECT i.tablename, i.indexname, pg_relation_size(quote_ident(i.indexname)::regclass)
FROM pg_indexes i WHERE i.tablename = ANY(%s) ORDER BY i.tablename, i.indexname
"""


def load_day(url: str, start: int, count: int, ago: int, events: int) -> float:
    import psycopg

    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # no FK trigger per event row
        conn.execute("SET synchronous_commit = off")
        for a in range(start, start + count, CHUNK):
            b = min(a + CHUNK, start + count) - 1
            with conn.transaction():
                params = {"a": a, "b": b, "ago": ago, "events": events}
                conn.execute(LOAD_TASKS, params)
                conn.execute(LOAD_EVENTS, params)
                conn.execute(LOAD_OUTBOX, params)
    return time.perf_counter() - t0


def measure(url: str) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        tables = {r[0]: {"total_mib": round(r[1] / 2**20, 1), "dead": r[2], "live": r[3], "autovacuum": r[4]}
                  for r in conn.execute(SIZES, (list(TABLES),))}  # fmt: skip
        for table, index, size in conn.execute(INDEX_SIZES, (list(TABLES),)):
            tables[table].setdefault("indexes_mib", {})[index] = round(size / 2**20, 1)
    return tables


def settle(url: str, timeout: float) -> float:
    """Let autovacuum do what a day of real time gives it: wait until no table is over its autovacuum
    threshold (dead > 50 + 0.2 x live, PostgreSQL's defaults); returns the seconds waited."""
    import psycopg

    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        while time.perf_counter() - t0 < timeout:
            over = [r for r in conn.execute(SIZES, (list(TABLES),)) if r[2] > 50 + 0.2 * r[3]]
            if not over:
                break
            time.sleep(0.5)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30, help="simulated days")
    parser.add_argument("--per-day", type=int, default=100_000, help="finished tasks loaded per day")
    parser.add_argument("--events", type=int, default=10, help="event rows per task (one is a log line)")
    parser.add_argument("--retention", type=int, default=7, help="retention_days")
    parser.add_argument("--no-autovacuum-wait", action="store_true",
                        help="do not give autovacuum its day between simulated days (shows the bloat)")  # fmt: skip
    args = parser.parse_args()
    bk.install_signal_handlers()
    logging.getLogger("tasklift").setLevel(logging.ERROR)  # the purge's per-batch lines
    results: dict[str, Any] = {"machine": bk.machine_info(), "args": vars(args), "days": []}
    with bk.Stack(extra_env={"TASKLIFT_RETENTION_DAYS": str(args.retention)}) as stack:
        os.environ.update(stack.env)
        sys.path.insert(0, str(bk.REPO / "shared"))
        from tasklift.queue.runtime import WorkerRuntime
        from tasklift.settings import get_settings
        from tasklift.tasks import retention

        url = stack.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
        rt = WorkerRuntime.open(get_settings())
        if not args.no_autovacuum_wait:  # the bench's own server: a day passes in seconds here
            import psycopg

            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("ALTER SYSTEM SET autovacuum_naptime = '1s'")
                conn.execute("SELECT pg_reload_conf()")
        try:
            print(f"{'day':>4} {'load s':>7} {'purge s':>8} {'purged':>8} {'av s':>6}  "
                  + "  ".join(f"{t + ' MiB':>16} {'dead':>8}" for t in TABLES))  # fmt: skip
            for day in range(1, args.days + 1):
                ago = args.days - day
                loaded = load_day(url, (day - 1) * args.per_day, args.per_day, ago, args.events)
                t0, purged = time.perf_counter(), 0
                while n := retention.purge_expired(rt.engine, rt.blobs, days=args.retention + ago):
                    purged += n
                seconds = time.perf_counter() - t0
                dead = {t: v["dead"] for t, v in measure(url).items()}
                waited = 0.0 if args.no_autovacuum_wait else settle(url, 60)
                tables = measure(url)
                row = {"day": day, "load_s": round(loaded, 2), "purge_s": round(seconds, 2), "purged": purged,
                       "dead_after_purge": dead, "autovacuum_wait_s": round(waited, 1), "tables": tables}  # fmt: skip
                results["days"].append(row)
                cells = "  ".join(f"{tables[t]['total_mib']:>16} {tables[t]['dead']:>8}" for t in TABLES)
                print(f"{day:>4} {loaded:>7.1f} {seconds:>8.2f} {purged:>8} {waited:>6.1f}  {cells}", flush=True)
        finally:
            rt.close()
        shown = sorted({min(d, args.days) for d in (args.retention, 2 * args.retention, args.days)})
        for day in (results["days"][d - 1] for d in shown):
            print(f"\nindexes on day {day['day']}:")
            for table in TABLES:
                for index, mib in day["tables"][table].get("indexes_mib", {}).items():
                    print(f"  {table:<12} {index:<45} {mib:>8} MiB")
    bk.save_results("retention_month", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
