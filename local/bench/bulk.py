#!/usr/bin/env python
"""Bulk operations (POST /bulk): tasks per second of a bulk cancel, retry and purge, and what the
API's requests see meanwhile.

``--tasks`` PENDING ``bench_noop`` tasks are submitted through ``POST /tasks:batch`` (no worker runs,
so they stay PENDING; the retried ones are dispatched to a queue nobody consumes). Then, one after
another: a bulk **cancel** of them (``status: PENDING``), a bulk **retry** (``status: CANCELLED``:
back to PENDING, a dispatch intent each), a bulk cancel again and a bulk **purge**. For each:
tasks/s from the operation's own ``started_at`` → ``finished_at``, and the latency of ``GET
/tasks/{id}`` (one client, back to back, on tasks of the operation) and ``POST /tasks`` during it,
against the same requests for ``--baseline`` s before any operation (p50 / p99 / max, ms). The
reaper runs with its defaults (batches of 500, at most 2 s a round, a round every second).

    .venv/bin/python local/bench/bulk.py [--tasks 20000] [--baseline 5]
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchkit as bk  # noqa: E402


class Prober(threading.Thread):
    """GET /tasks/{id} on random ids and POST /tasks, alternately, until stopped; latencies in ms."""

    def __init__(self, base_url: str, ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.base_url, self.ids = base_url, ids
        self.stop_at = threading.Event()
        self.gets: list[float] = []
        self.posts: list[float] = []
        self.errors = 0

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as http:
            while not self.stop_at.is_set():
                for into, call in (
                    (self.gets, lambda: http.get(f"/tasks/{random.choice(self.ids)}")),
                    (self.posts, lambda: http.post("/tasks", json={"task_type": "bench_idle"})),
                ):
                    started = time.perf_counter()
                    reply = call()
                    into.append(1000 * (time.perf_counter() - started))
                    self.errors += reply.status_code >= 500

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"errors_5xx": self.errors}
        for name, values in (("get", self.gets), ("post", self.posts)):
            out[name] = {
                "n": len(values),
                "p50_ms": bk.percentile(values, 50),
                "p99_ms": bk.percentile(values, 99),
                "max_ms": max(values),
            }
        return out


def probe(base_url: str, ids: list[str], until: Any) -> dict[str, Any]:
    prober = Prober(base_url, ids)
    prober.start()
    result = until()
    prober.stop_at.set()
    prober.join()
    return {"result": result, "api": prober.summary()}


def run_bulk(http: httpx.Client, action: str, filt: dict[str, Any]) -> dict[str, Any]:
    made = http.post("/bulk", json={"action": action, "filter": filt})
    made.raise_for_status()
    bulk_id = made.json()["bulk_id"]
    while (op := http.get(f"/bulk/{bulk_id}").json())["status"] in ("PENDING", "RUNNING"):
        time.sleep(0.05)
    started = bk_time(op["started_at"])
    finished = bk_time(op["finished_at"])
    seconds = finished - started
    return {
        "action": action,
        "status": op["status"],
        "total": op["total"],
        "done": op["done"],
        "skipped": op["skipped"],
        "seconds": seconds,
        "tasks_per_s": op["done"] / seconds if seconds > 0 else None,
    }


def bk_time(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--baseline", type=float, default=5.0)
    args = parser.parse_args()
    bk.install_signal_handlers()
    results: dict[str, Any] = {"machine": bk.machine_info(), "git": bk.git_state(), "tasks": args.tasks}
    try:
        with bk.Stack() as stack:
            port = bk.free_port()
            stack.api(port)
            base_url = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base_url, timeout=60) as http:
                bk.log(f"submitting {args.tasks} tasks")
                ids: list[str] = []
                for start in range(0, args.tasks, 1000):
                    items = [{"task": {"task_type": "bench_noop"}} for _ in range(min(1000, args.tasks - start))]
                    reply = http.post("/tasks:batch", json={"items": items})
                    reply.raise_for_status()
                    ids += [item["task"]["task_id"] for item in reply.json()["items"]]
                bk.log(f"baseline: {args.baseline} s of GET and POST without an operation")
                results["baseline"] = probe(base_url, ids, lambda: time.sleep(args.baseline))["api"]
                stack.reaper()
                steps = [
                    ("cancel", {"status": "PENDING", "task_type": "bench_noop"}),
                    ("retry", {"status": "CANCELLED", "task_type": "bench_noop"}),
                    ("cancel", {"status": "PENDING", "task_type": "bench_noop"}),
                    ("purge", {"status": "CANCELLED", "task_type": "bench_noop"}),
                ]
                results["operations"] = []
                for action, filt in steps:
                    bk.log(f"bulk {action} {filt}")
                    results["operations"].append(probe(base_url, ids, lambda a=action, f=filt: run_bulk(http, a, f)))
                    stack.check_alive()
    except KeyboardInterrupt:
        bk.log("interrupted; everything was stopped")
        return 130
    base = results["baseline"]
    print(f"{args.tasks} tasks; baseline GET p50 {base['get']['p50_ms']:.1f} / p99 {base['get']['p99_ms']:.1f} ms,"
          f" POST p50 {base['post']['p50_ms']:.1f} / p99 {base['post']['p99_ms']:.1f} ms")  # fmt: skip
    for entry in results["operations"]:
        op, api = entry["result"], entry["api"]
        print(f"bulk {op['action']:<6} {op['done']:>6} of {op['total']:>6} in {op['seconds']:.2f} s"
              f" = {op['tasks_per_s']:,.0f} tasks/s; meanwhile GET p50 {api['get']['p50_ms']:.1f} /"
              f" p99 {api['get']['p99_ms']:.1f} / max {api['get']['max_ms']:.1f} ms, POST p50"
              f" {api['post']['p50_ms']:.1f} / p99 {api['post']['p99_ms']:.1f} / max {api['post']['max_ms']:.1f} ms,"
              f" 5xx {api['errors_5xx']}")  # fmt: skip
    bk.save_results("bulk", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
