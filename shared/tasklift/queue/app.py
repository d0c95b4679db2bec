"""The Celery application: JSON only, late acks, prefetch 1, our own state in PostgreSQL.

One Celery task, ``tasklift.run(task_id)``, executes every task type; the type and input are read
from the database when the worker claims the task, so the broker never carries payloads.
Celery's result backend is disabled: status is always read from PostgreSQL.
"""

from __future__ import annotations

import logging

from celery import Celery, signals

from tasklift.settings import get_settings, redis_url


def celery_config() -> dict[str, object]:
    """Celery settings derived from tasklift settings (read when the app is first used)."""
    settings = get_settings()
    return {
        "broker_url": redis_url(),
        # JSON only: a pickle payload from a compromised broker must never execute (OWASP A08).
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_backend": None,
        "task_ignore_result": True,
        # At-least-once: ack after the run; a lost worker's message goes back to the queue.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": {
            "visibility_timeout": settings.broker_visibility_timeout,
            # kombu sweeps unacked messages every interval × throttle seconds (default 10 × 10);
            # tie the sweep to the timeout so an expired message is restored promptly at any setting.
            "unacked_restore_interval": max(1, min(60, settings.broker_visibility_timeout // 4)),
            "unacked_restore_throttle": 1,
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_default_queue": settings.cpu_queue,
        "task_create_missing_queues": True,
        # Celery >= 5.5 soft shutdown, which `tasklift worker` puts on SIGTERM (REMAP_SIGTERM=SIGQUIT,
        # cli/server.py): stop taking tasks, let running ones go on this long, then cancel them; the
        # pool process hands its task back to the queue (queue/runner.py). An idle worker exits at once.
        "worker_soft_shutdown_timeout": float(settings.soft_shutdown_seconds),
        "worker_enable_soft_shutdown_on_idle": False,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "worker_disable_rate_limits": True,
        "imports": ["tasklift.queue.worker_tasks"],
    }


class _LazyConfig:
    """Celery reads this object only when the app is first used, after the environment is set."""

    def __getattr__(self, name: str) -> object:
        config = celery_config()
        if name == "__dict__":
            return config
        try:
            return config[name]
        except KeyError:
            raise AttributeError(name) from None

    def __dir__(self) -> list[str]:
        return list(celery_config())


def create_celery_app() -> Celery:
    """Build the Celery app; its configuration is resolved lazily from settings."""
    app = Celery("tasklift", set_as_current=False)
    app.config_from_object(_LazyConfig())
    return app


celery_app = create_celery_app()

#: Celery's per-task INFO lines ("Task … received", "Task … succeeded in …"): tasklift records
#: every transition as an event in PostgreSQL, so they only repeat it, at ~60 µs each as JSON.
PER_TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy")


@signals.worker_init.connect  # type: ignore[untyped-decorator]  # Celery has no type hints
def _quiet_per_task_lines(**_: object) -> None:
    """Keep Celery's per-task lines for TASKLIFT_LOG_LEVEL=DEBUG (set before the pool forks)."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for name in PER_TASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


@signals.worker_process_init.connect  # type: ignore[untyped-decorator]  # Celery has no type hints
def _open_runtime(**_: object) -> None:
    """Each pool process builds its own worker runtime (engines, Redis clients, threads; a forked
    child must not reuse its parent's sockets): queue/runtime.py."""
    from tasklift.queue import runtime
    from tasklift.settings import get_settings

    runtime.install(runtime.WorkerRuntime.open(get_settings()))


@signals.worker_process_init.connect  # type: ignore[untyped-decorator]  # Celery has no type hints
def _hand_back_on_cold_shutdown(**_: object) -> None:
    """A pool process hands its running task back when the soft shutdown ends (queue/runner.py)."""
    from tasklift.queue.runner import shutdown_cancel

    shutdown_cancel.pool_process = True


@signals.worker_process_init.connect  # type: ignore[untyped-decorator]  # Celery has no type hints
def _child_telemetry(**_: object) -> None:
    """Each prefork child gets its own tracer/meter providers (export threads do not survive fork)."""
    from tasklift import telemetry

    telemetry.configure("worker")


@signals.worker_shutdown.connect  # type: ignore[untyped-decorator]  # Celery has no type hints
def _close_inline_runtime(**_: object) -> None:
    """The solo and threads pools ran tasks in this process: close its runtime, sending the task
    events still queued (a prefork parent has none)."""
    from tasklift.queue import runtime

    runtime.close(timeout=2.0)


@signals.worker_process_shutdown.connect  # type: ignore[untyped-decorator]  # Celery has no type hints
def _flush_child_telemetry(**_: object) -> None:
    """A child exits with os._exit (no atexit): close its runtime (sending the task events its
    publish thread still holds), and flush its spans and metrics."""
    from tasklift import telemetry
    from tasklift.queue import runtime

    runtime.close(timeout=2.0)
    telemetry.shutdown()


@signals.worker_init.connect  # type: ignore[untyped-decorator]  # Celery has no type hints
def _inline_pool_runtime(sender: object = None, **_: object) -> None:
    """The solo and threads pools run tasks in this process, which then needs the providers and
    its worker runtime."""
    if "prefork" not in str(getattr(sender, "pool_cls", "prefork")):
        from tasklift import telemetry
        from tasklift.queue import runtime
        from tasklift.settings import get_settings

        telemetry.configure("worker")
        runtime.install(runtime.WorkerRuntime.open(get_settings()))
