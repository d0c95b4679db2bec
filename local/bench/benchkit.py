"""What every benchmark script shares: a throw-away stack, a tiny HTTP client, and measuring aids.

:class:`Stack` starts embedded PostgreSQL and Redis in a temporary folder, migrates, and runs
tasklift's processes (API, worker, reaper) as children that it always stops again: on normal
exit, on an exception, on Ctrl-C and on SIGTERM (each child also gets a parent-death signal, so
nothing outlives a ``kill -9`` of the script either). Everything listens on 127.0.0.1 only.

Not a test module and not part of the package: the scripts next to it import it by file location.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parents[1]
RESULTS_DIR = BENCH_DIR / "results"
IMAGES_DIR = REPO / "docs" / "images"
PYTHON = sys.executable


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- signals: Ctrl-C and SIGTERM both unwind through the `finally` that stops the stack -----------


def install_signal_handlers() -> None:
    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


def raise_nofile(wanted: int) -> int:
    """Raise the open-file limit of this process (and so of its children) to ``wanted`` if allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- the stack ------------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_for_output(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if not self.alive():
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.output()[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} did not print {text!r} within {timeout} s:\n{self.output()[-3000:]}")

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM to the child's whole process group (a Celery worker's pool children too), then SIGKILL."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        # Whatever is left in the group (orphaned pool children) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


@dataclass
class Stack:
    """Embedded PostgreSQL + Redis in a temp dir, migrated, plus tasklift child processes."""

    fsync: bool = True
    appendonly: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    keep: bool = False
    workdir: Path = field(init=False)
    env: dict[str, str] = field(init=False, default_factory=dict)
    procs: list[Proc] = field(init=False, default_factory=list)
    pg: Any = field(init=False, default=None)
    redis: Any = field(init=False, default=None)

    def __enter__(self) -> Stack:
        self.workdir = Path(tempfile.mkdtemp(prefix="tasklift-bench-"))
        try:
            self.start_engines()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_engines(self) -> None:
        from tasklift.embedded import EmbeddedPostgres, EmbeddedRedis

        log(f"starting PostgreSQL and Redis in {self.workdir}")
        self.pg = EmbeddedPostgres(self.workdir / "postgres", fsync=self.fsync)
        self.redis = EmbeddedRedis(self.workdir / "redis", appendonly=self.appendonly)
        pg_url = self.pg.start()
        redis_url = self.redis.start()
        self.env = {
            **os.environ,
            "TASKLIFT_DATABASE_URL": pg_url,
            "TASKLIFT_REDIS_URL": redis_url,
            "TASKLIFT_DATA_DIR": str(self.workdir / "data"),
            "TASKLIFT_TASK_MODULES": json.dumps(["bench_tasks"]),
            "TASKLIFT_ANONYMOUS": "true",
            "TASKLIFT_FLAKY_FAILURE_RATE": "0",
            "TASKLIFT_SOFT_SHUTDOWN_SECONDS": "2",
            "TASKLIFT_LOG_LEVEL": "WARNING",
            "PYTHONPATH": os.pathsep.join([str(BENCH_DIR), str(REPO / "shared")]),
            **self.extra_env,
        }
        out = subprocess.run(
            [PYTHON, "-m", "tasklift.cli", "migrate"], env=self.env, capture_output=True, text=True, timeout=120
        )
        if out.returncode != 0:
            raise RuntimeError(f"tasklift migrate failed:\n{out.stdout}\n{out.stderr}")
        log("migrated")

    @property
    def database_url(self) -> str:
        return self.env["TASKLIFT_DATABASE_URL"]

    @property
    def redis_url(self) -> str:
        return self.env["TASKLIFT_REDIS_URL"]

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Proc:
        """Start ``args`` as a supervised child (own process group, parent-death signal)."""
        from tasklift.embedded import spawn

        log_path = self.workdir / "logs" / f"{name}-{len(self.procs)}.log"
        popen = spawn(args, log_path=log_path, env={**self.env, **(env or {})})
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def tasklift(self, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        return self.spawn(name, [PYTHON, "-m", "tasklift.cli", *args], env)

    def api(self, port: int, env: dict[str, str] | None = None) -> Proc:
        proc = self.tasklift("api", "api", "--port", str(port), env=env)
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        return proc

    def worker(self, concurrency: int, queues: str | None = None, env: dict[str, str] | None = None) -> Proc:
        args = ["worker", "--concurrency", str(concurrency), "--pool", "prefork"]
        if queues:
            args += ["--queues", queues]
        return self.tasklift("worker", *args, env=env)

    def reaper(self) -> Proc:
        return self.tasklift("reaper", "reaper")

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def check_alive(self) -> None:
        for proc in self.procs:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.output()[-3000:]}")

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
        for engine in (self.redis, self.pg):
            if engine is not None:
                with contextlib.suppress(Exception):
                    engine.stop()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            log(f"kept {self.workdir}")


#: How every benchmark runs uvicorn: one process, httptools + uvloop, no access log (add the app and port).
UVICORN_FLAGS = ["--host", "127.0.0.1", "--http", "httptools", "--loop", "uvloop", "--no-access-log",
                 "--log-level", "warning"]  # fmt: skip


def raw_celery_worker(stack: Stack, concurrency: int, log_level: str = "WARNING") -> Proc:
    """The drain baseline's worker (local/bench/raw_celery_app.py) on the stack's Redis."""
    args = [PYTHON, "-m", "celery", "-A", "raw_celery_app", "worker", "--queues", "bench.raw",
            "--concurrency", str(concurrency), "--pool", "prefork", "--loglevel", log_level,
            "--hostname", "raw@%h", "--without-gossip", "--without-mingle"]  # fmt: skip
    return stack.spawn("raw-worker", args, env={"BENCH_REDIS_URL": stack.redis_url})


def wait_http(url: str, proc: Proc | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.output()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - 127.0.0.1
            if resp.status < 500:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def free_port() -> int:
    from tasklift.embedded import free_port as _free

    return _free()


def pg_sessions(url: str) -> int:
    """PostgreSQL's count of sessions ever opened on the database (pg_stat_database.sessions, PG 14+).

    Its delta over a measurement is how many new connections the stack opened (pool churn); the
    query's own connection counts one, which the caller subtracts.
    """
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return int(
                conn.exec_driver_sql(
                    "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
                ).scalar_one()
            )
    finally:
        engine.dispose()


# --- an OTLP/HTTP sink: "export on" without a collector -------------------------------------------


class OtlpSink:
    """A tiny OTLP/HTTP receiver on 127.0.0.1 that accepts ``/v1/traces`` and ``/v1/metrics`` and counts.

    The exporters do their real work (batching, protobuf encoding, one HTTP POST per batch); the sink
    only decodes each trace batch to count its spans and answers 200 at once, so what a benchmark
    sees is the exporting process's cost, not a collector's. Use it as a context manager; ``env``
    is what a process needs to export to it (short metric interval: metrics are exported too).
    """

    def __init__(self) -> None:
        self.spans = 0
        self.trace_batches = 0
        self.metric_batches = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> OtlpSink:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    request = ExportTraceServiceRequest.FromString(body)
                    count = sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)
                    with sink._lock:
                        sink.spans += count
                        sink.trace_batches += 1
                elif self.path == "/v1/metrics":
                    with sink._lock:
                        sink.metric_batches += 1
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's naming
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="otlp-sink", daemon=True).start()
        log(f"OTLP sink on {self.url}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def env(self) -> dict[str, str]:
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.url, "OTEL_METRIC_EXPORT_INTERVAL": "5000"}

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"spans": self.spans, "trace_batches": self.trace_batches, "metric_batches": self.metric_batches}


def otlp_sink(enabled: bool) -> contextlib.AbstractContextManager[OtlpSink | None]:
    """An :class:`OtlpSink` when ``enabled`` (a script's ``--otlp``), else nothing."""
    return OtlpSink() if enabled else contextlib.nullcontext()


# --- a tiny HTTP/1.1 client (keep-alive), cheap enough not to steal the server's CPU ---------------


class HttpConn:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1 (no TLS, no redirects: a load generator)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> HttpConn:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def send_head(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> None:
        if self.writer is None:
            await self.connect()
        assert self.writer is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        for key, value in (headers or {}).items():
            lines.append(f"{key}: {value}")
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))

    async def read_head(self) -> tuple[int, dict[str, str]]:
        assert self.reader is not None
        raw = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = raw.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Send one request on this connection and read the whole (Content-Length or chunked) answer."""
        await self.send_head(method, path, body)
        status, headers = await self.read_head()
        assert self.reader is not None
        if "content-length" in headers:
            data = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            data = b"".join([chunk async for chunk in self.chunks()])
        else:
            data = b""
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, data

    async def chunks(self):  # type: ignore[no-untyped-def]
        """The chunks of a chunked body until the last (empty) one."""
        assert self.reader is not None
        while True:
            size_line = await self.reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return
            data = await self.reader.readexactly(size + 2)
            yield data[:-2]


# --- numbers --------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (0..100), linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    data = sorted(values)
    k = (len(data) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def save_results(name: str, results: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    log(f"results written to {path.relative_to(REPO)}")
    return path


def machine_info() -> dict[str, Any]:
    import platform

    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        **git_state(),
    }


def git_state() -> dict[str, Any]:
    """The commit measured, and how many files of shared/ differed from it (work in progress)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = [line for line in git("status", "--porcelain", "--", "shared").splitlines() if line.strip()]
    return {"git_commit": git("rev-parse", "--short", "HEAD"), "shared_uncommitted_files": len(dirty)}


class CpuMeter:
    """CPU seconds used by groups of processes over an interval (e.g. API vs PostgreSQL vs Redis)."""

    def __init__(self, groups: dict[str, list[int]], flat: frozenset[str] = frozenset({"bench"})) -> None:
        self.groups = groups
        self.flat = flat  #: groups counted without their children (the script itself: its children are the stack)
        self.start: dict[str, float] = {}
        self.t0 = 0.0

    def _cpu_of(self, name: str) -> float:
        return self._cpu(self.groups[name], recursive=name not in self.flat)

    @staticmethod
    def _cpu(root_pids: list[int], recursive: bool = True) -> float:
        total = 0.0
        seen: set[int] = set()
        for pid in root_pids:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                for proc in [root, *(root.children(recursive=True) if recursive else [])]:
                    if proc.pid in seen:
                        continue
                    seen.add(proc.pid)
                    with contextlib.suppress(psutil.Error):
                        times = proc.cpu_times()
                        total += times.user + times.system
                        if recursive:  # children that already exited (e.g. PostgreSQL backends of closed connections)
                            total += times.children_user + times.children_system
        return total

    @staticmethod
    def _busy() -> float:
        times = psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    def __enter__(self) -> CpuMeter:
        self.t0 = time.monotonic()
        self.start = {name: self._cpu_of(name) for name in self.groups}
        self.busy0 = self._busy()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.monotonic() - self.t0
        self.result = {name: round((self._cpu_of(name) - self.start[name]) / self.elapsed, 3) for name in self.groups}
        machine = (self._busy() - self.busy0) / self.elapsed
        self.result["other"] = round(max(0.0, machine - sum(self.result.values())), 3)
        self.result["machine"] = round(machine, 3)

    def describe(self) -> str:
        return self.describe_result(self.result)

    @staticmethod
    def describe_result(result: dict[str, float]) -> str:
        """E.g. ``api 0.98, postgres 0.41, …`` in cores (2.0 = both cores busy)."""
        return ", ".join(f"{name} {share:.2f}" for name, share in result.items())


# --- wrk ------------------------------------------------------------------------------------------


WRK_DONE_LUA = """
done = function(summary, latency, requests)
  io.write(string.format(
    "WRKJSON {\\"requests\\":%d,\\"duration_us\\":%d,\\"status_errors\\":%d,\\"connect_errors\\":%d,"
    .. "\\"read_errors\\":%d,\\"write_errors\\":%d,\\"timeouts\\":%d,"
    .. "\\"p50_us\\":%d,\\"p90_us\\":%d,\\"p99_us\\":%d}\\n",
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        print(
            "wrk is not installed: this benchmark uses it as the HTTP load generator.\n"
            "Install it with:  apt-get update && apt-get install -y wrk   (Debian/Ubuntu)\n"
            "                  brew install wrk                           (macOS)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return path


def run_wrk(
    url: str,
    seconds: float,
    connections: int,
    threads: int,
    lua: str | None = None,
    meter_groups: dict[str, list[int]] | None = None,
) -> dict[str, Any]:
    """Run wrk once; returns requests/s, latency percentiles, error counts (incl. non-2xx/3xx) and,
    with ``meter_groups``, the CPU (in cores) each group and wrk itself used meanwhile."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write((lua or "") + "\n" + WRK_DONE_LUA)
        script_path = script.name
    meter = None
    try:
        cmd = [
            require_wrk(),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "10s",
            "-s",
            script_path,
            url,
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            if meter_groups is not None:
                meter = CpuMeter({**meter_groups, "wrk": [proc.pid]}).__enter__()
                time.sleep(max(0.0, seconds - 0.3))  # wrk's own CPU is only visible while it lives
                meter.__exit__(None, None, None)
            stdout, stderr = proc.communicate(timeout=seconds + 60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        os.unlink(script_path)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{stdout}\n{stderr}")
    match = re.search(r"^WRKJSON (.*)$", stdout, re.M)
    if not match:
        raise RuntimeError(f"unexpected wrk output:\n{stdout}")
    stats: dict[str, Any] = json.loads(match.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", stdout)
    stats["non_2xx_3xx"] = int(non2xx.group(1)) if non2xx else 0
    stats["rps"] = stats["requests"] / (stats["duration_us"] / 1e6)
    stats["socket_errors"] = sum(stats[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    if meter is not None:
        stats["cpu_cores"] = meter.result
    return stats


def machine_busy(seconds: float = 1.0) -> float:
    """Cores busy on the whole machine over ``seconds`` (2.0 = both cores)."""
    busy0 = CpuMeter._busy()
    time.sleep(seconds)
    return (CpuMeter._busy() - busy0) / seconds


def wait_for_quiet(threshold: float = 0.25, max_wait: float = 60.0) -> float:
    """Wait (at most ``max_wait`` s) until the machine is nearly idle before a measurement.

    The benchmark's own idle processes cost a few percent; anything above ``threshold`` cores is
    somebody else's load (this machine is shared), which would distort the figures. Returns the
    last reading; the caller records it.
    """
    deadline = time.monotonic() + max_wait
    busy = machine_busy()
    waited = False
    while busy > threshold and time.monotonic() < deadline:
        if not waited:
            log(f"machine busy ({busy:.2f} cores used by other processes); waiting up to {max_wait:g} s for quiet")
            waited = True
        busy = machine_busy()
    if busy > threshold:
        log(f"still {busy:.2f} cores busy elsewhere; measuring anyway (recorded with the result)")
    return round(busy, 3)


# --- py-spy -------------------------------------------------------------------------------------


def pyspy_path() -> str | None:
    here = Path(PYTHON).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def pyspy_record(
    pid: int, seconds: float, out: Path, rate: int = 200, gil: bool = False
) -> subprocess.Popen[bytes] | None:
    """Start ``py-spy record`` (raw collapsed stacks) on ``pid`` for ``seconds``; returns the child or None."""
    exe = pyspy_path()
    if exe is None:
        log("py-spy is not installed (pip install 'tasklift[bench]'): no profile")
        return None
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(rate),
           "--format", "raw", "--output", str(out), "--nonblocking", "--threads"]  # fmt: skip
    if gil:
        cmd.append("--gil")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

#: A profile focus entry: (label, file path fragment, function or Class.method name suffix).
Focus = tuple[str, str, str]


def _package(file: str) -> str:
    """Which library a frame belongs to; py-spy names files relative to sys.path (sqlalchemy/engine/x.py)."""
    parts = file.replace("\\", "/").split("/")
    if file.startswith("<") or len(parts) == 1:
        return "stdlib " + parts[-1].removesuffix(".py")
    if parts[0] == "tasklift":
        return "tasklift." + parts[1].removesuffix(".py")
    if parts[0] in {"asyncio", "json", "concurrent", "logging", "email", "http", "urllib", "importlib"}:
        return "stdlib " + parts[0]
    return parts[0]


def summarize_profile(path: Path, focus: list[Focus], top: int = 12) -> dict[str, Any]:
    """py-spy raw output → share of samples by thread, by leaf package (self time) and inside ``focus`` frames."""
    total = 0
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        total += count
        head = frames[0]
        if head.startswith(("thread", "process")):
            name = head.split(":", 1)[-1].strip()
            threads["event loop (MainThread)" if name == "MainThread" else re.sub(r"\d+", "N", name) or "?"] += count
            frames = frames[1:]
        parsed = [m for m in (_FRAME.match(f.strip()) for f in frames) if m]
        if parsed:
            leaf[_package(parsed[-1].group("file"))] += count
        hit: set[str] = set()
        for m in parsed:
            func, file = m.group("func"), m.group("file")
            for label, file_part, name in focus:
                if label not in hit and file_part in file and (func == name or func.endswith("." + name)):
                    inclusive[label] += count
                    hit.add(label)

    def share(c: int) -> float:
        return round(100.0 * c / total, 1) if total else 0.0

    return {
        "samples": total,
        "by_thread_pct": {k: share(v) for k, v in threads.most_common()},
        "self_by_package_pct": {k: share(v) for k, v in leaf.most_common(top)},
        "inclusive_pct": {label: share(inclusive[label]) for label, _, _ in focus if inclusive[label]},
    }


def print_profile(title: str, summary: dict[str, Any]) -> None:
    print(f"\n  profile: {title} ({summary['samples']} samples)")
    print("    by thread:")
    for name, pct in summary["by_thread_pct"].items():
        print(f"      {pct:5.1f}%  {name}")
    print("    self time by package (leaf frame):")
    for name, pct in summary["self_by_package_pct"].items():
        print(f"      {pct:5.1f}%  {name}")
    print("    inclusive time in (a frame may be inside another):")
    for name, pct in summary["inclusive_pct"].items():
        print(f"      {pct:5.1f}%  {name}")


# --- plotting -----------------------------------------------------------------------------------


def pyplot():  # type: ignore[no-untyped-def]
    """matplotlib's pyplot with the file-only backend, or None (with a hint) if it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (pip install 'tasklift[bench]'): no plot")
        return None
    return plt


def save_figure(fig: Any, name: str) -> None:
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    path = IMAGES_DIR / name
    fig.savefig(path, dpi=110, bbox_inches="tight")
    log(f"plot written to {path.relative_to(REPO)}")


def verdict(ratio: float, target: float, higher_is_better: bool = True) -> str:
    ok = ratio >= target if higher_is_better else ratio <= target
    return "met" if ok else "MISSED"
