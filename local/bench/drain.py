#!/usr/bin/env python
"""Drain throughput: N zero-work tasks end to end through tasklift vs N raw Celery no-ops.

- **tasklift**: N ``bench_noop`` tasks submitted concurrently over HTTP (``--clients`` keep-alive
  connections) to one API process, run by ``tasklift worker --concurrency C``; the reaper runs too.
  Time = first submit → the last task's ``completed_at`` (SUCCESS), read from PostgreSQL.
- **raw Celery** (the baseline): N no-ops of a separate minimal Celery app (raw_celery_app.py) on
  the same Redis, with the same worker concurrency, pool, acks_late and prefetch 1; each does one
  Redis INCR. Time = first publish → the counter reaching N.

Both workers stay up for the whole run (idle while the other is measured); the runs alternate,
``--rounds`` times each, after a warm-up of each. Target (issue 2): tasklift >= 0.50x raw Celery
(the original demo: 0.15x, 73 vs 486 tasks/s).

``--presubmit`` adds worker-only drains (the reported figure stays the end-to-end one): the
tasklift worker is stopped, N tasks are submitted, a fresh worker starts, and once its first tasks
are done (imports, connections) the rest are timed; CPU per task is given for each process group.
``--no-e2e`` skips the end-to-end rounds (quick worker-side iterations).

    .venv/bin/python local/bench/drain.py [--tasks 2000] [--concurrency 2] [--rounds 2] [--profile]
    .venv/bin/python local/bench/drain.py --tasks 1000 --rounds 1 --presubmit [--no-e2e]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchkit as bk  # noqa: E402

TARGET = 0.50
DEMO = {"ratio": 0.15, "tasklift": 73, "celery": 486}
PROFILE_FOCUS: list[bk.Focus] = [
    ("celery trace (one task, whole)", "celery/app/trace.py", "trace_task"),
    ("  tasklift execute", "tasklift/queue/runner.py", "execute"),
    ("    leases.take_lease", "tasklift/store/leases.py", "take_lease"),
    ("    heartbeat watch/unwatch", "tasklift/queue/runtime.py", "Heartbeats.unwatch"),
    ("    telemetry span (claim, finish)", "tasklift/telemetry/tracing.py", "span"),
    ("    _finish", "tasklift/queue/runner.py", "_finish"),
    ("      leases.finish", "tasklift/store/leases.py", "finish"),
    ("  prepared statement (round trip incl.)", "tasklift/store/db.py", "run_prepared"),
    ("publish thread (PUBLISH, off the task's path)", "tasklift/queue/runtime.py", "DeferredAnnouncer._run"),
    ("pool checkout", "sqlalchemy/pool/base.py", "_checkout"),
    ("  pool_pre_ping (SELECT 1 per checkout)", "sqlalchemy/engine/default.py", "_do_ping_w_event"),
    ("statement compile / cache key", "sqlalchemy/sql/elements.py", "_compile_w_cache"),
    ("cursor.execute", "sqlalchemy/engine/default.py", "do_execute"),
    ("COMMIT", "sqlalchemy/engine/base.py", "_commit_impl"),
    ("logging", "logging/__init__.py", "handle"),
    ("billiard pool: receive / ack", "billiard/pool.py", "workloop"),
    ("API: TaskService.submit", "tasklift/tasks/service.py", "TaskService.submit"),
    ("API: uvicorn run_asgi", "uvicorn/protocols/http/httptools_impl.py", "run_asgi"),
]


# --- raw Celery ----------------------------------------------------------------------------------


def raw_app(redis_url: str) -> Any:
    os.environ["BENCH_REDIS_URL"] = redis_url
    import raw_celery_app

    return raw_celery_app


def wait_counter(client: Any, key: str, n: int, timeout: float, series: list[tuple[float, int]]) -> float:
    """Poll ``key`` every 5 ms until it reaches ``n``; returns the wall time it was first seen there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = int(client.get(key) or 0)
        now = time.time()
        series.append((now, value))
        if value >= n:
            return now
        time.sleep(0.005)
    raise TimeoutError(f"raw Celery: only {value} of {n} no-ops finished within {timeout} s")


def run_raw(n: int, redis_url: str, timeout: float) -> dict[str, Any]:
    import redis

    mod = raw_app(redis_url)
    client = redis.Redis.from_url(redis_url)
    client.set(mod.COUNTER, 0)
    series: list[tuple[float, int]] = []
    outcome: dict[str, Any] = {}

    def watch() -> None:
        try:
            outcome["t_end"] = wait_counter(client, mod.COUNTER, n, timeout, series)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            outcome["error"] = exc

    watcher = threading.Thread(target=watch, daemon=True)
    t0 = time.time()
    watcher.start()
    with mod.app.producer_or_acquire() as producer:
        for _ in range(n):
            mod.app.send_task("bench.noop", queue=mod.QUEUE, producer=producer)
    submitted = time.time()
    watcher.join(timeout + 5)
    client.close()
    if "error" in outcome or "t_end" not in outcome:
        raise outcome.get("error") or TimeoutError("raw Celery drain did not finish")
    t_end = outcome["t_end"]
    return {
        "tasks": n,
        "seconds": t_end - t0,
        "tasks_per_s": n / (t_end - t0),
        "submit_seconds": submitted - t0,
        "series": [(round(t - t0, 4), c) for t, c in series[:: max(1, len(series) // 400)]]
        + [(round(t_end - t0, 4), n)],
    }


# --- tasklift ------------------------------------------------------------------------------------


async def submit_all(port: int, n: int, clients: int, run_tag: str) -> tuple[list[str], float, float]:
    """POST n tasks over ``clients`` keep-alive connections; returns ids, first and last 202 times."""
    body = json.dumps({"task_type": "bench_noop", "metadata": {"bench_run": run_tag}}).encode()
    remaining = iter(range(n))
    ids: list[str] = []
    errors: list[str] = []

    async def one_client() -> None:
        conn = await bk.HttpConn(port).connect()
        try:
            for _ in remaining:
                status, data = await conn.request("POST", "/tasks", body)
                if status != 202:
                    errors.append(f"{status} {data[:200]!r}")
                    continue
                ids.append(json.loads(data)["task_id"])
        finally:
            await conn.close()

    conns = [one_client() for _ in range(clients)]
    t0 = time.time()
    await asyncio.gather(*conns)
    t_submitted = time.time()
    if errors:
        raise RuntimeError(f"{len(errors)} submissions failed, e.g. {errors[:3]}")
    return ids, t0, t_submitted


class DbWatcher(threading.Thread):
    """Counts finished tasks of one run every 50 ms (for completion and the plot)."""

    def __init__(self, url: str, run_tag: str, n: int, timeout: float) -> None:
        super().__init__(daemon=True)
        import sqlalchemy as sa

        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self.run_tag, self.n, self.timeout = run_tag, n, timeout
        self.series: list[tuple[float, int]] = []
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        sql = (
            "SELECT count(*) FROM tasks WHERE metadata->>'bench_run' = %(tag)s"
            " AND status IN ('SUCCESS', 'FAILED', 'CANCELLED')"
        )
        deadline = time.monotonic() + self.timeout
        try:
            with self.engine.connect() as conn:
                while time.monotonic() < deadline:
                    count = int(conn.exec_driver_sql(sql, {"tag": self.run_tag}).scalar_one())
                    conn.commit()
                    self.series.append((time.time(), count))
                    if count >= self.n:
                        self.done.set()
                        return
                    time.sleep(0.05)
            self.error = TimeoutError(f"tasklift: only {count} of {self.n} tasks finished within {self.timeout} s")
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.error = exc
        finally:
            self.done.set()


def run_tasklift(n: int, port: int, clients: int, db_url: str, timeout: float) -> dict[str, Any]:
    import sqlalchemy as sa

    tag = uuid.uuid4().hex[:12]
    watcher = DbWatcher(db_url, tag, n, timeout)
    watcher.start()
    ids, t0, t_submitted = asyncio.run(submit_all(port, n, clients, tag))
    watcher.done.wait(timeout + 5)
    watcher.join(5)
    if watcher.error:
        raise watcher.error
    engine = watcher.engine
    with engine.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT count(*) FILTER (WHERE status = 'SUCCESS'), count(*),"
            " extract(epoch FROM max(completed_at)), extract(epoch FROM min(created_at)),"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - created_at))"
            " FROM tasks WHERE metadata->>'bench_run' = %(tag)s",
            {"tag": tag},
        ).one()
    engine.dispose()
    success, total, t_end, _first_created, p50_sojourn = row
    if success != n or total != n:
        raise RuntimeError(f"tasklift: {success} SUCCESS of {total} rows for {n} submitted")
    t_end = float(t_end)
    return {
        "tasks": n,
        "seconds": t_end - t0,
        "tasks_per_s": n / (t_end - t0),
        "submit_seconds": t_submitted - t0,
        "submit_per_s": n / (t_submitted - t0),
        "median_created_to_completed_s": float(p50_sojourn),
        "series": [(round(t - t0, 4), c) for t, c in watcher.series] + [(round(t_end - t0, 4), n)],
    }
    _ = sa  # imported for the engine type


def run_presubmitted(
    n: int, stack: bk.Stack, port: int, clients: int, concurrency: int, groups: dict[str, list[int]], timeout: float
) -> tuple[dict[str, Any], bk.Proc]:
    """Worker-only drain: submit n tasks with no worker, start one, time it once it is warm.

    Returns the result and the new worker process (the caller's worker was replaced).
    """
    import sqlalchemy as sa

    old = next(p for p in stack.procs if p.pid == groups["tasklift_worker"][0])
    stack.stop(old)
    tag = uuid.uuid4().hex[:12]
    ids, t0, t_submitted = asyncio.run(submit_all(port, n, clients, tag))
    engine = sa.create_engine(stack.database_url, poolclass=sa.pool.NullPool)
    sql = (
        "SELECT count(*) FROM tasks WHERE metadata->>'bench_run' = %(tag)s"
        " AND status IN ('SUCCESS', 'FAILED', 'CANCELLED')"
    )
    warm = min(n // 10, 20 * concurrency)
    worker = stack.worker(concurrency)
    groups["tasklift_worker"] = [worker.pid]
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:

        def done() -> int:
            count = int(conn.exec_driver_sql(sql, {"tag": tag}).scalar_one())
            conn.commit()
            return count

        while (done0 := done()) < warm:
            if time.monotonic() > deadline:
                raise TimeoutError(f"presubmit: only {done0} of {warm} warm-up tasks finished")
            time.sleep(0.02)
        # The drain's end is the last completed_at (same clock), so polling can be sparse: its
        # queries (a scan of tasks) would otherwise count as PostgreSQL CPU per task.
        with bk.CpuMeter(groups) as meter:
            t_start = time.time()
            while (count := done()) < n:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"presubmit: only {count} of {n} tasks finished within {timeout} s")
                time.sleep(0.25)
    with engine.connect() as conn:
        success, t_end = conn.exec_driver_sql(
            "SELECT count(*) FILTER (WHERE status = 'SUCCESS'), extract(epoch FROM max(completed_at))"
            " FROM tasks WHERE metadata->>'bench_run' = %(tag)s",
            {"tag": tag},
        ).one()
    engine.dispose()
    if success != n:
        raise RuntimeError(f"presubmit: {success} SUCCESS of {n}")
    timed = n - done0
    elapsed = float(t_end) - t_start
    cpu = meter.result
    per_task_ms = {name: round(1000 * cores * meter.elapsed / timed, 3) for name, cores in cpu.items()}
    res = {
        "tasks": n,
        "timed_tasks": timed,
        "seconds": elapsed,
        "tasks_per_s": timed / elapsed,
        "submit_per_s": n / (t_submitted - t0),
        "cpu_cores": cpu,
        "cpu_ms_per_task": per_task_ms,
    }
    return res, worker


def presubmit_rounds(
    args: argparse.Namespace, stack: bk.Stack, port: int, groups: dict[str, list[int]], out: list[dict[str, Any]]
) -> bk.Proc:
    """``--rounds`` worker-only drains; returns the worker left running."""
    worker = None
    for rnd in range(args.rounds):
        busy = bk.wait_for_quiet(args.quiet, args.max_wait)
        res, worker = run_presubmitted(args.tasks, stack, port, args.clients, args.concurrency, groups, args.timeout)
        res["machine_busy_before"] = busy
        out.append(res)
        per_task = ", ".join(f"{k} {v:.2f}" for k, v in res["cpu_ms_per_task"].items())
        bk.log(
            f"round {rnd + 1} worker-only: {res['timed_tasks']} tasks in {res['seconds']:.2f} s ="
            f" {res['tasks_per_s']:.0f} tasks/s; cpu ms per task: {per_task}"
        )
    assert worker is not None
    return worker


def warm_up(stack: bk.Stack, api_port: int, concurrency: int) -> None:
    """Give every pool child its first task (imports, connections) on both sides."""
    run_tasklift(4 * concurrency, api_port, concurrency, stack.database_url, 60)
    run_raw(4 * concurrency, stack.redis_url, 60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=2, help="worker pool processes (both workers)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent HTTP connections submitting")
    parser.add_argument("--rounds", type=int, default=2, help="alternating raw/tasklift runs each")
    parser.add_argument("--timeout", type=float, default=300, help="longest a single drain may take")
    parser.add_argument("--log-level", default="INFO", help="both workers' log level (tasklift's default: INFO)")
    parser.add_argument(
        "--profile", action="store_true", help="then profile a tasklift worker child during a drain (py-spy)"
    )
    parser.add_argument("--no-fsync", action="store_true", help="run PostgreSQL with fsync=off (default: on)")
    parser.add_argument("--presubmit", action="store_true", help="also time worker-only drains of pre-submitted tasks")
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end rounds (with --presubmit)")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--quiet", type=float, default=0.25, help="wait until other load is below this many cores")
    parser.add_argument("--max-wait", type=float, default=60, help="longest wait for a quiet machine, per run")
    parser.add_argument("--replot", type=Path, help="only summarize and plot this saved results JSON")
    parser.add_argument(
        "--otlp", action="store_true", help="export traces and metrics over OTLP to a local sink (benchkit.OtlpSink)"
    )
    args = parser.parse_args()
    if args.replot:
        results = json.loads(args.replot.read_text())
        summarize(results)
        plot(results)
        return 0
    bk.install_signal_handlers()
    results: dict[str, Any] = {
        "benchmark": "drain",
        "machine": bk.machine_info(),
        "settings": {
            "tasks": args.tasks,
            "concurrency": args.concurrency,
            "pool": "prefork",
            "clients": args.clients,
            "rounds": args.rounds,
            "log_level": args.log_level,
            "postgres_fsync": not args.no_fsync,
            "redis_appendonly": True,
        },
        "raw": [],
        "tasklift": [],
        "presubmitted": [],
    }
    try:
        env = {"TASKLIFT_LOG_LEVEL": args.log_level.upper()}
        with (
            bk.otlp_sink(args.otlp) as sink,
            bk.Stack(fsync=not args.no_fsync, extra_env={**env, **(sink.env if sink else {})}) as stack,
        ):
            port = bk.free_port()
            api = stack.api(port)
            reaper = stack.reaper()
            worker = stack.worker(args.concurrency)
            raw_worker = bk.raw_celery_worker(stack, args.concurrency, args.log_level.upper())
            bk.log(
                f"API {api.pid}, reaper {reaper.pid}, tasklift worker {worker.pid}, raw worker {raw_worker.pid};"
                " warming up"
            )
            warm_up(stack, port, args.concurrency)
            groups = {
                "api": [api.pid],
                "tasklift_worker": [worker.pid],
                "raw_worker": [raw_worker.pid],
                "reaper": [reaper.pid],
                "postgres": [stack.pg.proc.pid],
                "redis": [stack.redis.proc.pid],
                "bench": [os.getpid()],
            }
            for rnd in range(0 if args.no_e2e else args.rounds):
                for side in ("raw", "tasklift"):
                    busy = bk.wait_for_quiet(args.quiet, args.max_wait)
                    sessions0 = bk.pg_sessions(stack.database_url)
                    with bk.CpuMeter(groups) as meter:
                        if side == "raw":
                            res = run_raw(args.tasks, stack.redis_url, args.timeout)
                        else:
                            res = run_tasklift(args.tasks, port, args.clients, stack.database_url, args.timeout)
                    stack.check_alive()
                    res["cpu_cores"] = meter.result
                    res["pg_sessions_opened"] = bk.pg_sessions(stack.database_url) - sessions0 - 1
                    res["machine_busy_before"] = busy
                    results[side].append(res)
                    extra = f", submitted at {res['submit_per_s']:.0f}/s" if side == "tasklift" else ""
                    bk.log(
                        f"round {rnd + 1} {side:8s}: {res['tasks']} tasks in {res['seconds']:.2f} s = "
                        f"{res['tasks_per_s']:.0f} tasks/s{extra}; new PG connections {res['pg_sessions_opened']};"
                        f" cpu: {bk.CpuMeter.describe_result(meter.result)}"
                    )
            if args.presubmit:
                worker = presubmit_rounds(args, stack, port, groups, results["presubmitted"])
            if args.profile:
                results["profile"] = profile(args, stack, port, worker)
    except KeyboardInterrupt:
        bk.log("interrupted; everything was stopped")
        return 130
    if sink is not None:
        results["otlp"] = sink.counts()
        bk.log(f"OTLP sink received {sink.spans} spans in {sink.trace_batches} batches")
    report(args, results)
    return 0


def report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Print the summaries and save the results (a worker-only run alone goes to drain-presubmit.json)."""
    if args.presubmit:
        summarize_presubmitted(results)
    if args.no_e2e:
        bk.save_results("drain-presubmit", results)
        return
    summarize(results)
    for side in ("raw", "tasklift"):  # keep the JSON small: the series of the best round only
        best = max(results[side], key=lambda r: r["tasks_per_s"])
        for res in results[side]:
            if res is not best:
                res.pop("series", None)
    bk.save_results("drain" + ("-otlp" if args.otlp else ""), results)
    if not args.no_plot:
        plot(results)


def profile(args: argparse.Namespace, stack: bk.Stack, port: int, worker: bk.Proc) -> dict[str, Any]:
    """py-spy on one pool child of the tasklift worker and on the API while N tasks drain."""
    import psutil

    children = psutil.Process(worker.pid).children()
    if not children:
        return {}
    out: dict[str, Any] = {}
    targets = {"worker_child": children[0].pid, "api": stack.procs[0].pid}
    spies = {}
    seconds = max(5, int(args.tasks / 100))
    for name, pid in targets.items():
        path = stack.workdir / f"profile-{name}.txt"
        spy = bk.pyspy_record(pid, seconds, path)
        if spy is None:
            return out
        spies[name] = (spy, path)
    time.sleep(0.5)
    run_tasklift(args.tasks, port, args.clients, stack.database_url, args.timeout)
    for name, (spy, path) in spies.items():
        spy.communicate(timeout=120)
        if not path.exists():
            continue
        summary = bk.summarize_profile(path, PROFILE_FOCUS)
        out[name] = summary
        bk.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (bk.RESULTS_DIR / f"drain-profile-{name}.txt").write_text(path.read_text())
        bk.print_profile(f"tasklift {name} during a drain", summary)
    return out


def summarize_presubmitted(results: dict[str, Any]) -> None:
    """Worker-only drains: throughput and CPU milliseconds per task of each process group (median)."""
    runs = results["presubmitted"]
    if not runs:
        return
    rate = bk.median([r["tasks_per_s"] for r in runs])
    groups = ("tasklift_worker", "postgres", "redis", "api", "reaper", "other")
    per_task = {g: bk.median([r["cpu_ms_per_task"][g] for r in runs]) for g in groups}
    results["presubmitted_median"] = {"tasks_per_s": rate, "cpu_ms_per_task": per_task}
    s = results["settings"]
    print(
        f"\nWorker-only drain of {s['tasks']} pre-submitted tasks, concurrency {s['concurrency']} ({len(runs)} rounds)"
    )
    print(f"  {rate:7.0f} tasks/s; cpu ms per task: " + ", ".join(f"{g} {v:.2f}" for g, v in per_task.items()))


def summarize(results: dict[str, Any]) -> None:
    """Median and best round of each side. This machine is shared, so every round is disturbed to
    some degree; the rounds alternate, so the medians saw comparable disturbance and make the
    headline ratio (best vs best is printed too)."""
    raw_all = [r["tasks_per_s"] for r in results["raw"]]
    tl_all = [r["tasks_per_s"] for r in results["tasklift"]]
    med = {"raw": bk.median(raw_all), "tasklift": bk.median(tl_all)}
    best = {"raw": max(raw_all), "tasklift": max(tl_all)}
    results["median_tasks_per_s"] = med
    results["best_tasks_per_s"] = best
    results["ratio"] = med["tasklift"] / med["raw"]
    results["ratio_best"] = best["tasklift"] / best["raw"]
    s = results["settings"]
    print(
        f"\nDrain of {s['tasks']} zero-work tasks, worker concurrency {s['concurrency']}"
        f" ({s['rounds']} rounds: median / best)"
    )
    print(f"  raw Celery no-op (baseline)   {med['raw']:7.0f} / {best['raw']:7.0f} tasks/s")
    print(
        f"  tasklift end to end           {med['tasklift']:7.0f} / {best['tasklift']:7.0f} tasks/s"
        f"   ratio {results['ratio']:.2f}x / {results['ratio_best']:.2f}x  target {TARGET:.2f}x"
        f"  demo {DEMO['ratio']:.2f}x  {bk.verdict(results['ratio'], TARGET)}"
    )
    sub = bk.median([r["submit_per_s"] for r in results["tasklift"]])
    print(f"  (tasklift submissions ran at {sub:.0f}/s over HTTP while the worker drained)")


def plot(results: dict[str, Any]) -> None:
    plt = bk.pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for side, label, color in (
        ("raw", "raw Celery no-op", "#999999"),
        ("tasklift", "tasklift (HTTP submit → SUCCESS in PostgreSQL)", "#3b75af"),
    ):
        res = next(r for r in results[side] if "series" in r)
        xs, ys = zip(*res["series"], strict=True)
        ax.plot(xs, ys, label=f"{label}: {res['tasks_per_s']:.0f}/s", color=color)
    ax.set_xlabel("seconds since the first submit")
    ax.set_ylabel("tasks finished")
    s = results["settings"]
    ax.set_title(
        f"Drain of {s['tasks']} zero-work tasks, worker concurrency {s['concurrency']} (best round of each)\n"
        f"ratio of the medians {results['ratio']:.2f}x, of the best rounds {results['ratio_best']:.2f}x"
        f" (target {TARGET:.2f}x); 2 cores shared by everything",
        fontsize=10,
    )
    ax.legend(loc="lower right", fontsize=9)
    ax.grid(alpha=0.3)
    bk.save_figure(fig, "bench-drain.png")
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
