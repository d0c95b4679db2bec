"""``tasklift schedules create|list|get|pause|resume|delete|runs``: cron and interval schedules over
HTTP (docs/flow-control.md, "Schedules"). Each command prints the API's JSON answer."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import typer

from tasklift.cli.base import app
from tasklift.cli.client import URL, _client, _fail, _field
from tasklift.client import TaskliftClient, TaskliftError

schedules = typer.Typer(no_args_is_help=True, help="Cron and interval schedules (docs/flow-control.md).")
app.add_typer(schedules, name="schedules")


def _call(url: str | None, call: Callable[[TaskliftClient], Any]) -> None:
    with _client(url) as client:
        try:
            answer = call(client)
        except TaskliftError as exc:
            _fail(exc)
            return
    if answer is not None:
        typer.echo(json.dumps(answer))


@schedules.command("create")
def create(
    name: str,
    task_type: str,
    fields: list[str] = typer.Argument(None, help="The task's input as key=value (JSON values allowed)"),
    cron: str = typer.Option(None, "--cron", help="5-field cron expression, e.g. '30 2 * * *'"),
    timezone: str = typer.Option(None, "--timezone", help="IANA time zone of --cron (default UTC)"),
    every: float = typer.Option(None, "--every", help="Fire every this many seconds instead of --cron"),
    catchup: str = typer.Option(None, "--catchup", help="latest (default) or all: what a late firer fires"),
    priority: int = typer.Option(None, "--priority", help="Each firing's priority, 0 to 9"),
    ttl: float = typer.Option(None, "--ttl", help="Each firing expires if not started within SECONDS"),
    concurrency_key: str = typer.Option(None, "--concurrency-key"),
    fairness_key: str = typer.Option(None, "--fairness-key"),
    paused: bool = typer.Option(False, "--paused", help="Create it paused"),
    url: str = URL,
) -> None:
    """Create a schedule: NAME fires TASK_TYPE with the given input at each --cron time (or --every)."""
    payload = dict(_field(raw) for raw in fields or [])
    given = {
        "cron": cron,
        "timezone": timezone,
        "interval_seconds": every,
        "catchup": catchup,
        "priority": priority,
        "ttl_seconds": ttl,
        "concurrency_key": concurrency_key,
        "fairness_key": fairness_key,
    }
    extra = {key: value for key, value in given.items() if value is not None}
    _call(url, lambda c: c.create_schedule(name, task_type, payload, paused=paused, **extra))


@schedules.command("list")
def list_(
    limit: int = typer.Option(20, "--limit"), cursor: str = typer.Option(None, "--cursor"), url: str = URL
) -> None:
    """List your schedules, newest first (one page; --cursor for the next)."""
    _call(url, lambda c: c.list_schedules(limit, cursor))


@schedules.command("get")
def get(schedule_id: str, url: str = URL) -> None:
    """Show a schedule: its next fire time, its last task."""
    _call(url, lambda c: c.get_schedule(schedule_id))


@schedules.command("pause")
def pause(schedule_id: str, url: str = URL) -> None:
    """Stop a schedule firing until it is resumed."""
    _call(url, lambda c: c.pause_schedule(schedule_id))


@schedules.command("resume")
def resume(schedule_id: str, url: str = URL) -> None:
    """Fire again, from its next time after now (the paused period is not caught up)."""
    _call(url, lambda c: c.resume_schedule(schedule_id))


@schedules.command("delete")
def delete(schedule_id: str, url: str = URL) -> None:
    """Delete a schedule (the tasks it fired stay)."""
    _call(url, lambda c: c.delete_schedule(schedule_id))


@schedules.command("runs")
def runs(schedule_id: str, limit: int = typer.Option(20, "--limit"), url: str = URL) -> None:
    """A schedule's firings, latest first: nominal time, task id, status."""
    _call(url, lambda c: c.schedule_runs(schedule_id, limit))
