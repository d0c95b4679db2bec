"""A real PgBouncer (Debian's ``pgbouncer``) in transaction-pooling mode in front of the tests' PostgreSQL.

Transaction mode is what a deployment that pools many API and worker processes onto few
PostgreSQL connections runs, and the strictest: a client holds a server connection only for one
transaction, so nothing may rely on session state (prepared statements before PgBouncer 1.21,
advisory locks, ``SET``, ``LISTEN``). tasklift runs there with ``TASKLIFT_DB_STATEMENT_CACHE_SIZE=0``
(docs/sizing.md). Every database of the server is reachable through it by the same name.

PgBouncer refuses to run as root; as root it is started as the unprivileged user the embedded
PostgreSQL already runs as (``-u``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from tasklift.embedded import PG_SYSTEM_USER, free_port, spawn, stop_process, wait_for_port

BINARY_HINT = "apt-get install pgbouncer (Debian); .ci/run installs it"


def binary() -> str | None:
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")


class PgBouncer:
    """``PgBouncer(pg_port).start()``; :meth:`url` rewrites a database URL to go through it."""

    def __init__(self, pg_port: int, *, pool_size: int = 4) -> None:
        self.pg_port = pg_port
        self.pool_size = pool_size
        self.port = 0
        self.dir = Path(tempfile.mkdtemp(prefix="tasklift-pgbouncer-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20) -> PgBouncer:
        exe = binary()
        if exe is None:
            raise RuntimeError(f"pgbouncer is not installed: {BINARY_HINT}")
        self.port = free_port()
        (self.dir / "userlist.txt").write_text('"postgres" ""\n')
        (self.dir / "pgbouncer.ini").write_text(
            "\n".join(
                [
                    "[databases]",
                    f"* = host=127.0.0.1 port={self.pg_port}",
                    "[pgbouncer]",
                    "listen_addr = 127.0.0.1",
                    f"listen_port = {self.port}",
                    f"unix_socket_dir = {self.dir}",
                    "auth_type = trust",
                    f"auth_file = {self.dir / 'userlist.txt'}",
                    "admin_users = postgres",
                    "pool_mode = transaction",
                    f"default_pool_size = {self.pool_size}",
                    "max_client_conn = 500",
                    # asyncpg and psycopg send these at connect; PgBouncer passes them on.
                    "ignore_startup_parameters = extra_float_digits",
                    "server_reset_query =",
                    # A client waits at most this long for a server connection (PostgreSQL down):
                    # then it gets an error, which the API answers as 503 (docs/sizing.md).
                    "query_wait_timeout = 3",
                    "server_login_retry = 0",  # and retries a failed server login at once
                    "stats_period = 1",  # SHOW STATS totals within a second
                    "log_connections = 0",
                    "log_disconnections = 0",
                    f"pidfile = {self.dir / 'pgbouncer.pid'}",
                ]
            )
            + "\n"
        )
        args = [exe, str(self.dir / "pgbouncer.ini")]
        user = None
        if os.geteuid() == 0:
            import pwd

            user = pwd.getpwnam(PG_SYSTEM_USER)
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            for path in self.dir.iterdir():
                os.chown(path, user.pw_uid, user.pw_gid)
            self.dir.chmod(0o755)
        self.proc = spawn(args, log_path=self.dir / "pgbouncer.log", user=user, death_signal=signal.SIGTERM)
        try:
            wait_for_port(self.port, timeout, self.proc)
        except Exception as exc:
            raise RuntimeError(f"pgbouncer did not start: {self.log()[-2000:]}") from exc
        return self

    def url(self, database_url: str) -> str:
        """``database_url`` (of the PostgreSQL behind) through this PgBouncer."""
        return database_url.replace(f"127.0.0.1:{self.pg_port}/", f"127.0.0.1:{self.port}/", 1)

    def stats(self, database: str) -> dict[str, int]:
        """``SHOW STATS`` of one database from the admin console: transactions, queries served."""
        deadline = time.monotonic() + 5
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} dbname=pgbouncer user=postgres", autocommit=True
        ) as conn:
            while True:
                cur = conn.execute("SHOW STATS")
                names = [c.name for c in cur.description or []]
                for row in cur.fetchall():
                    item = dict(zip(names, row, strict=True))
                    if item["database"] == database:
                        return {k: int(v) for k, v in item.items() if k != "database"}  # numeric
                if time.monotonic() > deadline:
                    return {}
                time.sleep(0.2)

    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGINT, timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)
