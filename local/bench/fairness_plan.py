#!/usr/bin/env python
"""The fair-share window statement on a big backlog (issue 21 part 2): its time and its plan.

Embedded PostgreSQL (benchkit.Stack). Seeds ``--a`` (10,000) due intents of tenant A and ``--b`` (10)
of tenant B in one queue, then times :data:`tasklift.store.flow.ADMIT_WINDOW_SQL` (``--window`` 16,
limit 500, rolled back each time: the same rows every run) ``--rounds`` times and prints the median,
the p95 and one ``EXPLAIN (ANALYZE, BUFFERS)``. ``--scheduled N`` adds N intents due in an hour.

    .venv/bin/python local/bench/fairness_plan.py [--a 10000] [--b 10] [--window 16] [--rounds 40]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchkit as bk  # noqa: E402

SEED = """
WITH ids AS (SELECT gen_random_uuid() AS id, n FROM generate_series(1, :n) AS n),
made AS (
    INSERT INTO tasks (id, owner, task_type, queue, status, input, last_seq, priority, created_at, scheduled_for)
    SELECT id, :owner, 'bench_noop', :queue, 'PENDING', '{}'::jsonb, 1, 0,
        now() - interval '1 minute' + n * interval '1 ms', now() + make_interval(secs => :ahead)
    FROM ids RETURNING id, scheduled_for
), events AS (
    INSERT INTO task_events (task_id, seq, kind, data) SELECT id, 1, 'status', '{"status": "PENDING"}'::jsonb FROM made
)
INSERT INTO task_outbox (task_id, queue, available_at) SELECT id, :queue, scheduled_for FROM made
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=int, default=10_000)
    parser.add_argument("--b", type=int, default=10)
    parser.add_argument("--scheduled", type=int, default=0)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    with bk.Stack() as stack:
        os.environ.update(stack.env)
        from sqlalchemy import text

        from tasklift.settings import get_settings
        from tasklift.store import flow
        from tasklift.store.db import make_engine

        engine = make_engine(stack.database_url, 2)
        queue = get_settings().cpu_queue
        with engine.begin() as conn:
            for owner, n, ahead in (
                ("tenant-a", args.a, -1),
                ("tenant-b", args.b, -1),
                ("later", args.scheduled, 3600),
            ):
                if n:
                    conn.execute(text(SEED), {"n": n, "owner": owner, "queue": queue, "ahead": ahead})
            conn.execute(text("ANALYZE"))
        sql = text(flow.ADMIT_WINDOW_SQL)
        params = {**flow.admit_params(500, args.window), **flow.weight_params(None)}  # no rate rules, no weights
        times = []
        with engine.connect() as conn:
            for i in range(args.rounds + 3):
                start = time.perf_counter()
                rows = conn.execute(sql, params).all()
                if i >= 3:  # the first three warm the caches and the plan
                    times.append((time.perf_counter() - start) * 1000)
                conn.rollback()
            plan = [
                line for (line,) in conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + flow.ADMIT_WINDOW_SQL), params)
            ]
            conn.rollback()
        print("\n".join(plan))
        print(
            f"\nwindow statement, {args.a} + {args.b} due ({args.scheduled} scheduled later), window {args.window}:"
            f" {len(rows)} rows, median {bk.median(times):.2f} ms, p95 {bk.percentile(times, 95):.2f} ms"
        )


if __name__ == "__main__":
    main()
