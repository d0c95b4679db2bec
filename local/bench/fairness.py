#!/usr/bin/env python
"""Fair shares (issue 21 part 2): a small tenant's wait behind a big tenant's backlog, vs idle.

Embedded PostgreSQL + Redis (benchkit.Stack), a real API, reaper and worker, an admission window
(``--window``, fair shares are decided by the window's admission statement: docs/flow-control.md).

1. idle: tenant B submits ``--b`` (10) zero-work tasks one by one on an empty system, ``--idle-rounds``
   times; B's wait is each task's ``started_at - created_at`` (the database's clock);
2. loaded: tenant A submits ``--a`` (10,000) zero-work tasks in batches of 1,000, then B submits
   its ``--b``; B's waits the same way, while A's backlog drains;
3. with ``--compare``, after A's backlog drained: the same, but B submits with A's fairness key
   (one principal: what B would wait without fair shares, behind the whole backlog).

Prints p50 / p99 / max of B's waits per phase and the loaded/idle p99 ratio (the issue's aim: ≤ 2).

    .venv/bin/python local/bench/fairness.py [--a 10000] [--b 10] [--window 16] [--concurrency 2] [--compare]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchkit as bk  # noqa: E402


def submit_b(http: httpx.Client, n: int, key: str) -> list[str]:
    ids = []
    for _ in range(n):
        resp = http.post("/tasks", json={"task_type": "bench_noop", "fairness_key": key})
        resp.raise_for_status()
        ids.append(resp.json()["task_id"])
    return ids


def submit_a(http: httpx.Client, n: int) -> None:
    item = {"task": {"task_type": "bench_noop", "fairness_key": "tenant-a"}}
    while n > 0:
        size = min(1000, n)
        resp = http.post("/tasks:batch", json={"items": [item] * size}, timeout=120)
        resp.raise_for_status()
        assert resp.json()["accepted"] == size, resp.text
        n -= size


def waits(engine: sa.Engine, ids: list[str], timeout: float) -> list[float]:
    """Seconds from submit to start of each of ``ids``, once all have finished."""
    deadline = time.monotonic() + timeout
    sql = sa.text(
        "SELECT extract(epoch FROM started_at - created_at) FROM tasks"
        " WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'SUCCESS'"
    )
    while True:
        with engine.connect() as conn:
            found = [float(v) for v in conn.execute(sql, {"ids": ids}).scalars()]
        if len(found) == len(ids):
            return found
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(found)} of {len(ids)} finished in {timeout} s")
        time.sleep(0.05)


def drained(engine: sa.Engine, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            left = conn.execute(sa.text("SELECT count(*) FROM tasks WHERE status IN ('PENDING', 'RUNNING')")).scalar()
        if not left:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{left} tasks still waiting after {timeout} s")
        time.sleep(0.5)


def figures(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(bk.median(values) * 1000, 1),
        "p99_ms": round(bk.percentile(values, 99) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=int, default=10_000, help="tenant A's backlog")
    parser.add_argument("--b", type=int, default=10, help="tenant B's tasks")
    parser.add_argument("--window", type=int, default=16, help="TASKLIFT_ADMISSION_WINDOW")
    parser.add_argument("--interval", type=float, default=0.05, help="TASKLIFT_DISPATCH_INTERVAL_SECONDS")
    parser.add_argument("--concurrency", type=int, default=2, help="worker children")
    parser.add_argument("--idle-rounds", type=int, default=3)
    parser.add_argument("--compare", action="store_true", help="also B behind A's backlog as one principal")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    bk.install_signal_handlers()
    env = {
        "TASKLIFT_ADMISSION_WINDOW": str(args.window),
        "TASKLIFT_DISPATCH_INTERVAL_SECONDS": str(args.interval),
        "TASKLIFT_MAX_ACTIVE_TASKS": "1000000",
    }
    results: dict[str, Any] = {"benchmark": "fairness", "machine": bk.machine_info(), "settings": vars(args)}
    with bk.Stack(extra_env=env) as stack:
        port = bk.free_port()
        stack.api(port)
        stack.reaper()
        stack.worker(args.concurrency)  # ready once the warm-up tasks ran
        engine = sa.create_engine(stack.database_url, poolclass=sa.pool.NullPool)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            waits(engine, submit_b(http, args.b, "warm-up"), args.timeout)
            idle: list[float] = []
            for _ in range(args.idle_rounds):
                idle += waits(engine, submit_b(http, args.b, "tenant-b"), args.timeout)
            results["idle"] = figures(idle)
            bk.log(f"idle: B's waits {results['idle']}")
            started = time.monotonic()
            submit_a(http, args.a)
            bk.log(f"A's {args.a} submitted in {time.monotonic() - started:.1f} s")
            loaded = waits(engine, submit_b(http, args.b, "tenant-b"), args.timeout)
            results["loaded"] = figures(loaded)
            bk.log(f"behind A's backlog: B's waits {results['loaded']}")
            drained(engine, args.timeout)
            if args.compare:
                submit_a(http, args.a)
                same = waits(engine, submit_b(http, args.b, "tenant-a"), args.timeout)
                results["one_principal"] = figures(same)
                bk.log(f"B as A's principal (no fair share): B's waits {results['one_principal']}")
                drained(engine, args.timeout)
        stack.check_alive()
    ratio = results["loaded"]["p99_ms"] / max(results["idle"]["p99_ms"], 0.001)
    results["p99_ratio"] = round(ratio, 2)
    print(f"\nfairness: window {args.window}, {args.concurrency} worker children, A {args.a} then B {args.b}")
    print(f"{'phase':<34}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for name in ("idle", "loaded", "one_principal"):
        if name in results:
            f = results[name]
            print(f"{name:<34}{f['p50_ms']:>10}{f['p99_ms']:>10}{f['max_ms']:>10}")
    print(f"B's p99 wait behind the backlog / idle: {ratio:.2f}x (aim <= 2)")
    print(f"saved {bk.save_results('fairness', results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
