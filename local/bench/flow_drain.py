#!/usr/bin/env python
"""Flow control's price on the drain (issue 21 part 8): N zero-work tasks, all rules off vs all on.

Each run is a fresh embedded PostgreSQL + Redis (benchkit.Stack) with a real API, reaper and one
worker of ``--concurrency`` children. ``--tasks`` tasks are submitted through ``POST /tasks:batch``
(500 a batch, ``--clients`` threads) and the drain is timed from the first task's start to the
last SUCCESS (the database's ``started_at`` / ``completed_at``): the per-task cost. (With the rules
on, the first task also waits for the dispatcher's next round, up to
``TASKLIFT_DISPATCH_INTERVAL_SECONDS``: a fixed latency, printed apart as ``first start``.)

- **off**: ``bench_noop``, no admission window: every submit is published at once (the default);
- **on**: ``bench_ruled`` (a ``concurrency_limit`` of 1,000 per key and a ``rate_limit`` of
  100,000/s, neither binding), an admission window (``--window``), and every submit with a
  priority (0–9), a ``ttl_seconds``, a ``concurrency_key`` (one of 10) and a ``fairness_key``
  (one of 10): every task is admitted by the dispatcher's one statement, rate buckets spent.

Off and on alternate ``--rounds`` times. Prints each run's tasks/s, the medians and on/off's
per-task overhead (the issue's aim: ≤ 10 %).

    .venv/bin/python local/bench/flow_drain.py [--tasks 2000] [--rounds 2] [--window 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchkit as bk  # noqa: E402

BATCH = 500


def items(n: int, ruled: bool, offset: int) -> list[dict[str, Any]]:
    if not ruled:
        return [{"task": {"task_type": "bench_noop"}}] * n
    return [
        {
            "task": {
                "task_type": "bench_ruled",
                "priority": (offset + i) % 10,
                "ttl_seconds": 3600,
                "concurrency_key": f"customer-{(offset + i) % 10}",
                "fairness_key": f"tenant-{(offset + i) // 7 % 10}",
            }
        }
        for i in range(n)
    ]


def one_run(args: argparse.Namespace, ruled: bool) -> float:
    """Tasks per second of one drain."""
    env = {"TASKLIFT_MAX_ACTIVE_TASKS": "1000000", "TASKLIFT_ADMISSION_WINDOW": str(args.window if ruled else 0)}
    with bk.Stack(extra_env=env) as stack:
        port = bk.free_port()
        stack.api(port)
        stack.reaper()
        stack.worker(args.concurrency)  # ready once the warm-up tasks ran
        engine = sa.create_engine(stack.database_url, poolclass=sa.pool.NullPool)
        with engine.begin() as conn:
            before = conn.execute(sa.text("SELECT coalesce(max(completed_at), now()) FROM tasks")).scalar_one()
        batches = [items(min(BATCH, args.tasks - at), ruled, at) for at in range(0, args.tasks, BATCH)]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:

            def post(batch: list[dict[str, Any]]) -> None:
                resp = http.post("/tasks:batch", json={"items": batch})
                resp.raise_for_status()
                assert resp.json()["accepted"] == len(batch), resp.text

            start = time.monotonic()
            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(post, batches))
            sql = sa.text(
                "SELECT count(*) FILTER (WHERE status = 'SUCCESS'), count(*) FILTER (WHERE status IN"
                " ('PENDING', 'RUNNING')), extract(epoch FROM max(completed_at) - min(started_at)),"
                " extract(epoch FROM min(started_at) - min(created_at))"
                " FROM tasks WHERE created_at > :before AND task_type IN ('bench_noop', 'bench_ruled')"
            )
            while True:
                with engine.connect() as conn:
                    done, left, span, first = conn.execute(sql, {"before": before}).one()
                if done >= args.tasks and not left:
                    break
                if time.monotonic() - start > args.timeout:
                    raise RuntimeError(f"{done} of {args.tasks} done after {args.timeout} s")
                time.sleep(0.2)
        stack.check_alive()
        engine.dispose()
    rate = args.tasks / float(span)
    bk.log(
        f"rules {'on ' if ruled else 'off'}: {args.tasks} tasks drained in {float(span):.2f} s, {rate:.0f}/s"
        f" (first start {float(first) * 1000:.0f} ms after the first submit)"
    )
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2, help="alternating off/on runs each")
    parser.add_argument("--window", type=int, default=1000, help="TASKLIFT_ADMISSION_WINDOW with the rules on")
    parser.add_argument("--concurrency", type=int, default=2, help="worker children")
    parser.add_argument("--clients", type=int, default=2, help="threads submitting batches")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    bk.install_signal_handlers()
    runs: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.rounds):
        runs["off"].append(one_run(args, ruled=False))
        runs["on"].append(one_run(args, ruled=True))
    off, on = bk.median(runs["off"]), bk.median(runs["on"])
    overhead = off / on - 1  # extra time per task with the rules on
    print(f"\nflow drain: {args.tasks} zero-work tasks, {args.concurrency} worker children, window {args.window}")
    print(f"{'rules':<8}{'runs (tasks/s)':<40}{'median':>10}")
    for name, values in runs.items():
        print(f"{name:<8}{', '.join(f'{v:.0f}' for v in values):<40}{bk.median(values):>10.0f}")
    print(f"per-task time with every rule on: {overhead * 100:+.1f} % (aim <= +10 %)")
    results = {"benchmark": "flow_drain", "machine": bk.machine_info(), "settings": vars(args), "runs": runs}
    results["overhead"] = round(overhead, 4)
    print(f"saved {bk.save_results('flow_drain', results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
