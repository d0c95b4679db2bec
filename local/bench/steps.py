#!/usr/bin/env python
"""Durable steps and output streams: step overhead, resume time after a kill, output chunks/s.

(a) **Step overhead**: one task runs ``--steps`` tiny steps (a function returning ``{"n": i}``)
    through ``ctx.step`` and, as the baseline, the same calls without it; each reports its loop's
    time, measured in the worker's pool process. Recording cost per step = (durable - plain) / steps
    (target <= 2 ms); beside it, the same calls each writing a ``ctx.log`` line (one fenced commit
    and its PUBLISH: the floor of a step's record on the machine at that moment). Then the durable
    task's first run fails at its end (a marker file), a retry replays every step from PostgreSQL:
    replay cost per step.
(b) **Resume after a kill**: a task of ``--steps`` steps sleeps in its middle step; the pool
    process running it is SIGKILLed there. Measured: kill → the first step recorded by the new
    attempt (resumed) and kill → SUCCESS, against lease + reaper interval
    (``TASKLIFT_LEASE_SECONDS=5``, ``TASKLIFT_REAPER_INTERVAL_SECONDS=1`` here).
(c) **Output**: one task emits ``--chunks`` short text chunks flat out: ``ctx.emit`` calls/s in the
    task, and chunks/s stored end to end (started → completed, the final flush included), with the
    rows it took; then 1,000 chunks/s for 5 s: rows written per second (coalescing).

Worker concurrency 2 (tasks run one at a time), the API and reaper running; all on this machine's cores.

    .venv/bin/python local/bench/steps.py [--steps 500] [--chunks 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchkit as bk  # noqa: E402

ENV = {
    "TASKLIFT_TASK_MODULES": json.dumps(["bench_tasks", "bench_steps_tasks"]),
    "TASKLIFT_LEASE_SECONDS": "5",
    "TASKLIFT_HEARTBEAT_SECONDS": "1",
    "TASKLIFT_REAPER_INTERVAL_SECONDS": "1",
}


#: status, attempts, and the steps the second attempt recorded (it resumed once there is one).
RESUME_SQL = sa.text(
    "SELECT status, attempts, (SELECT count(*) FROM task_steps s WHERE s.task_id = t.id AND attempt = 2)"
    " FROM tasks t WHERE id = :t"
)
#: seconds from start to end, output rows, and the index of the last chunk stored.
OUTPUT_SQL = sa.text(
    "SELECT extract(epoch FROM completed_at - started_at),"
    " (SELECT count(*) FROM task_events e WHERE e.task_id = t.id AND kind = 'output'),"
    " (SELECT max(CAST(e.data ->> 'last' AS bigint)) FROM task_events e WHERE e.task_id = t.id AND kind = 'output')"
    " FROM tasks t WHERE id = :t"
)


def wait_terminal(http: httpx.Client, task_id: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = http.get(f"/tasks/{task_id}", params={"wait": 5}).json()
        if body["status"] in ("SUCCESS", "FAILED", "CANCELLED"):
            return body
    raise TimeoutError(task_id)


def submit(http: httpx.Client, **fields: Any) -> str:
    reply = http.post("/tasks", json=fields)
    reply.raise_for_status()
    return str(reply.json()["task_id"])


def step_overhead(http: httpx.Client, steps: int, workdir: Path) -> dict[str, Any]:
    plain = wait_terminal(http, submit(http, task_type="bench_steps", steps=steps, durable=False))
    # The same calls with a ctx.log line each: the cost of one fenced autocommit write (WAL flush) +
    # its PUBLISH on this machine right now, what a step's record costs at the least.
    logged = wait_terminal(http, submit(http, task_type="bench_steps", steps=steps, durable=False, log_each=True))
    marker = workdir / "fail"
    marker.touch()
    task_id = submit(http, task_type="bench_steps", steps=steps, fail_marker=str(marker))
    failed = wait_terminal(http, task_id)
    recorded = float(failed["error"]["message"].removeprefix("elapsed="))
    marker.unlink()
    http.post(f"/tasks/{task_id}/retry").raise_for_status()
    replayed = wait_terminal(http, task_id)["result"]["elapsed"]
    base = plain["result"]["elapsed"]
    return {
        "steps": steps,
        "plain_ms_per_call": 1000 * base / steps,
        "record_ms_per_step": 1000 * (recorded - base) / steps,
        "replay_ms_per_step": 1000 * (replayed - base) / steps,
        "log_line_ms_per_call": 1000 * (logged["result"]["elapsed"] - base) / steps,
    }


def resume_after_kill(http: httpx.Client, db: sa.Engine, steps: int, workdir: Path) -> dict[str, Any]:
    marker = workdir / "slow"
    task_id = submit(http, task_type="bench_steps", steps=steps, slow_marker=str(marker))
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(int(marker.read_text()), signal.SIGKILL)
    killed = time.monotonic()
    resumed = None
    while True:
        with db.connect() as conn:
            row = conn.execute(RESUME_SQL, {"t": task_id}).one()
        if resumed is None and row[2] > 0:
            resumed = time.monotonic() - killed
        if row[0] in ("SUCCESS", "FAILED"):
            break
        time.sleep(0.01)
    finished = time.monotonic() - killed
    with db.connect() as conn:
        by_attempt = dict(
            conn.execute(
                sa.text("SELECT attempt, count(*) FROM task_steps WHERE task_id = :t GROUP BY 1"), {"t": task_id}
            ).all()
        )
    return {
        "status": row[0],
        "attempts": row[1],
        "steps_recorded_by_attempt": by_attempt,
        "kill_to_resumed_s": resumed,
        "kill_to_success_s": finished,
        "lease_plus_reaper_s": float(ENV["TASKLIFT_LEASE_SECONDS"]) + float(ENV["TASKLIFT_REAPER_INTERVAL_SECONDS"]),
    }


def output_rate(http: httpx.Client, db: sa.Engine, chunks: int) -> dict[str, Any]:
    task_id = submit(http, task_type="bench_emit", count=chunks)
    done = wait_terminal(http, task_id)
    with db.connect() as conn:
        span, rows, stored = conn.execute(OUTPUT_SQL, {"t": task_id}).one()
    paced = submit(http, task_type="bench_emit", count=5000, rate=1000)
    wait_terminal(http, paced)
    with db.connect() as conn:
        paced_rows = conn.execute(
            sa.text("SELECT count(*) FROM task_events WHERE task_id = :t AND kind = 'output'"), {"t": paced}
        ).scalar()
    return {
        "chunks": chunks,
        "chunks_stored": stored,
        "emit_calls_per_s": chunks / done["result"]["elapsed"],
        "stored_chunks_per_s": chunks / float(span),
        "rows": rows,
        "chunks_per_row": chunks / rows,
        "at_1000_per_s_for_5_s_rows": paced_rows,
        "at_1000_per_s_rows_per_s": paced_rows / 5,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--chunks", type=int, default=200_000)
    args = parser.parse_args()
    bk.install_signal_handlers()
    results: dict[str, Any] = {"machine": bk.machine_info(), "settings": ENV}
    try:
        with bk.Stack(extra_env=ENV) as stack, tempfile.TemporaryDirectory() as tmp:
            port = bk.free_port()
            stack.api(port)
            stack.reaper()
            stack.worker(2)  # a kill leaves another pool process to take the task at once
            db = sa.create_engine(stack.database_url, poolclass=sa.pool.NullPool)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                bk.log(f"(a) step overhead, {args.steps} steps")
                results["step_overhead"] = step_overhead(http, args.steps, Path(tmp))
                bk.log("(b) resume after a SIGKILL in the middle step")
                results["resume"] = resume_after_kill(http, db, 20, Path(tmp))
                bk.log(f"(c) output, {args.chunks} chunks flat out, then 1,000/s for 5 s")
                results["output"] = output_rate(http, db, args.chunks)
            db.dispose()
    except KeyboardInterrupt:
        bk.log("interrupted; everything was stopped")
        return 130
    for part in ("step_overhead", "resume", "output"):
        print(f"{part}: " + json.dumps(results[part], default=str))
    so, rs, out = results["step_overhead"], results["resume"], results["output"]
    print(f"step overhead: record {so['record_ms_per_step']:.3f} ms/step, replay {so['replay_ms_per_step']:.3f} ms/step"
          f" (target <= 2 ms); a ctx.log line: {so['log_line_ms_per_call']:.3f} ms")  # fmt: skip
    print(f"resume after kill: resumed {rs['kill_to_resumed_s']:.2f} s, SUCCESS {rs['kill_to_success_s']:.2f} s"
          f" (lease + reaper = {rs['lease_plus_reaper_s']:.1f} s)")  # fmt: skip
    print(f"output: {out['emit_calls_per_s']:,.0f} emit calls/s, {out['stored_chunks_per_s']:,.0f} chunks/s stored"
          f" end to end in {out['rows']} rows;"
          f" at 1,000 chunks/s: {out['at_1000_per_s_rows_per_s']:.1f} rows/s")  # fmt: skip
    bk.save_results("steps", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
