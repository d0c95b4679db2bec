"""Logging for every tasklift process, configured in one place.

Every line carries ``task_id``, ``attempt`` and ``trace_id`` (null outside a task), so a task's
lines can be found across the API, the dispatcher and the workers, and joined to its trace:

- ``json`` (default, ``TASKLIFT_LOG_FORMAT=json``): one JSON object per line, for log collectors.
- ``console`` (``tasklift dev``): human-readable, the task fields appended when set.

The task fields come from context variables that the HTTP core (``routes.handle``) and the runner
(``runner.execute``) bind for the duration of a request or a task attempt; the trace ids come from
the current OpenTelemetry span. Context variables follow ``anyio.to_thread`` and asyncio tasks,
so a handler's database thread logs with its request's fields. A plain ``threading.Thread`` starts
with an empty context: its lines carry only what it binds itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.config
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

#: The task the current request or worker attempt is about.
task_id_var: ContextVar[str | None] = ContextVar("tasklift_task_id", default=None)
#: The attempt number of the running task (workers only).
attempt_var: ContextVar[int | None] = ContextVar("tasklift_attempt", default=None)

CONSOLE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(process)d] %(message)s"


@contextlib.contextmanager
def bound(task_id: object | None = None, attempt: int | None = None) -> Iterator[None]:
    """Bind the task fields for a block; the previous values come back when it ends.

    Fields not given keep their current value, and whatever :func:`bind` sets inside the block
    is undone at its end too.
    """
    tokens = (
        task_id_var.set(str(task_id) if task_id is not None else task_id_var.get()),
        attempt_var.set(attempt if attempt is not None else attempt_var.get()),
    )
    try:
        yield
    finally:
        attempt_var.reset(tokens[1])
        task_id_var.reset(tokens[0])


def bind(task_id: object | None = None, attempt: int | None = None) -> None:
    """Set task fields inside an enclosing :func:`bound` block (which undoes them)."""
    if task_id is not None:
        task_id_var.set(str(task_id))
    if attempt is not None:
        attempt_var.set(attempt)


class TaskContextFilter(logging.Filter):
    """Adds ``task_id``, ``attempt``, ``trace_id`` and ``span_id`` to every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.task_id = task_id_var.get()
        record.attempt = attempt_var.get()
        span = trace.get_current_span().get_span_context()
        record.trace_id = format(span.trace_id, "032x") if span.is_valid else None
        record.span_id = format(span.span_id, "016x") if span.is_valid else None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, pid, the task fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
            "task_id": getattr(record, "task_id", None),
            "attempt": getattr(record, "attempt", None),
            "trace_id": getattr(record, "trace_id", None),
            "span_id": getattr(record, "span_id", None),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class ConsoleFormatter(logging.Formatter):
    """The classic one-line format, with ``task=… attempt=… trace=…`` appended when bound."""

    def __init__(self) -> None:
        super().__init__(CONSOLE_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = [
            f"{label}={value}"
            for label, value in (
                ("task", getattr(record, "task_id", None)),
                ("attempt", getattr(record, "attempt", None)),
                ("trace", getattr(record, "trace_id", None)),
            )
            if value is not None
        ]
        if not extra:
            return text
        first, newline, rest = text.partition("\n")  # keep a traceback below the annotated line
        return f"{first}  [{' '.join(extra)}]{newline}{rest}"


def dict_config(log_format: str = "json", level: str = "INFO") -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` for the root logger (also handed to uvicorn).

    uvicorn applies ``log_config`` in every worker process it spawns, so passing this dict keeps
    ``tasklift api --workers N`` in the same format; its own loggers propagate to the root.
    """
    formatter = JsonFormatter if log_format == "json" else ConsoleFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"task_context": {"()": f"{__name__}.TaskContextFilter"}},
        "formatters": {"tasklift": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "tasklift",
                "filters": ["task_context"],
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def configure_logging(log_format: str | None = None, level: str | None = None) -> None:
    """Configure the root logger from ``TASKLIFT_LOG_FORMAT`` / ``TASKLIFT_LOG_LEVEL`` (or the arguments)."""
    from tasklift.settings import get_settings

    settings = get_settings()
    logging.config.dictConfig(dict_config(log_format or settings.log_format, level or settings.log_level))
    # Every process (API, worker, reaper, CLI) masks credentials in what it logs.
    from tasklift.security.redaction import install_redaction

    install_redaction()
    # The OTLP exporters log every failed export; one line per failure is plenty while a collector is down.
    logging.getLogger("opentelemetry").setLevel(max(logging.WARNING, logging.getLogger().level))
