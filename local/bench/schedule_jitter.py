#!/usr/bin/env python
"""Schedule firing jitter (issue 21 part 5): how late a schedule's task is, against its nominal time.

Embedded PostgreSQL + Redis (benchkit.Stack), a real API, reaper and worker. ``--k`` schedules of
``interval_seconds: 1`` are created, then left firing for ``--seconds`` (60); every firing's row in
``schedule_runs`` holds its nominal time (``fire_at``) and its task. Two figures, on the database's
clock, over the firings after the first ``--warmup`` seconds:

- **fire jitter**: task ``created_at − fire_at`` (the firer: the reaper's wake-up at the next fire
  time, the due statement, the INSERT);
- **start jitter**: task ``started_at − fire_at`` (plus the dispatch and a worker's claim).

Also counts the firings against the nominal ones (a missed or doubled firing shows there).

    .venv/bin/python local/bench/schedule_jitter.py [--k 20] [--seconds 60] [--interval 1.0]
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


def figures(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(bk.median(values) * 1000, 1),
        "p99_ms": round(bk.percentile(values, 99) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=20, help="schedules")
    parser.add_argument("--seconds", type=float, default=60, help="how long they fire")
    parser.add_argument("--interval", type=float, default=1.0, help="their interval_seconds")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of firings left out")
    parser.add_argument("--concurrency", type=int, default=2, help="worker children")
    args = parser.parse_args()
    bk.install_signal_handlers()
    env = {"TASKLIFT_MAX_ACTIVE_TASKS": "1000000"}
    results: dict[str, Any] = {"benchmark": "schedule_jitter", "machine": bk.machine_info(), "settings": vars(args)}
    with bk.Stack(extra_env=env) as stack:
        port = bk.free_port()
        stack.api(port)
        stack.reaper()
        stack.worker(args.concurrency)
        engine = sa.create_engine(stack.database_url, poolclass=sa.pool.NullPool)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            for n in range(args.k):
                body = {"name": f"jitter-{n}", "task_type": "bench_noop", "interval_seconds": args.interval}
                http.post("/schedules", json=body).raise_for_status()
            bk.log(f"{args.k} schedules every {args.interval} s; firing for {args.seconds} s")
            time.sleep(args.seconds)
            for item in http.get("/schedules", params={"limit": 100}).json()["items"]:
                http.post(f"/schedules/{item['schedule_id']}:pause").raise_for_status()
        time.sleep(3)  # the last firings start
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT r.schedule_id, extract(epoch FROM t.created_at - r.fire_at),"
                    " extract(epoch FROM t.started_at - r.fire_at),"
                    " extract(epoch FROM r.fire_at - s.created_at)"
                    " FROM schedule_runs r JOIN tasks t ON t.id = r.task_id JOIN schedules s ON s.id = r.schedule_id"
                )
            ).all()
            doubled = conn.execute(
                sa.text("SELECT count(*) - count(DISTINCT (schedule_id, fire_at)) FROM schedule_runs")
            ).scalar_one()
        stack.check_alive()
    kept = [row for row in rows if float(row[3]) >= args.warmup]
    fire = [float(row[1]) for row in kept]
    start = [float(row[2]) for row in kept if row[2] is not None]
    results["fire_jitter"] = figures(fire)
    results["start_jitter"] = figures(start)
    results["firings"] = len(rows)
    results["nominal_firings"] = int(args.k * args.seconds / args.interval)
    results["doubled"] = int(doubled)
    print(f"\nschedule jitter: {args.k} schedules every {args.interval} s for {args.seconds} s")
    print(f"{'':<36}{'n':>7}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for name in ("fire_jitter", "start_jitter"):
        f = results[name]
        label = "created_at - fire time" if name == "fire_jitter" else "started_at - fire time"
        print(f"{label:<36}{f['n']:>7}{f['p50_ms']:>10}{f['p99_ms']:>10}{f['max_ms']:>10}")
    print(f"firings {results['firings']} (nominal ~{results['nominal_firings']}), doubled {results['doubled']}")
    print(f"saved {bk.save_results('schedule_jitter', results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
