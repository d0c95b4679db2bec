#!/usr/bin/env python
"""Waits and signals: what a suspension costs, how soon a signal resumes a task, how soon a timeout wakes it.

(a) **Suspend**: ``--tasks`` tasks each run one step and ``ctx.wait_for("go")``; from the database's
    own event times: the RUNNING event (the claim) → the WAITING event (the lease released), per task.
(b) **Signal → done**: each waiting task gets ``POST /tasks/{id}/signals/go``, one at a time; the
    client's clock from before the POST to the task's SUCCESS (long poll): the API's transaction,
    the publish, a worker's claim, the re-run replaying one step and the wait, one more step, the outcome.
(c) **Timeout → PENDING**: ``--tasks`` tasks wait with a 1 s timeout; from the event times: the
    WAITING event + 1 s → the PENDING event the dispatcher's wake-up wrote, against
    ``TASKLIFT_DISPATCH_INTERVAL_SECONDS`` (the default 1 s here).

Worker concurrency 2, the API and the reaper running; all on this machine's cores.

    .venv/bin/python local/bench/waits.py [--tasks 50]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchkit as bk  # noqa: E402

ENV = {"TASKLIFT_TASK_MODULES": json.dumps(["bench_tasks", "bench_wait_tasks"])}

#: The seconds between the first event with status ``:a`` and the first later one with ``:b``.
BETWEEN_SQL = sa.text(
    """
SELECT extract(epoch FROM b.created_at - a.created_at) FROM task_events a, LATERAL (
    SELECT created_at FROM task_events e
    WHERE e.task_id = a.task_id AND e.seq > a.seq AND e.kind = 'status' AND e.data ->> 'status' = :b
    ORDER BY seq LIMIT 1) b
WHERE a.task_id = CAST(:t AS uuid) AND a.kind = 'status' AND a.data ->> 'status' = :a
ORDER BY a.seq LIMIT 1"""
)


def submit(http: httpx.Client, **fields: Any) -> str:
    reply = http.post("/tasks", json={"task_type": "bench_wait", **fields})
    reply.raise_for_status()
    return str(reply.json()["task_id"])


def wait_status(http: httpx.Client, task_id: str, wanted: set[str], timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    params: dict[str, Any] = {}  # first as it is now: a long poll answers at the task's NEXT change
    while time.monotonic() < deadline:
        body: dict[str, Any] = http.get(f"/tasks/{task_id}", params=params).json()
        if body["status"] in wanted:
            return body
        params = {"wait": 5}
    raise TimeoutError(task_id)


def between(db: sa.Engine, task_id: str, a: str, b: str) -> float:
    with db.connect() as conn:
        return float(conn.execute(BETWEEN_SQL, {"t": task_id, "a": a, "b": b}).scalar_one())


def summary(values: list[float]) -> dict[str, float]:
    ms = [1000 * v for v in values]
    return {"n": len(ms), "p50_ms": bk.median(ms), "p95_ms": bk.percentile(ms, 95), "max_ms": max(ms)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=50)
    args = parser.parse_args()
    bk.install_signal_handlers()
    results: dict[str, Any] = {"machine": bk.machine_info(), "settings": ENV, "tasks": args.tasks}
    try:
        with bk.Stack(extra_env=ENV) as stack:
            port = bk.free_port()
            stack.api(port)
            stack.reaper()
            stack.worker(2)
            db = sa.create_engine(stack.database_url, poolclass=sa.pool.NullPool)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                bk.log(f"(a) {args.tasks} tasks suspend")
                ids = [submit(http) for _ in range(args.tasks)]
                for task_id in ids:
                    wait_status(http, task_id, {"WAITING"})
                results["suspend"] = summary([between(db, t, "RUNNING", "WAITING") for t in ids])
                bk.log("(b) signal -> SUCCESS, one task at a time")
                resumed = []
                for task_id in ids:
                    started = time.perf_counter()
                    reply = http.post(f"/tasks/{task_id}/signals/go", json={"ok": True})
                    assert reply.json()["delivered"] == "resumed", reply.text
                    done = wait_status(http, task_id, {"SUCCESS", "FAILED"})
                    resumed.append(time.perf_counter() - started)
                    assert done["status"] == "SUCCESS" and done["result"] == {"payload": {"ok": True}}, done
                results["signal_to_success"] = summary(resumed)
                bk.log(f"(c) {args.tasks} tasks time out after 1 s")
                timed = [submit(http, timeout=1) for _ in range(args.tasks)]
                for task_id in timed:
                    wait_status(http, task_id, {"SUCCESS", "FAILED"})
                results["timeout_wake_late"] = summary([between(db, t, "WAITING", "PENDING") - 1 for t in timed])
            db.dispose()
    except KeyboardInterrupt:
        bk.log("interrupted; everything was stopped")
        return 130
    for part in ("suspend", "signal_to_success", "timeout_wake_late"):
        print(f"{part}: " + json.dumps(results[part]))
    s, r, w = results["suspend"], results["signal_to_success"], results["timeout_wake_late"]
    print(f"claim -> WAITING (one step, then the wait): p50 {s['p50_ms']:.1f} ms, p95 {s['p95_ms']:.1f} ms")
    print(f"signal -> SUCCESS (re-run on a worker): p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms")
    print(f"timeout -> PENDING, after the deadline: p50 {w['p50_ms']:.0f} ms, max {w['max_ms']:.0f} ms"
          " (dispatch interval 1 s)")  # fmt: skip
    bk.save_results("waits", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
