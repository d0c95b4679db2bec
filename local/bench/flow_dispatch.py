#!/usr/bin/env python
"""Flow control (issue 21): the dispatcher's round time with many scheduled tasks waiting.

Embedded PostgreSQL + Redis (benchkit.Stack), migrated. ``--waiting`` tasks (100,000) are written
straight into ``tasks`` + ``task_outbox`` as a delayed submit leaves them (PENDING, unpublished,
``scheduled_for`` an hour ahead, some with priorities and deadlines), then, in this process:

- ``idle round``: :meth:`tasklift.queue.broker.Broker.dispatch_due` (the admission statement)
  and the expiry sweep with nothing due, ``--rounds`` times: the price of a dispatcher round
  while the waiting tasks sit in PostgreSQL;
- ``busy round``: ``--due`` (500) of them made due, then one ``dispatch_due`` that publishes them
  all (one batch: the statement, 500 LPUSHes, the marks), ``--rounds`` times;
- the same idle round with no task waiting, for comparison;
- the window admission (``TASKLIFT_ADMISSION_WINDOW``) idle round, the same way.

Prints the median and p95 of each, and the admission statement's plan.

    .venv/bin/python local/bench/flow_dispatch.py [--waiting 100000] [--due 500] [--rounds 20]
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
    INSERT INTO tasks (id, task_type, queue, status, input, last_seq, priority, scheduled_for, expires_at)
    SELECT id, 'bench_noop', :queue, 'PENDING', '{}'::jsonb, 1, n % 10, now() + interval '1 hour',
           CASE WHEN n % 4 = 0 THEN now() + interval '2 hours' END
    FROM ids RETURNING id, scheduled_for
), events AS (
    INSERT INTO task_events (task_id, seq, kind, data)
    SELECT id, 1, 'status', '{"status": "PENDING"}'::jsonb FROM made
)
INSERT INTO task_outbox (task_id, queue, available_at) SELECT id, :queue, scheduled_for FROM made
"""
MAKE_DUE = """
WITH chosen AS (
    SELECT task_id FROM task_outbox WHERE published_at IS NULL AND available_at > now() LIMIT :n
), t AS (
    UPDATE tasks SET scheduled_for = now() - interval '1 second' WHERE id IN (SELECT task_id FROM chosen)
)
UPDATE task_outbox SET available_at = now() - interval '1 second' WHERE task_id IN (SELECT task_id FROM chosen)
"""

#: The dispatcher's statement before issue 21 (by available_at, no flow rules), for comparison.
BEFORE_SQL = """
SELECT o.task_id, o.intent_seq, o.queue, t.task_type, t.traceparent
FROM task_outbox AS o JOIN tasks AS t ON t.id = o.task_id
WHERE o.published_at IS NULL AND o.available_at <= now()
  AND NOT EXISTS (SELECT FROM paused_queues AS p WHERE p.queue = o.queue)
ORDER BY o.available_at LIMIT :limit FOR UPDATE OF o SKIP LOCKED"""


def timed(fn, rounds: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def show(name: str, values: list[float]) -> None:
    print(f"  {name:<44} median {bk.median(values):8.2f} ms   p95 {bk.percentile(values, 95):8.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiting", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with bk.Stack() as stack:
        os.environ.update(stack.env)
        import redis
        from sqlalchemy import text

        from tasklift.queue.broker import Broker
        from tasklift.settings import get_settings
        from tasklift.store import flow
        from tasklift.store.db import make_engine

        settings = get_settings()
        engine = make_engine(stack.database_url, 4)
        broker = Broker(stack.redis_url)
        queue = settings.cpu_queue
        idle = lambda: broker.dispatch_due(engine)  # noqa: E731
        windowed = lambda: broker.dispatch_due(engine, window=8)  # noqa: E731

        def expire() -> None:
            with engine.begin() as conn:
                flow.expire_due(conn)

        show("idle dispatch round, nothing waiting", timed(idle, args.rounds))
        bk.log(f"seeding {args.waiting} scheduled tasks")
        with engine.begin() as conn:
            conn.execute(text(SEED), {"n": args.waiting, "queue": queue})
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE tasks")
            conn.exec_driver_sql("ANALYZE task_outbox")
        print(f"{args.waiting} scheduled tasks waiting (due in an hour):")
        show("idle dispatch round (admission statement)", timed(idle, args.rounds))
        show("idle dispatch round, window 8", timed(windowed, args.rounds))
        show("expiry sweep, nothing due", timed(expire, args.rounds))
        with engine.begin() as conn:
            conn.execute(text(MAKE_DUE), {"n": args.due})

        def statement(sql: str, window: int = 0, rates: tuple[flow.RateRule, ...] = ()):  # type: ignore[no-untyped-def]
            def run() -> None:
                with engine.connect() as conn:  # rolled back: the same rows every time
                    params = {**flow.admit_params(args.due, window, rates), **flow.weight_params(None)}  # no weights
                    rows = conn.execute(text(sql), params).all()
                    assert len(rows) == args.due, len(rows)
                    conn.rollback()

            return run

        # Rate limits in force: one on another type (nothing of it waits), one on these tasks that
        # every one of them fits in (the bucket's ranking and tokens are paid for all 500).
        other = (flow.RateRule("report", 10, 1.0),)
        mine = (flow.RateRule("bench_noop", 1_000_000, 1.0),)
        print(f"the statement alone, {args.due} due among them:")
        show("admission (priority order)", timed(statement(flow.ADMIT_SQL), args.rounds))
        show("  with a rate limit on another type", timed(statement(flow.ADMIT_SQL, 0, other), args.rounds))
        show("  with a rate limit on these tasks", timed(statement(flow.ADMIT_SQL, 0, mine), args.rounds))
        show(f"admission, window {args.due}", timed(statement(flow.ADMIT_WINDOW_SQL, args.due), args.rounds))
        show("  with a rate limit on these tasks", timed(statement(flow.ADMIT_WINDOW_SQL, args.due, mine), args.rounds))
        show("before issue 21 (available_at order)", timed(statement(BEFORE_SQL), args.rounds))
        sent = broker.dispatch_due(engine, limit=args.due)
        assert sent == args.due
        busy = []
        client = redis.Redis.from_url(stack.redis_url)
        for _ in range(args.rounds):
            with engine.begin() as conn:
                conn.execute(text(MAKE_DUE), {"n": args.due})
            start = time.perf_counter()
            sent = broker.dispatch_due(engine, limit=args.due)
            busy.append((time.perf_counter() - start) * 1000)
            assert sent == args.due, sent
        show(f"busy round: admit + publish {args.due}", busy)
        print(f"  per task published: {bk.median(busy) / args.due * 1000:.1f} µs (median round / {args.due})")
        print(f"  messages in Redis: {client.llen(queue)}")
        with engine.connect() as conn:
            plan = conn.execute(text("EXPLAIN " + flow.ADMIT_SQL), flow.admit_params(500)).scalars()
            print("admission plan:\n    " + "\n    ".join(plan))
        engine.dispose()


if __name__ == "__main__":
    main()
