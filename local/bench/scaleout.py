#!/usr/bin/env python
"""Scale-out on one machine: submit and drain throughput with N API processes x M worker children,
straight to PostgreSQL and through PgBouncer (transaction mode).

- **Submit**: ``tasklift api --workers N`` (N uvicorn processes on one port, the kernel spreading
  connections), ``wrk`` POSTing ``bench_noop`` for ``--seconds`` with no worker running (the tasks
  stay queued): 202s per second, and the non-2xx count (must be 0).
- **Drain**: with N API processes and ``tasklift worker --concurrency M`` (and the reaper),
  ``--tasks`` zero-work tasks submitted over 32 keep-alive connections; tasks/s from the first
  submit to the last ``completed_at`` (local/bench/drain.py's ``run_tasklift``), every task SUCCESS.
- **Through PgBouncer**: the same grid with every tasklift process connected to PostgreSQL through
  Debian's PgBouncer in transaction mode (tests/support/pgbouncer.py: four server connections
  per database) and ``TASKLIFT_DB_STATEMENT_CACHE_SIZE=0``, against the direct runs with the
  statement cache on (the default).

PostgreSQL runs with fsync on. On this 2-core machine every process shares the same two cores, so
the grid shows where adding processes stops paying, not how a cluster scales.

    .venv/bin/python local/bench/scaleout.py [--apis 1,2,4] [--children 1,2,4,8] [--tasks 2000]
    .venv/bin/python local/bench/scaleout.py --apis 1,2 --children 2 --tasks 300 --seconds 3  # smoke
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchkit as bk  # noqa: E402
import drain  # noqa: E402

sys.path.insert(0, str(bk.REPO))
from tests.support.pgbouncer import PgBouncer  # noqa: E402


def submit_rate(port: int, args: argparse.Namespace) -> dict[str, Any]:
    body = json.dumps({"task_type": "bench_noop"}, separators=(",", ":"))
    lua = f'wrk.method = "POST"\nwrk.body = \'{body}\'\nwrk.headers["Content-Type"] = "application/json"\n'
    url = f"http://127.0.0.1:{port}/tasks"
    bk.run_wrk(url, 1, args.connections, 1, lua)  # warm-up
    stats = bk.run_wrk(url, args.seconds, args.connections, 1, lua)
    return {"rps": round(stats["rps"], 1), "non_2xx": stats["non_2xx_3xx"], "errors": stats["socket_errors"],
            "p99_ms": round(stats["p99_us"] / 1000, 2)}  # fmt: skip


def clear_queued(stack: bk.Stack) -> None:
    """Drop what a submit run left queued (Redis lists, PENDING tasks and their intents), so a drain
    starts on an empty queue."""
    import psycopg
    import redis

    redis.Redis.from_url(stack.redis_url).delete("tasklift.cpu", "tasklift.io")
    url = stack.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM task_outbox")
        conn.execute("DELETE FROM tasks WHERE status = 'PENDING'")


def grid(stack: bk.Stack, env: dict[str, str], db_url: str, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"submit": {}, "drain": {}}
    for apis in args.api_list:
        port = bk.free_port()
        api = stack.tasklift("api", "api", "--port", str(port), "--workers", str(apis), env=env)
        bk.wait_http(f"http://127.0.0.1:{port}/healthz", api)
        time.sleep(1.0 if apis > 1 else 0.2)  # every uvicorn child up
        out["submit"][apis] = submit_rate(port, args)
        bk.log(f"  {apis} API process(es): submit {out['submit'][apis]['rps']:.0f}/s")
        # Drop what the submit run queued, so the drain's worker starts on an empty queue.
        clear_queued(stack)
        for children in args.child_list:
            worker = stack.worker(children, env=env)
            reaper = stack.tasklift("reaper", "reaper", env=env)
            time.sleep(2.0)
            result = drain.run_tasklift(args.tasks, port, 32, db_url, args.timeout)
            out["drain"][f"{apis}x{children}"] = {k: round(v, 2) for k, v in result.items() if k != "series"}
            bk.log(f"  {apis} API x {children} children: drain {result['tasks_per_s']:.0f} tasks/s")
            stack.stop(reaper)
            stack.stop(worker)
        stack.stop(api)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apis", default="1,2,4", help="API process counts")
    parser.add_argument("--children", default="1,2,4,8", help="worker child counts")
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per drain")
    parser.add_argument("--seconds", type=float, default=10, help="wrk duration per submit figure")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--no-pgbouncer", action="store_true")
    args = parser.parse_args()
    args.api_list = [int(x) for x in args.apis.split(",")]
    args.child_list = [int(x) for x in args.children.split(",")]
    bk.install_signal_handlers()
    results: dict[str, Any] = {"machine": bk.machine_info(), "args": dict(vars(args))}
    with bk.Stack() as stack:
        bk.log("direct to PostgreSQL")
        results["direct"] = grid(stack, {}, stack.database_url, args)
        if not args.no_pgbouncer:
            assert stack.pg.port is not None
            bouncer = PgBouncer(stack.pg.port, pool_size=8).start()
            try:
                env = {
                    "TASKLIFT_DATABASE_URL": bouncer.url(stack.database_url),
                    "TASKLIFT_DB_STATEMENT_CACHE_SIZE": "0",
                }
                bk.log("through PgBouncer (transaction mode)")
                results["pgbouncer"] = grid(stack, env, stack.database_url, args)
            finally:
                bouncer.stop()
    print("\nSubmit (POST /tasks, 202/s)")
    for route in ("direct", "pgbouncer"):
        if route in results:
            cells = "  ".join(f"{n} API: {v['rps']:>7.0f}" + (f" ({v['non_2xx']} non-2xx)" if v["non_2xx"] else "")
                              for n, v in results[route]["submit"].items())  # fmt: skip
            print(f"  {route:<10} {cells}")
    print("\nDrain (tasks/s, first submit to last completion; API processes x worker children)")
    for route in ("direct", "pgbouncer"):
        if route in results:
            cells = "  ".join(f"{k}: {v['tasks_per_s']:>6.0f}" for k, v in results[route]["drain"].items())
            print(f"  {route:<10} {cells}")
    bk.save_results("scaleout", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
