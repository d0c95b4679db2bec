#!/usr/bin/env python
"""API throughput: POST /tasks and GET /tasks/{id} against a hello-world route on the same app.

One run, one machine, one uvicorn process (``--http httptools --loop uvloop``, no access log)
serving ``hello_app:create`` (tasklift's ``create_app()`` plus ``GET /hello``). wrk drives each
endpoint for ``--warmup`` s (discarded) and then ``--seconds`` s with fixed connections; the three
endpoints are measured in turn, ``--rounds`` times, and the median round is reported.

- POST /tasks with ``{"task_type": "bench_noop"}`` (or the original demo's body with
  ``--body demo``). No worker runs: what is measured is durable submission, i.e. the commit of the
  task + its event + its outbox row, the inline Celery publish and the mark-published commit.
- GET /tasks/{id} of one existing task (the issue's figure), and, as a cross-check, GET across
  ``--get-ids`` different tasks in random order (concurrent reads share one statement; with one
  id they also share the row, with many they do not).

Targets (issue 2): POST >= 0.40x hello (the original demo: 0.04x), GET >= 0.50x hello (demo 0.06x).

    .venv/bin/python local/bench/api_throughput.py [--rounds 3] [--profile]

Needs wrk (apt-get install -y wrk) and the ``bench`` extra (matplotlib, py-spy for --profile).
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

BODIES = {
    "noop": {"task_type": "bench_noop"},
    "demo": {"vector_data": [1, 2, 3], "metadata": {}, "duration": 0},
}
TARGETS = {"post": 0.40, "get": 0.50}
DEMO = {"post": 0.04, "get": 0.06}
PROFILE_FOCUS: list[bk.Focus] = [
    # the submit path
    ("TaskService.submit", "tasklift/tasks/service.py", "TaskService.submit"),
    ("  parse_submission (validation)", "tasklift/tasks/service.py", "parse_submission"),
    ("  aio.insert_many (gathered INSERT)", "tasklift/store/aio.py", "insert_many"),
    ("  Enqueuer.send (LPUSH)", "tasklift/queue/dispatch.py", "Enqueuer.send"),
    ("    Celery send_task (kombu)", "celery/app/base.py", "send_task"),
    ("    Enqueuer.epoch (INFO, cached 2 s)", "tasklift/queue/dispatch.py", "Enqueuer.epoch"),
    ("    AsyncStore.mark_published", "tasklift/store/aio.py", "AsyncStore.mark_published"),
    ("  EventAnnouncer.publish (PUBLISH)", "tasklift/events/bus.py", "publish"),
    # the read path
    ("TaskService.get", "tasklift/tasks/service.py", "TaskService.get"),
    ("  AsyncStore.get_task (gathered SELECT)", "tasklift/store/aio.py", "AsyncStore.get_task"),
    # SQLAlchemy / driver
    ("pool checkout", "sqlalchemy/pool/base.py", "_checkout"),
    ("  pool_pre_ping (SELECT 1 per checkout)", "sqlalchemy/engine/default.py", "_do_ping_w_event"),
    ("statement compile / cache key", "sqlalchemy/sql/elements.py", "_compile_w_cache"),
    ("cursor.execute", "sqlalchemy/engine/default.py", "do_execute"),
    ("COMMIT", "sqlalchemy/engine/base.py", "_commit_impl"),
    ("result rows → RowMapping", "sqlalchemy/engine/result.py", "mappings"),
    # the HTTP side (event loop)
    ("uvicorn run_asgi (whole request on the loop)", "uvicorn/protocols/http/httptools_impl.py", "run_asgi"),
    ("tasklift asgi route app", "tasklift/http/asgi.py", "_answer"),
    ("  scope_to_neutral (request → HttpRequest)", "tasklift/http/asgi.py", "scope_to_neutral"),
    ("  receive_body", "tasklift/http/asgi.py", "receive_body"),
    ("  task_resource + JSON", "tasklift/http/types.py", "json_response"),
    ("anyio to_thread.run_sync (hand-off)", "anyio/to_thread.py", "run_sync"),
]


def submit_one(base: str, body: str) -> str:
    """POST one task; its id."""
    import urllib.request

    req = urllib.request.Request(f"{base}/tasks", data=body.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - 127.0.0.1
        assert resp.status == 202, resp.status
        return str(json.loads(resp.read())["task_id"])


def random_get_lua(ids: list[str]) -> str:
    """A wrk script that GETs one of ``ids`` at random per request."""
    table = ",".join(f'"{task_id}"' for task_id in ids)
    return (
        f"local ids = {{{table}}}\n"
        "request = function()\n"
        '  return wrk.format("GET", "/tasks/" .. ids[math.random(#ids)])\n'
        "end\n"
    )


def db_counts(url: str) -> dict[str, int]:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            tasks = conn.exec_driver_sql("SELECT count(*) FROM tasks").scalar_one()
            unpublished = conn.exec_driver_sql(
                "SELECT count(*) FROM task_outbox WHERE published_at IS NULL"
            ).scalar_one()
        return {"tasks": int(tasks), "unpublished_outbox": int(unpublished)}
    finally:
        engine.dispose()


def queue_length(redis_url: str, queue: str = "tasklift.cpu") -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.llen(queue))
    finally:
        client.close()


def measure(args: argparse.Namespace, url: str, lua: str | None, meter_groups: dict[str, list[int]]) -> dict[str, Any]:
    idle_before = bk.wait_for_quiet(args.quiet, args.max_wait)
    bk.run_wrk(url, args.warmup, args.connections, args.threads, lua)
    stats = bk.run_wrk(url, args.seconds, args.connections, args.threads, lua, meter_groups)
    stats["machine_busy_before"] = idle_before
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10, help="measured seconds per endpoint and round")
    parser.add_argument("--warmup", type=float, default=2, help="discarded warm-up seconds before each measurement")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=3, help="hello/POST/GET measured this many times, interleaved")
    parser.add_argument("--body", choices=sorted(BODIES), default="noop", help="POST body (noop: bench_noop type)")
    parser.add_argument("--profile", action="store_true", help="then profile the API under POST and GET load (py-spy)")
    parser.add_argument("--no-fsync", action="store_true", help="run PostgreSQL with fsync=off (default: on)")
    parser.add_argument(
        "--db-pool-size", type=int, default=None, help="set TASKLIFT_DB_POOL_SIZE for the API (default: tasklift's own)"
    )
    parser.add_argument(
        "--get-ids", type=int, default=1000, help="also GET across this many tasks in random order (0: skip)"
    )
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--quiet", type=float, default=0.25, help="wait until other load is below this many cores")
    parser.add_argument("--max-wait", type=float, default=60, help="longest wait for a quiet machine, per measurement")
    parser.add_argument("--replot", type=Path, help="only summarize and plot this saved results JSON")
    parser.add_argument(
        "--otlp", action="store_true", help="export traces and metrics over OTLP to a local sink (benchkit.OtlpSink)"
    )
    args = parser.parse_args()
    if args.replot:
        return replot(args.replot)
    bk.require_wrk()
    bk.install_signal_handlers()
    bk.raise_nofile(4096)

    body = json.dumps(BODIES[args.body], separators=(",", ":"))
    post_lua = f'wrk.method = "POST"\nwrk.body = \'{body}\'\nwrk.headers["Content-Type"] = "application/json"\n'
    results: dict[str, Any] = {
        "benchmark": "api_throughput",
        "machine": bk.machine_info(),
        "settings": {
            "uvicorn": "1 process, --http httptools --loop uvloop, no access log",
            "wrk": f"-t{args.threads} -c{args.connections}, {args.warmup:g} s warm-up + {args.seconds:g} s",
            "post_body": BODIES[args.body],
            "rounds": args.rounds,
            "postgres_fsync": not args.no_fsync,
            "redis_appendonly": True,
            "worker_running": False,
            "db_pool_size": args.db_pool_size or "default (10 + 10 overflow)",
        },
        "rounds": [],
    }
    try:
        extra_env = {"TASKLIFT_DB_POOL_SIZE": str(args.db_pool_size)} if args.db_pool_size else {}
        with (
            bk.otlp_sink(args.otlp) as sink,
            bk.Stack(fsync=not args.no_fsync, extra_env={**extra_env, **(sink.env if sink else {})}) as stack,
        ):
            port = bk.free_port()
            api = stack.spawn(
                "api",
                [
                    bk.PYTHON,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "hello_app:create",
                    "--port",
                    str(port),
                    *bk.UVICORN_FLAGS,
                ],  # fmt: skip
            )
            base = f"http://127.0.0.1:{port}"
            bk.wait_http(f"{base}/healthz", api)
            import urllib.request

            req = urllib.request.Request(
                f"{base}/tasks", data=body.encode(), headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - 127.0.0.1
                assert resp.status == 202, resp.status
                task_id = json.loads(resp.read())["task_id"]
            bk.log(f"API pid {api.pid} on {base}; GET target task {task_id}")
            groups = {"api": [api.pid], "postgres": [stack.pg.proc.pid], "redis": [stack.redis.proc.pid]}
            urls = {"hello": f"{base}/hello", "post": f"{base}/tasks", "get": f"{base}/tasks/{task_id}"}
            scripts: dict[str, str | None] = {"hello": None, "post": post_lua, "get": None}
            if args.get_ids > 0:
                ids = [submit_one(base, body) for _ in range(args.get_ids)]
                urls["get_many"] = f"{base}/tasks"
                scripts["get_many"] = random_get_lua(ids)
                results["settings"]["get_many_ids"] = args.get_ids
            for rnd in range(args.rounds):
                row: dict[str, Any] = {}
                for name in scripts:
                    before = db_counts(stack.database_url) if name == "post" else None
                    qlen0 = queue_length(stack.redis_url) if name == "post" else 0
                    sessions0 = bk.pg_sessions(stack.database_url)
                    stats = measure(args, urls[name], scripts[name], groups)
                    # Includes the warm-up; minus this query's own session and the one before.
                    stats["pg_sessions_opened"] = bk.pg_sessions(stack.database_url) - sessions0 - 1
                    stack.check_alive()
                    if name == "post":
                        after = db_counts(stack.database_url)
                        stats["tasks_inserted"] = after["tasks"] - before["tasks"]  # type: ignore[index]
                        stats["unpublished_outbox_after"] = after["unpublished_outbox"]
                        stats["messages_queued"] = queue_length(stack.redis_url) - qlen0
                    row[name] = stats
                    bk.log(
                        f"round {rnd + 1} {name:5s}: {stats['rps']:8.0f} req/s  p50 {stats['p50_us'] / 1000:.1f} ms"
                        f"  p99 {stats['p99_us'] / 1000:.1f} ms  non-2xx/3xx {stats['non_2xx_3xx']}"
                        f"  socket errors {stats['socket_errors']}  new PG connections {stats['pg_sessions_opened']}"
                        f"  cpu: {bk.CpuMeter.describe_result(stats['cpu_cores'])}"
                    )
                results["rounds"].append(row)
            if args.profile:
                results["profile"] = profile(args, stack, api, urls, post_lua)
    except KeyboardInterrupt:
        bk.log("interrupted; everything was stopped")
        return 130
    if sink is not None:
        results["otlp"] = sink.counts()
        bk.log(f"OTLP sink received {sink.spans} spans in {sink.trace_batches} batches")

    summarize(results)
    bk.save_results(
        "api_throughput" + (f"-pool{args.db_pool_size}" if args.db_pool_size else "") + ("-otlp" if args.otlp else ""),
        results,
    )
    if not args.no_plot and not args.db_pool_size:  # the plot shows the default configuration only
        plot(results)
    return 0


def profile(
    args: argparse.Namespace, stack: bk.Stack, api: bk.Proc, urls: dict[str, str], post_lua: str
) -> dict[str, Any]:
    """py-spy on the API process while wrk drives POST, then GET (a separate, unmeasured run)."""
    out: dict[str, Any] = {}
    for name, lua in (("post", post_lua), ("get", None)):
        for gil in (False, True):
            path = stack.workdir / f"profile-{name}{'-gil' if gil else ''}.txt"
            spy = bk.pyspy_record(api.pid, args.seconds, path, gil=gil)
            if spy is None:
                return out
            time.sleep(0.5)
            bk.run_wrk(urls[name], args.seconds, args.connections, args.threads, lua)
            _, err = spy.communicate(timeout=60)
            if not path.exists():
                bk.log(f"py-spy produced nothing: {err.decode(errors='replace')[-500:]}")
                continue
            summary = bk.summarize_profile(path, PROFILE_FOCUS)
            key = f"{name}{'_gil' if gil else ''}"
            out[key] = summary
            (bk.RESULTS_DIR).mkdir(parents=True, exist_ok=True)
            suffix = f"-pool{args.db_pool_size}" if args.db_pool_size else ""
            (bk.RESULTS_DIR / f"api_throughput{suffix}-profile-{key}.txt").write_text(path.read_text())
            bk.print_profile(f"API under {name.upper()} load{' (GIL holder only)' if gil else ''}", summary)
    return out


def summarize(results: dict[str, Any]) -> None:
    """Best and median round per endpoint, and the API's CPU per request.

    This machine is shared with other work, so every round is disturbed to some degree. Rounds are
    interleaved (hello, POST, GET), so the medians saw comparable disturbance: the headline ratio is
    median vs median; best vs best is printed too. The API's CPU time per request depends much
    less on the disturbance and is printed as a cross-check.
    """
    rounds = results["rounds"]
    names = tuple(n for n in ("hello", "post", "get", "get_many") if all(n in r for r in rounds))
    med = {n: bk.median([r[n]["rps"] for r in rounds]) for n in names}
    best = {n: max(r[n]["rps"] for r in rounds) for n in names}
    cpu_ms = {n: bk.median([r[n]["cpu_cores"]["api"] * 1000 / r[n]["rps"] for r in rounds]) for n in names}
    errors = {n: sum(r[n]["non_2xx_3xx"] + r[n]["socket_errors"] for r in rounds) for n in names}
    results["median_rps"] = med
    results["best_rps"] = best
    results["api_cpu_ms_per_request"] = cpu_ms
    results["ratios"] = {n: med[n] / med["hello"] for n in ("post", "get")}
    results["ratios_best"] = {n: best[n] / best["hello"] for n in ("post", "get")}
    results["ratios_cpu"] = {n: cpu_ms["hello"] / cpu_ms[n] for n in ("post", "get")}
    results["errors"] = errors
    print(f"\nAPI throughput ({len(rounds)} rounds; requests/s median / best; ratio median / best)")
    print(f"  {'endpoint':22s} {'req/s':>15s} {'ratio':>13s} {'target':>7s} {'demo':>6s}  result  errors  API CPU/req")
    for n, label in (("hello", "GET /hello (baseline)"), ("post", "POST /tasks"), ("get", "GET /tasks/{id}")):
        if n == "hello":
            ratio, extra = "1.00x", f"{'':>7s} {'':>6s}  {'':6s}"
        else:
            ratio = f"{results['ratios'][n]:.3f}x/{results['ratios_best'][n]:.3f}x"
            extra = f"{TARGETS[n]:6.2f}x {DEMO[n]:5.2f}x  {bk.verdict(results['ratios'][n], TARGETS[n]):6s}"
        print(f"  {label:22s} {med[n]:7.0f}/{best[n]:<7.0f} {ratio:>13s} {extra}  {errors[n]:6d}  {cpu_ms[n]:.2f} ms")
    if "get_many" in names:
        many = results["settings"].get("get_many_ids", "many")
        results["ratios"]["get_many"] = med["get_many"] / med["hello"]
        results["ratios_cpu"]["get_many"] = cpu_ms["hello"] / cpu_ms["get_many"]
        print(
            f"  {'GET, ' + str(many) + ' tasks':22s} {med['get_many']:7.0f}/{best['get_many']:<7.0f}"
            f" {results['ratios']['get_many']:>12.3f}x  (cross-check: random ids, no shared rows)"
            f"  {errors['get_many']:6d}  {cpu_ms['get_many']:.2f} ms"
        )
    print(
        f"  API CPU per request vs hello: POST {cpu_ms['hello'] / cpu_ms['post']:.3f}x,"
        f" GET {cpu_ms['hello'] / cpu_ms['get']:.3f}x (the throughput ratio an API-bound, undisturbed run would show)"
    )
    post = [r["post"] for r in rounds]
    print(
        f"  POST sanity: tasks inserted {[p['tasks_inserted'] for p in post]}"
        f" vs responses {[p['requests'] for p in post]};"
        f" messages queued {[p['messages_queued'] for p in post]};"
        f" unpublished outbox rows after: {[p['unpublished_outbox_after'] for p in post]}"
    )
    if all("pg_sessions_opened" in r["post"] for r in rounds):
        print(
            "  new PostgreSQL connections per measurement (warm-up included): "
            + ", ".join(f"{n} {[r[n]['pg_sessions_opened'] for r in rounds]}" for n in names)
        )
    busy = [r[n]["cpu_cores"].get("other", 0) for r in rounds for n in names]
    print(f"  other processes on this machine used {min(busy):.2f}..{max(busy):.2f} cores during the measurements")


def plot(results: dict[str, Any]) -> None:
    plt = bk.pyplot()
    if plt is None:
        return
    rounds, cpu_ms = results["rounds"], results["api_cpu_ms_per_request"]
    names = ["hello", "post", "get"]
    labels = ["GET /hello\n(baseline)", "POST /tasks", "GET /tasks/{id}"]
    colors = ["#999999", "#3b75af", "#519e3e"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    med = results["median_rps"]
    bars = ax.bar(labels, [med[n] for n in names], color=colors)
    for i, name in enumerate(names):
        ax.scatter([i] * len(rounds), [r[name]["rps"] for r in rounds], color="black", s=10, zorder=3)
    for bar, name in zip(bars, names, strict=True):
        text = "1.00x" if name == "hello" else f"{med[name] / med['hello']:.3f}x"
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=10)
    for i, name in ((1, "post"), (2, "get")):
        y = TARGETS[name] * med["hello"]
        ax.hlines(y, i - 0.4, i + 0.4, colors="red", linestyles="dashed")
        ax.annotate(f"target {TARGETS[name]:.2f}x", (i, y), ha="center", va="bottom", fontsize=8, color="red")
    ax.set_yscale("log")
    ax.set_ylabel("requests/s (bar: median round; dots: every round)")
    s = results["settings"]
    ax.set_title(f"Throughput, 1 uvicorn process, wrk {s['wrk'].split(',')[0]}", fontsize=10)
    ax2.bar(labels, [cpu_ms[n] for n in names], color=colors)
    for i, name in enumerate(names):
        ax2.annotate(f"{cpu_ms[name]:.2f} ms", (i, cpu_ms[name]), ha="center", va="bottom", fontsize=10)
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    ax2.set_ylabel("ms of API CPU per request (median round)")
    ax2.set_title("What each request costs the API process", fontsize=10)
    fig.suptitle("API throughput; 2 cores shared by wrk, API, PostgreSQL, Redis (and other work)", fontsize=10)
    fig.tight_layout()
    bk.save_figure(fig, "bench-api-throughput.png")
    plt.close(fig)


def replot(path: Path) -> int:
    """Summarize and plot saved results again (no stack, no load)."""
    results = json.loads(path.read_text())
    summarize(results)
    plot(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
