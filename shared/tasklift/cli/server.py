"""Server commands: run the stack, its parts, and migrations.

``tasklift dev`` is the one-command local run: embedded PostgreSQL and Redis (unless
``TASKLIFT_DATABASE_URL`` / ``TASKLIFT_REDIS_URL`` point elsewhere), migrations, a worker pool,
the reaper and the API, supervised as one tree of processes that Ctrl-C stops completely.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import typer
from rich.table import Table

from tasklift.cli.base import app, console
from tasklift.cli.supervise import Supervisor
from tasklift.settings import get_settings

#: The ports a dev stack's webhooks may reach (receivers on this machine: common dev servers' ports).
DEV_WEBHOOK_PORTS = "[80, 443, 3000, 4000, 5000, 8000, 8080, 8443, 9000]"


def _configure_logging(role: str | None = None) -> None:
    """Structured logs (TASKLIFT_LOG_FORMAT json | console) and, for ``role``, OpenTelemetry.

    A worker passes no role: its prefork children set up telemetry after the fork (queue/app.py).
    """
    from tasklift.logs import configure_logging

    configure_logging()
    if role is not None:
        from tasklift import telemetry

        telemetry.configure(role)


@app.command()
def migrate() -> None:
    """Apply database migrations (Alembic) up to the latest revision."""
    _configure_logging()
    from tasklift.store.migrate import upgrade

    upgrade()
    console.print("[green]database schema is up to date[/green]")


@app.command()
def api(
    host: str = typer.Option(None, help="Interface to bind (default TASKLIFT_API_HOST)"),
    port: int = typer.Option(None, help="Port (default TASKLIFT_API_PORT)"),
    workers: int = typer.Option(1, help="uvicorn worker processes"),
) -> None:
    """Serve the HTTP API (ASGI, uvicorn)."""
    import uvicorn

    from tasklift.http.serving import uvicorn_options
    from tasklift.logs import dict_config

    settings = get_settings()
    _configure_logging("api")
    uvicorn.run(
        "tasklift.http.asgi:create_app",
        factory=True,
        host=host or settings.api_host,
        port=port or settings.api_port,
        workers=workers,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=10,
        log_config=dict_config(settings.log_format, settings.log_level),  # uvicorn's own lines in our format too
        **uvicorn_options(settings),  # bounded request heads, head/body read timeouts (docs/security.md)
    )


@app.command()
def worker(
    queues: str = typer.Option(None, help="Comma-separated queues (default: the cpu and io queues)"),
    concurrency: int = typer.Option(None, help="Child processes (default TASKLIFT_WORKER_CONCURRENCY)"),
    pool: str = typer.Option("prefork", help="Celery pool: prefork, threads or solo"),
    events: bool = typer.Option(
        False, "--events", "-E", help="Send Celery task events (what Flower and `celery events` show)"
    ),
) -> None:
    """Run a Celery worker for tasklift's queues.

    SIGTERM (docker stop, a Kubernetes or Container Apps scale-in) starts Celery's soft cold
    shutdown: no new tasks, running ones get TASKLIFT_SOFT_SHUTDOWN_SECONDS, then each is handed
    back to the queue. Celery's default SIGTERM (a warm shutdown) would wait for a task however long
    it runs, until the platform's SIGKILL. REMAP_SIGTERM set in the environment (even empty) wins.
    """
    # billiard reads REMAP_SIGTERM when it is first imported: set it before Celery is.
    os.environ.setdefault("REMAP_SIGTERM", "SIGQUIT")
    from billiard.common import REMAP_SIGTERM

    if os.environ["REMAP_SIGTERM"] != REMAP_SIGTERM:
        raise RuntimeError("billiard was imported before `tasklift worker` could set REMAP_SIGTERM")
    from tasklift.queue.app import celery_app

    settings = get_settings()
    _configure_logging()
    celery_app.worker_main(
        [
            "worker",
            "--queues",
            queues or f"{settings.cpu_queue},{settings.io_queue}",
            "--concurrency",
            str(concurrency or settings.worker_concurrency),
            "--pool",
            pool,
            "--loglevel",
            settings.log_level.upper(),
            "--hostname",
            "tasklift@%h",
            "--without-gossip",
            "--without-mingle",
            *(["--task-events"] if events else []),
        ]  # fmt: skip
    )


@app.command()
def reaper() -> None:
    """Run the outbox dispatcher, lease reaper, cancel enforcer and cleanup loop."""
    from tasklift.queue.reaper import run_forever

    _configure_logging("reaper")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run_forever(stop)


def _check_task_modules() -> None:
    """Fail at once, in one line, when TASKLIFT_TASK_MODULES names a module that does not import."""
    from tasklift.tasks.registry import load_task_types

    try:
        load_task_types()
    except ImportError as exc:
        console.print(
            f"[red]TASKLIFT_TASK_MODULES={get_settings().task_modules} cannot be imported[/red]: {exc}."
            " Start `tasklift dev` in the folder that holds the module, or add its folder to PYTHONPATH."
        )
        raise typer.Exit(1) from None


@app.command()
def dev(
    port: int = typer.Option(None, help="API port (default: 8000 for asgi, 7071 for azure, 3000 for aws)"),
    concurrency: int = typer.Option(2, help="Worker child processes"),
    data_dir: Path = typer.Option(None, help="Where the embedded engines keep data (default TASKLIFT_DATA_DIR)"),
    host: str = typer.Option("asgi", help="What serves the API: asgi (uvicorn), azure or aws (their emulators)"),
    auth: bool = typer.Option(False, "--auth", help="Require credentials (API keys: `tasklift keys create`)"),
) -> None:
    """Run everything locally: PostgreSQL, Redis, migrations, worker pool, reaper and API."""
    from tasklift.embedded import EmbeddedPostgres, EmbeddedRedis
    from tasklift.security import dev_state

    settings = get_settings()
    # The emulators listen where their platform's local tools do: Core Tools on 7071, sam local on 3000.
    default_ports = {"asgi": settings.api_port, "azure": 7071, "aws": 3000}
    if host not in default_ports:
        raise typer.BadParameter(f"--host must be one of {', '.join(default_ports)}", param_hint="--host")
    data = (data_dir or settings.data_dir).resolve()
    env = dict(os.environ)
    env["TASKLIFT_ANONYMOUS"] = "false" if auth else env.get("TASKLIFT_ANONYMOUS", "true")
    # Stream links must verify on every process of the stack and survive restarts: one kept key.
    env.setdefault("TASKLIFT_STREAM_SIGNING_KEY", dev_state.ensure_signing_key(data))
    # Webhooks (docs/webhooks.md): a kept secret, and receivers on this machine allowed (http too).
    env.setdefault("TASKLIFT_WEBHOOK_SECRETS", dev_state.ensure_webhook_secret(data))
    env.setdefault("TASKLIFT_WEBHOOK_ALLOW_PRIVATE", "true")
    webhook_ports = env.setdefault("TASKLIFT_WEBHOOK_ALLOWED_PORTS", DEV_WEBHOOK_PORTS)
    env.setdefault("TASKLIFT_LOG_FORMAT", "console")
    env.setdefault("TASKLIFT_SOFT_SHUTDOWN_SECONDS", "10")
    # Like uvicorn's --app-dir: modules of the folder you start in (your task types) are importable.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), env.get("PYTHONPATH")) if p)
    sys.path.insert(0, os.getcwd())
    _check_task_modules()
    if (running := dev_state.read_live_state(data)) is not None:
        console.print(
            f"[red]another `tasklift dev` (pid {running['pid']}) is already running on {data}[/red]:"
            " stop it first, or give this one its own --data-dir"
        )
        raise typer.Exit(1)
    engines: list[EmbeddedPostgres | EmbeddedRedis] = []
    rows: list[tuple[str, str]] = []
    supervisor = Supervisor(console)
    signal.signal(signal.SIGINT, supervisor.on_signal)
    signal.signal(signal.SIGTERM, supervisor.on_signal)
    try:
        if settings.database_url:
            rows.append(("PostgreSQL", f"{settings.database_url.split('@')[-1]} (external)"))
        else:
            pg = EmbeddedPostgres(data / "postgres", port=55432)
            engines.append(pg)
            env["TASKLIFT_DATABASE_URL"] = pg.start()
            rows.append(("PostgreSQL 16 (embedded)", f"{pg.url}  data: {pg.data_dir}"))
        if settings.redis_url:
            rows.append(("Redis", "external"))
        else:
            rd = EmbeddedRedis(data / "redis", port=6380)
            engines.append(rd)
            env["TASKLIFT_REDIS_URL"] = rd.start()
            rows.append(("Redis (embedded, AOF)", f"{rd.url}  data: {rd.data_dir}"))
        os.environ.update(env)
        get_settings.cache_clear()
        from tasklift.store.migrate import upgrade

        upgrade()
        api_port = port or default_ports[host]
        # `tasklift keys` finds this stack's (migrated) database through this file while it runs.
        dev_state.write_state(data, database_url=env["TASKLIFT_DATABASE_URL"], api_port=api_port)
        supervisor.start("worker", ["worker", "--concurrency", str(concurrency)], env)
        supervisor.start("reaper", ["reaper"], env)
        api_args = ["api"] if host == "asgi" else ["emulate", host, "--host", settings.api_host]
        supervisor.start("api", [*api_args, "--port", str(api_port)], env)
        rows += [
            ("Worker pool", f"{concurrency} processes on {settings.cpu_queue}, {settings.io_queue}"),
            ("Reaper", "outbox dispatcher, lease reaper, cleanup, webhooks"),
            ("Webhooks", f"secret in {data / dev_state.WEBHOOK_SECRET_FILE}, ports {webhook_ports}"),
            ("API" if host == "asgi" else f"API ({host} emulator)", f"http://{settings.api_host}:{api_port}"),
        ]
        table = Table(title="tasklift dev", show_header=False)
        for name, where in rows:
            table.add_row(name, where)
        console.print(table)
        if env["TASKLIFT_ANONYMOUS"] == "true":
            console.print("[yellow]anonymous access is ON[/yellow] (development only; `--auth` turns it off)")
        else:
            console.print("[green]authentication is ON[/green]: create a key with `tasklift keys create --name NAME`")
        console.print("Press Ctrl-C to stop everything.")
        supervisor.watch()
    finally:
        dev_state.clear_state(data)
        supervisor.stop(grace=float(env["TASKLIFT_SOFT_SHUTDOWN_SECONDS"]))  # API, reaper, then workers
        for engine in reversed(engines):
            engine.stop()
        console.print("[green]stopped; data kept in[/green] " + str(data))
    raise typer.Exit(0)
