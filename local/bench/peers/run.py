"""tasklift beside the peers a user would pick instead, in one run on this machine.

Peers (each app is written the way its docs show; the pages are cited in local/bench/peers/apps/):
  tasklift        its own API (``tasklift api``), worker and reaper
  celery_pg       FastAPI + Celery, Redis broker, PostgreSQL result backend (SQLAlchemy)
  procrastinate   FastAPI + Procrastinate (PostgreSQL only)
  dbos            FastAPI + DBOS queues (PostgreSQL only; DBOSClient in the API)
  raw_celery      Celery alone, no HTTP and no result store: the floor, not a durable peer

Every peer gets a fresh embedded PostgreSQL 16 (fsync on) and Redis (AOF on), one API process
(uvicorn, httptools + uvloop, no access log) and one worker process running ``--concurrency``
tasks at once. The task is the same everywhere: it appends its start time to a file
(apps/stamp.py), then does nothing (``noop``) or sleeps 100 ms (``sleep``). Figures per peer:

  submit req/s       wrk POST /tasks for ``--submit-seconds`` with no worker running
  drain tasks/s      all of those tasks, from the worker's start to the last one SUCCESS in the store
  submit→start       POST sent → the task's own start stamp, ``--latency`` tasks one at a time
  submit→terminal    POST sent → GET /tasks/{id} (polled every 2 ms) reads a terminal state
  PostgreSQL CPU/task  CPU seconds of all PostgreSQL processes over submit + drain, per task

The peers' own pins are in .ci/tools/peers.txt (hash-checked), installed into .venv-peers on
first use. Results: local/bench/results/peers.json and docs/images/bench-peers.png.

    .venv/bin/python local/bench/peers/run.py              # the full run (~10 min)
    .venv/bin/python local/bench/peers/run.py --quick      # a smoke run (~2 min)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
REPO = BENCH.parent.parent
sys.path[:0] = [str(BENCH), str(REPO)]

import benchkit as bk  # noqa: E402

APPS = HERE / "apps"
PINS = REPO / ".ci" / "tools" / "peers.txt"
VENV = REPO / ".venv-peers"


def peer_bin() -> Path:
    """.venv-peers/bin, holding exactly the hashed pins of .ci/tools/peers.txt (installed on first use)."""
    from tests.infra.tools import venv_with

    return venv_with(VENV, PINS)


@dataclass
class Peer:
    name: str
    durable: bool
    done_sql: str
    body: dict[str, Any]  #: POST /tasks body, with "{kind}" filled in
    id_field: str = "id"
    env: dict[str, str] = field(default_factory=dict)

    def submit_body(self, kind: str) -> str:
        return json.dumps(self.body).replace("{kind}", kind)

    def done(self, answer: dict[str, Any]) -> bool:
        return bool(answer["done"]) if "done" in answer else answer.get("status") in {"SUCCESS", "FAILED", "CANCELLED"}

    # --- processes ---

    def env_for(self, stack: bk.Stack, stamps: Path) -> dict[str, str]:
        pg = libpq_url(stack.database_url)
        return {
            "PEER_DATABASE_URL": pg,
            "PEER_REDIS_URL": stack.redis_url,
            "PEER_STAMPS": str(stamps),
            "PYTHONPATH": os.pathsep.join([str(APPS), stack.env["PYTHONPATH"]]),
            **self.env,
        }

    def prepare(self, stack: bk.Stack, env: dict[str, str], concurrency: int) -> None:
        """Create the peer's schema the way its docs say (before the API starts)."""
        py = str(peer_bin() / "python")
        if self.name == "procrastinate":
            run(stack, "schema", [py, "-m", "procrastinate", "--app=procrastinate_app.app", "schema", "--apply"], env)
        elif self.name == "dbos":  # DBOS migrates its system database on launch; the client needs it there
            proc = self.worker(stack, env, concurrency)
            proc.wait_for_output("dbos worker ready", 120)
            stack.stop(proc)

    def api(self, stack: bk.Stack, env: dict[str, str], port: int) -> bk.Proc:
        if self.name == "tasklift":
            return stack.api(port, env)
        module = {"celery_pg": "celery_pg:api", "procrastinate": "procrastinate_app:api", "dbos": "dbos_app:api"}
        proc = stack.spawn(
            f"{self.name}-api",
            [str(peer_bin() / "uvicorn"), module[self.name], "--port", str(port), *bk.UVICORN_FLAGS],
            env,
        )
        bk.wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        return proc

    def worker(self, stack: bk.Stack, env: dict[str, str], concurrency: int) -> bk.Proc:
        py = str(peer_bin() / "python")
        c = str(concurrency)
        if self.name == "tasklift":
            return stack.worker(concurrency, env=env)
        if self.name == "celery_pg":
            args = [
                py,
                "-m",
                "celery",
                "-A",
                "celery_pg",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                c,
                "--queues",
                "peer",
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
            ]
        elif self.name == "procrastinate":
            args = [
                py,
                "-m",
                "procrastinate",
                "--app=procrastinate_app.app",
                "worker",
                "--queues",
                "peer",
                "--concurrency",
                c,
            ]
        else:
            args = [py, str(APPS / "dbos_app.py")]
        return stack.spawn(f"{self.name}-worker", args, {**env, "PEER_CONCURRENCY": c})


PEERS = {
    "tasklift": Peer(
        "tasklift",
        True,
        "SELECT count(*) FROM tasks WHERE status = 'SUCCESS'",
        {"task_type": "peer_work", "kind": "{kind}"},
        id_field="task_id",
    ),
    "celery_pg": Peer(
        "celery_pg", True, "SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'", {"kind": "{kind}"}
    ),
    "procrastinate": Peer(
        "procrastinate", True, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'", {"kind": "{kind}"}
    ),
    "dbos": Peer(
        "dbos",
        True,
        "SELECT count(*) FROM dbos.workflow_status WHERE status = 'SUCCESS'",
        {"kind": "{kind}"},
        env={"PEER_DBOS_POLL_SECONDS": "0.05"},
    ),
}


def run(stack: bk.Stack, name: str, args: list[str], env: dict[str, str]) -> None:
    proc = stack.spawn(name, args, env)
    if proc.popen.wait(300) != 0:
        raise RuntimeError(f"{name} failed:\n{proc.output()[-3000:]}")
    stack.procs.remove(proc)


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg://…``) as the plain ``postgresql://`` URL libpq reads."""
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url)


def count(url: str, sql: str) -> int:
    import psycopg

    with psycopg.connect(libpq_url(url)) as conn, conn.cursor() as cur:
        try:
            cur.execute(sql)
        except psycopg.errors.UndefinedTable:  # the peer creates its tables on first use
            return 0
        row = cur.fetchone()
        return int(row[0]) if row else 0


def http(method: str, url: str, body: str | None = None) -> dict[str, Any]:
    data = body.encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - 127.0.0.1 only
        return json.loads(resp.read())


def stamps_of(folder: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for path in folder.glob("*.txt"):
        for line in path.read_text().splitlines():
            task, at = line.split()
            out[task] = float(at)
    return out


def drain(
    stack: bk.Stack, peer: Peer, env: dict[str, str], n: int, concurrency: int, stamps: Path, timeout: float
) -> dict[str, Any]:
    """Start the worker with ``n`` tasks waiting; the time from the first task's start (its stamp, so
    the worker's own boot is left out) until ``n`` are SUCCESS in the peer's store."""
    worker = peer.worker(stack, env, concurrency)
    deadline = time.time() + timeout
    done = 0
    while done < n:
        if time.time() > deadline:
            raise TimeoutError(f"{peer.name}: {done} of {n} done after {timeout} s")
        stack.check_alive()
        time.sleep(0.05)
        done = count(stack.database_url, peer.done_sql)
    seconds = time.time() - min(stamps_of(stamps).values())
    return {"tasks": n, "seconds": round(seconds, 3), "tasks_per_s": round(n / seconds, 1), "worker": worker}


def latency(base: str, peer: Peer, kind: str, n: int, stamps: Path) -> dict[str, Any]:
    """``n`` tasks one at a time: POST → start stamp, and POST → a terminal state read by GET."""
    sent: dict[str, float] = {}
    terminal: list[float] = []
    for _ in range(n):
        t0 = time.time()
        task = str(http("POST", f"{base}/tasks", peer.submit_body(kind))[peer.id_field])
        sent[task] = t0
        while not peer.done(http("GET", f"{base}/tasks/{task}")):
            time.sleep(0.002)
        terminal.append((time.time() - t0) * 1000)
    started = stamps_of(stamps)
    start = [(started[t] - t0) * 1000 for t, t0 in sent.items() if t in started]
    if len(start) != n:
        raise RuntimeError(f"{peer.name}: {len(start)} start stamps for {n} tasks")
    return {
        "submit_to_start_ms": {"p50": round(bk.percentile(start, 50), 1), "p99": round(bk.percentile(start, 99), 1)},
        "submit_to_terminal_ms": {
            "p50": round(bk.percentile(terminal, 50), 1),
            "p99": round(bk.percentile(terminal, 99), 1),
        },
    }


def measure_peer(peer: Peer, args: argparse.Namespace) -> dict[str, Any]:
    bk.log(f"--- {peer.name}")
    with tempfile.TemporaryDirectory() as tmp, bk.Stack(fsync=True, appendonly=True) as stack:
        stamps = Path(tmp)
        env = peer.env_for(stack, stamps)
        peer.prepare(stack, env, args.concurrency)
        port = bk.free_port()
        api = peer.api(stack, env, port)
        base = f"http://127.0.0.1:{port}"
        lua = (
            f"wrk.method = \"POST\"\nwrk.body = '{peer.submit_body('noop')}'\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
        warm = bk.run_wrk(f"{base}/tasks", 1, args.connections, 1, lua)  # its tasks drain below too
        pg = [stack.pg.proc.pid]
        with bk.CpuMeter({"postgres": pg, "api": [api.pid]}) as submit_cpu:
            wrk = bk.run_wrk(f"{base}/tasks", args.submit_seconds, args.connections, 1, lua)
        for burst in (warm, wrk):
            if burst["non_2xx_3xx"] or burst["socket_errors"]:
                bad = f"{burst['non_2xx_3xx']} non-2xx, {burst['socket_errors']} socket errors"
                raise RuntimeError(f"{peer.name}: {bad}")
        # wrk counts the answers it read; a request cut off at the end may still have made a task, so the
        # drain waits for at least this many.
        n = warm["requests"] + wrk["requests"]
        with bk.CpuMeter({"postgres": pg}) as drain_cpu:
            drained = drain(stack, peer, env, n, args.concurrency, stamps, args.timeout)
        worker = drained.pop("worker")
        # PostgreSQL's CPU per task: the submit burst's over its tasks, plus the drain's over all it drained.
        pg_submit = submit_cpu.result["postgres"] * submit_cpu.elapsed / max(1, wrk["requests"])
        pg_drain = drain_cpu.result["postgres"] * drain_cpu.elapsed / drained["tasks"]
        result: dict[str, Any] = {
            "durable": peer.durable,
            "submit_per_s": round(wrk["rps"], 1),
            "submit_p99_ms": round(wrk["p99_us"] / 1000, 1),
            "drain": drained,
            "postgres_cpu_ms_per_task": round((pg_submit + pg_drain) * 1000, 3),
            "api_cpu_cores_during_submit": submit_cpu.result["api"],
        }
        for kind in ("noop", "sleep"):
            for old in stamps.glob("*.txt"):
                old.unlink()
            result[f"latency_{kind}"] = latency(base, peer, kind, args.latency, stamps)
        stack.stop(worker)
        bk.log(f"{peer.name}: {json.dumps(result)}")
        return result


def measure_raw_celery(args: argparse.Namespace) -> dict[str, Any]:
    """Celery alone (local/bench/raw_celery_app.py): send_task in this process, an INCR per task."""
    import drain as drain_bench

    bk.log("--- raw_celery")
    with bk.Stack(fsync=True, appendonly=True) as stack:
        bk.raw_celery_worker(stack, args.concurrency)
        drain_bench.run_raw(4 * args.concurrency, stack.redis_url, 60)  # warm-up
        n = max(200, int(args.submit_seconds * 1000))
        res = drain_bench.run_raw(n, stack.redis_url, args.timeout)
    return {
        "durable": False,
        "submit_per_s": round(n / res["submit_seconds"], 1),
        "drain": {"tasks": n, "seconds": round(res["seconds"], 3), "tasks_per_s": round(res["tasks_per_s"], 1)},
        "note": "send_task in-process while the worker runs; no HTTP, no result store, no PostgreSQL",
    }


COLUMNS = [
    ("submit req/s", lambda r: r["submit_per_s"], True),
    ("drain tasks/s", lambda r: r["drain"]["tasks_per_s"], True),
    ("submit→start p50 ms", lambda r: r["latency_noop"]["submit_to_start_ms"]["p50"], False),
    ("submit→start p99 ms", lambda r: r["latency_noop"]["submit_to_start_ms"]["p99"], False),
    ("submit→terminal p50 ms", lambda r: r["latency_noop"]["submit_to_terminal_ms"]["p50"], False),
    ("submit→terminal p99 ms", lambda r: r["latency_noop"]["submit_to_terminal_ms"]["p99"], False),
    ("100 ms task: submit→terminal p50 ms", lambda r: r["latency_sleep"]["submit_to_terminal_ms"]["p50"], False),
    ("PostgreSQL CPU ms/task", lambda r: r["postgres_cpu_ms_per_task"], False),
]


def summarize(results: dict[str, Any]) -> None:
    peers = results["peers"]
    durable = [name for name, r in peers.items() if r["durable"]]
    print()
    print("| figure | " + " | ".join(peers) + " |")
    print("|---|" + "---|" * len(peers))
    for title, get, higher in COLUMNS:
        cells = []
        values = {name: get(r) for name, r in peers.items() if _has(get, r)}
        best = (max if higher else min)((values[n] for n in durable if n in values), default=None)
        for name in peers:
            if name not in values:
                cells.append("—")
            else:
                mark = "**" if values[name] == best and name in durable else ""
                cells.append(f"{mark}{values[name]:,.1f}{mark}")
        print(f"| {title} | " + " | ".join(cells) + " |")
    first = {title: _leader(peers, durable, get, higher) for title, get, higher in COLUMNS}
    results["durable_leader"] = first
    print("\nFirst among the durable peers: " + "; ".join(f"{t}: {n}" for t, n in first.items()))


def _has(get: Any, r: dict[str, Any]) -> bool:
    try:
        get(r)
    except KeyError:
        return False
    return True


def _leader(peers: dict[str, Any], durable: list[str], get: Any, higher: bool) -> str | None:
    values = {n: get(peers[n]) for n in durable if _has(get, peers[n])}
    return (max if higher else min)(values, key=values.__getitem__) if values else None


def plot(results: dict[str, Any]) -> None:
    plt = bk.pyplot()
    if plt is None:
        return
    peers = results["peers"]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    panels = [
        ("submit req/s (higher is better)", lambda r: r["submit_per_s"]),
        ("drain tasks/s (higher is better)", lambda r: r["drain"]["tasks_per_s"]),
        (
            "submit→terminal p50 ms, zero-work (lower is better)",
            lambda r: r["latency_noop"]["submit_to_terminal_ms"]["p50"],
        ),
        ("PostgreSQL CPU ms per task (lower is better)", lambda r: r["postgres_cpu_ms_per_task"]),
    ]
    for ax, (title, get) in zip(axes, panels, strict=True):
        names = [n for n, r in peers.items() if _has(get, r)]
        values = [get(peers[n]) for n in names]
        colors = ["#2a6fdb" if n == "tasklift" else "#7a7a7a" if peers[n]["durable"] else "#bbbbbb" for n in names]
        ax.bar(names, values, color=colors)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.suptitle(f"tasklift and its peers, one run on {results['machine'].get('cpu', 'this machine')}", fontsize=10)
    fig.tight_layout()
    bk.save_figure(fig, "bench-peers")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", default="tasklift,celery_pg,procrastinate,dbos,raw_celery")
    parser.add_argument("--submit-seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=2, help="tasks at once per worker process")
    parser.add_argument("--latency", type=int, default=100, help="tasks timed one at a time, per kind")
    parser.add_argument("--timeout", type=float, default=600, help="longest drain")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 s of submits, 10 timed tasks")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--output", type=Path, help="write the results JSON here (default: local/bench/results)")
    args = parser.parse_args()
    if args.quick:
        args.submit_seconds, args.latency = 1.0, 10
    bk.require_wrk()
    bk.install_signal_handlers()
    bk.raise_nofile(4096)
    results: dict[str, Any] = {
        "benchmark": "peers",
        "machine": bk.machine_info(),
        "git": bk.git_state(),
        "settings": {
            "postgres_fsync": True,
            "redis_appendonly": True,
            "api": "1 uvicorn process, httptools + uvloop",
            "worker_concurrency": args.concurrency,
            "wrk": f"-t1 -c{args.connections}, 1 s warm-up + {args.submit_seconds:g} s",
            "latency_tasks": args.latency,
            "poll_interval_ms": 2,
        },
        "peers": {},
    }
    for name in args.peers.split(","):
        results["peers"][name] = measure_raw_celery(args) if name == "raw_celery" else measure_peer(PEERS[name], args)
    summarize(results)
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))
    else:
        bk.save_results("peers", results)
    if not args.no_plot:
        plot(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
