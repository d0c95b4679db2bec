"""The log formats: JSON lines with the task fields, and the console format of ``tasklift dev``."""

from __future__ import annotations

import json
import logging
import os

from tasklift import logs, telemetry


def render(formatter: logging.Formatter, message: str, *args: object) -> str:
    record = logging.LogRecord("tasklift.test", logging.WARNING, __file__, 1, message, args, None)
    logs.TaskContextFilter().filter(record)
    return formatter.format(record)


def test_json_lines_always_have_the_task_fields_null_outside_a_task() -> None:
    line = json.loads(render(logs.JsonFormatter(), "disk %s", "full"))
    assert line["message"] == "disk full" and line["level"] == "WARNING" and line["logger"] == "tasklift.test"
    assert line["task_id"] is None and line["attempt"] is None and line["trace_id"] is None
    assert line["time"].endswith("Z")


def test_bound_task_fields_and_the_current_trace_go_on_the_line_and_are_undone_after() -> None:
    with logs.bound(task_id="t-1"), telemetry.span("work") as span:
        logs.bind(attempt=2)
        line = json.loads(render(logs.JsonFormatter(), "inside"))
    assert line["task_id"] == "t-1" and line["attempt"] == 2
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    after = json.loads(render(logs.JsonFormatter(), "after"))
    assert after["task_id"] is None and after["attempt"] is None and after["trace_id"] is None


def test_console_lines_append_the_task_fields_only_when_bound() -> None:
    plain = render(logs.ConsoleFormatter(), "idle")
    assert plain.endswith(f"tasklift.test [{os.getpid()}] idle")
    with logs.bound(task_id="t-2", attempt=1):
        annotated = render(logs.ConsoleFormatter(), "busy")
    assert annotated.endswith("busy  [task=t-2 attempt=1]")


def test_the_dict_config_routes_uvicorn_through_the_root_handler() -> None:
    """uvicorn applies this config in each worker process: its lines must come out in our format."""
    config = logs.dict_config("json", "info")
    assert config["root"] == {"level": "INFO", "handlers": ["stderr"]}
    assert config["handlers"]["stderr"]["filters"] == ["task_context"]
    assert all(config["loggers"][name]["propagate"] for name in ("uvicorn", "uvicorn.error", "uvicorn.access"))
    assert config["formatters"]["tasklift"]["()"] == "tasklift.logs.JsonFormatter"
