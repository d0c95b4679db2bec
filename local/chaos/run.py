"""Chaos run: a randomised mix of real faults against a local tasklift stack, with Jepsen-style counts.

    .venv/bin/python local/chaos/run.py --duration 600

It starts embedded PostgreSQL and Redis (Redis without persistence, the harder case), two worker
pools, the reaper and the API, then for ``--duration`` seconds keeps clients submitting tasks and
following their streams while it injects, at random: SIGKILL of a worker pool child, SIGKILL of a
whole worker (restarted), a Redis restart (queued messages lost), Redis down for a while, a
PostgreSQL restart, an API restart, and cancellations. Then it lets the system settle and prints
accepted / terminal / lost / duplicated effects and stream anomalies. Exit status 1 if anything
was lost or duplicated. Everything runs on 127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from tasklift.embedded import EmbeddedPostgres, EmbeddedRedis, free_port, spawn, stop_process, wait_for_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
console = Console()


@dataclass
class Stack:
    """The processes under test."""

    work: Path
    pg: EmbeddedPostgres
    redis: EmbeddedRedis
    api_port: int
    env: dict[str, str] = field(default_factory=dict)
    workers: list = field(default_factory=list)
    others: dict = field(default_factory=dict)

    def start_process(self, name: str, *args: str):  # type: ignore[no-untyped-def]
        return spawn([sys.executable, "-m", "tasklift.cli", *args], log_path=self.work / f"{name}.log", env=self.env)

    def start_worker(self) -> None:
        self.workers.append(self.start_process(f"worker{len(self.workers)}", "worker", "--concurrency", "2"))

    def start_api(self) -> None:
        self.others["api"] = self.start_process("api", "api", "--port", str(self.api_port))
        wait_for_port(self.api_port, 30)

    def stop_all(self) -> None:
        for proc in [self.others.get("api"), self.others.get("reaper"), *self.workers]:
            stop_process(proc, signal.SIGTERM, timeout=20)
        self.redis.stop()
        self.pg.stop()


@dataclass
class Books:
    """What the clients saw."""

    accepted: list[str] = field(default_factory=list)
    cancelled: set[str] = field(default_factory=set)
    rejected: Counter = field(default_factory=Counter)
    stream_anomalies: list[str] = field(default_factory=list)
    streams_finished: int = 0
    faults: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def boot(work: Path) -> Stack:
    pg = EmbeddedPostgres(work / "postgres")
    redis = EmbeddedRedis(work / "redis", appendonly=False)
    stack = Stack(work, pg, redis, free_port())
    stack.env = {
        **os.environ,
        "TASKLIFT_DATABASE_URL": pg.start(),
        "TASKLIFT_REDIS_URL": redis.start(),
        "TASKLIFT_TASK_MODULES": '["chaos_tasks"]',
        "TASKLIFT_LEASE_SECONDS": "5",
        "TASKLIFT_HEARTBEAT_SECONDS": "1",
        "TASKLIFT_REAPER_INTERVAL_SECONDS": "1",
        "TASKLIFT_DISPATCH_GRACE_SECONDS": "2",
        "TASKLIFT_CANCEL_GRACE_SECONDS": "3",
        "TASKLIFT_SOFT_SHUTDOWN_SECONDS": "5",
        "TASKLIFT_MAX_REDISPATCHES": "20",
        "TASKLIFT_ANONYMOUS": "true",
        "TASKLIFT_LOG_FORMAT": "console",
        "PYTHONPATH": f"{HERE}:{REPO / 'shared'}",
    }
    os.environ.update({k: stack.env[k] for k in ("TASKLIFT_DATABASE_URL", "TASKLIFT_REDIS_URL")})
    from tasklift.store.migrate import upgrade

    upgrade()
    with sa.create_engine(stack.env["TASKLIFT_DATABASE_URL"]).begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS chaos_effects (task_id uuid NOT NULL, attempt int NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now())"
        )
    stack.start_worker()
    stack.start_worker()
    stack.others["reaper"] = stack.start_process("reaper", "reaper")
    stack.start_api()
    return stack


# --- faults ---------------------------------------------------------------------------------------


def kill_child(stack: Stack) -> str:
    worker = random.choice([w for w in stack.workers if w.poll() is None])
    children = psutil.Process(worker.pid).children()
    if not children:
        return "kill-child (no child)"
    random.choice(children).kill()
    return "kill-child"


def kill_worker(stack: Stack) -> str:
    live = [w for w in stack.workers if w.poll() is None]
    victim = random.choice(live)
    for proc in [*psutil.Process(victim.pid).children(recursive=True), psutil.Process(victim.pid)]:
        proc.kill()
    victim.wait(10)
    stack.workers.remove(victim)
    stack.start_worker()
    return "kill-worker"


def restart_redis(stack: Stack) -> str:
    stack.redis.stop()
    stack.redis.start()
    return "redis-restart"


def redis_outage(stack: Stack) -> str:
    stack.redis.stop()
    time.sleep(random.uniform(5, 15))
    stack.redis.start()
    return "redis-outage"


def restart_postgres(stack: Stack) -> str:
    stack.pg.stop()
    time.sleep(random.uniform(0.5, 3))
    stack.pg.start()
    return "postgres-restart"


def restart_api(stack: Stack) -> str:
    stop_process(stack.others["api"], signal.SIGTERM, timeout=15)
    stack.start_api()
    return "api-restart"


FAULTS = [kill_child, kill_child, kill_worker, restart_redis, redis_outage, restart_postgres, restart_api]


def inject(stack: Stack, books: Books, until: float) -> None:
    while time.monotonic() < until:
        time.sleep(random.uniform(8, 20))
        if time.monotonic() >= until:
            break
        fault = random.choice(FAULTS)
        try:
            name = fault(stack)
        except Exception as exc:  # noqa: BLE001 - a fault that could not be injected is reported
            name = f"{fault.__name__} failed: {exc}"
        books.faults[name] += 1
        console.print(f"[yellow]{time.strftime('%H:%M:%S')} fault:[/yellow] {name}")


# --- clients --------------------------------------------------------------------------------------


async def follow(base: str, task_id: str, books: Books, deadline: float) -> None:
    """Follow one stream like EventSource (reconnect with Last-Event-ID) until the server answers 204
    after the terminal event; every id must be larger than the one before."""
    last = None
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(10, read=60)) as http:
        while time.monotonic() < deadline:
            headers = {"Last-Event-ID": str(last)} if last is not None else {}
            try:
                async with http.stream("GET", f"/tasks/{task_id}/stream", headers=headers) as resp:
                    if resp.status_code == 204:
                        break
                    if resp.status_code != 200:
                        await asyncio.sleep(1)
                        continue
                    async for line in resp.aiter_lines():
                        if line.startswith("id: "):
                            seq = int(line[4:])
                            if last is not None and seq <= last:
                                books.stream_anomalies.append(f"{task_id}: id {seq} after {last}")
                            last = seq
            except (httpx.TransportError, httpx.HTTPStatusError):
                pass
            await asyncio.sleep(0.5)
    books.streams_finished += 1


async def clients(base: str, books: Books, until: float, settle: float) -> None:
    followers: list[asyncio.Task[None]] = []
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        while time.monotonic() < until:
            body = {"task_type": "chaos_effect", "seconds": round(random.uniform(0.2, 4), 2)}
            try:
                resp = await http.post("/tasks", json=body)
            except httpx.TransportError:
                books.rejected["unreachable"] += 1
                await asyncio.sleep(0.5)
                continue
            if resp.status_code == 202:
                task_id = resp.json()["task_id"]
                books.accepted.append(task_id)
                if random.random() < 0.2:
                    followers.append(asyncio.create_task(follow(base, task_id, books, until + settle)))
                if random.random() < 0.05:
                    await asyncio.sleep(random.uniform(0, 1))
                    try:
                        cancel = await http.delete(f"/tasks/{task_id}")
                        if cancel.status_code in (202, 204):
                            books.cancelled.add(task_id)
                    except httpx.TransportError:
                        pass
            else:
                books.rejected[str(resp.status_code)] += 1
            await asyncio.sleep(random.uniform(0.05, 0.3))
    await asyncio.gather(*followers, return_exceptions=True)


# --- verdict --------------------------------------------------------------------------------------


def settle(stack: Stack, books: Books, timeout: float) -> dict[str, int]:
    engine = sa.create_engine(stack.env["TASKLIFT_DATABASE_URL"], pool_pre_ping=True)
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            rows = dict(conn.execute(
                sa.text("SELECT id::text, status FROM tasks WHERE id::text = ANY(:ids)"), {"ids": books.accepted}
            ).all())  # fmt: skip
            effects = dict(conn.execute(sa.text("SELECT task_id::text, count(*) FROM chaos_effects GROUP BY 1")).all())
        terminal = sum(rows.get(t) in ("SUCCESS", "FAILED", "CANCELLED") for t in books.accepted)
        if terminal == len(books.accepted) or time.monotonic() > deadline:
            break
        time.sleep(2)
    engine.dispose()
    statuses = Counter(rows.get(t, "MISSING") for t in books.accepted)
    lost = sum(
        rows.get(t) not in ("SUCCESS", "FAILED", "CANCELLED") or (rows.get(t) == "SUCCESS" and not effects.get(t))
        for t in books.accepted
    )
    return {
        "accepted": len(books.accepted),
        "terminal": terminal,
        "lost": lost,
        "duplicated effects": sum(max(0, n - 1) for n in effects.values()),
        "cancelled but effect written": sum(
            rows.get(t) == "CANCELLED" and bool(effects.get(t)) for t in books.accepted
        ),
        **{f"status {k}": v for k, v in sorted(statuses.items())},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600, help="seconds of chaos (default 600)")
    parser.add_argument("--settle", type=float, default=180, help="seconds to wait for quiescence afterwards")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    random.seed(seed)
    work = Path(tempfile.mkdtemp(prefix="tasklift-chaos-"))
    console.print(f"chaos run: {args.duration:.0f} s, seed {seed}, logs in {work}")
    stack = boot(work)
    books = Books()
    until = time.monotonic() + args.duration
    try:
        # Faults run in the main thread: processes they (re)start get a parent-death signal tied to
        # the thread that started them. The clients run in a thread of their own.
        base = f"http://127.0.0.1:{stack.api_port}"
        client_thread = threading.Thread(target=lambda: asyncio.run(clients(base, books, until, args.settle)))
        client_thread.start()
        inject(stack, books, until)
        client_thread.join()
        for worker in list(stack.workers):  # make sure a full pool is there to finish the backlog
            if worker.poll() is not None:
                stack.workers.remove(worker)
                stack.start_worker()
        counts = settle(stack, books, args.settle)
    finally:
        stack.stop_all()
    table = Table(title=f"tasklift chaos — {args.duration:.0f} s, seed {seed}")
    table.add_column("count")
    table.add_column("value", justify="right")
    for name, value in counts.items():
        table.add_row(name, str(value))
    table.add_row("rejected submits", str(dict(books.rejected)))
    table.add_row("streams followed to the end", str(books.streams_finished))
    table.add_row("stream id anomalies", str(len(books.stream_anomalies)))
    table.add_row("faults injected", ", ".join(f"{k}×{v}" for k, v in sorted(books.faults.items())))
    console.print(table)
    bad = counts["lost"] or counts["duplicated effects"] or books.stream_anomalies
    console.print("[red]FAILED[/red]" if bad else "[green]lost = 0, duplicated = 0[/green]")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
