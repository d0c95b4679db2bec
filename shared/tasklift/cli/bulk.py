"""Operator commands over HTTP: ``tasklift bulk cancel|retry|purge`` by filter (printing the
operation's progress until it ends), ``tasklift bulk list`` and ``tasklift queues pause|resume <queue>`` (admin)."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tasklift.cli.base import app, console
from tasklift.cli.client import URL, _client, _fail
from tasklift.client import TaskliftError

bulk = typer.Typer(no_args_is_help=True, help="Cancel, retry or purge many tasks by filter (docs/bulk.md).")
app.add_typer(bulk, name="bulk")
queues = typer.Typer(no_args_is_help=True, help="Pause and resume a queue (admin; docs/queues.md).")
app.add_typer(queues, name="queues")

STATUS = typer.Option(None, "--status", help="Only tasks in this status (repeatable)")
TYPE = typer.Option(None, "--type", help="Only tasks of this type (repeatable)")
AFTER = typer.Option(None, "--created-after", help="Only tasks created after this RFC 3339 time")
BEFORE = typer.Option(None, "--created-before", help="Only tasks created before this RFC 3339 time")
KEY_PREFIX = typer.Option(None, "--key-prefix", help="Only tasks submitted with an Idempotency-Key starting so")
OWNER = typer.Option(None, "--owner", help="Only this principal's tasks (admin)")
DRY_RUN = typer.Option(False, "--dry-run", help="Only count the tasks it would change")
NO_WAIT = typer.Option(False, "--no-wait", help="Print the operation's id and return at once")


def _run(action: str, filt: dict[str, Any], dry_run: bool, no_wait: bool, url: str | None) -> None:
    given = {name: value for name, value in filt.items() if value}
    with _client(url) as client:
        try:
            op = client.bulk(action, dry_run=dry_run, **given)
            if dry_run:
                typer.echo(f"{op['count']} tasks would be {'purged' if action == 'purge' else action + 'led'}")
                return
            typer.echo(op["bulk_id"])
            if no_wait:
                return
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=console, transient=False) as bar:
                handle = bar.add_task(f"{action} PENDING", total=op["total"] or 1)

                def show(state: dict[str, Any]) -> None:
                    bar.update(handle, completed=state["processed"], description=f"{action} {state['status']}")

                final = client.wait_bulk(op["bulk_id"], on_progress=show)
        except TaskliftError as exc:
            _fail(exc)
            return
    counts = {name: final[name] for name in ("total", "done", "skipped", "failed")}
    typer.echo(json.dumps({"status": final["status"], **counts}))
    raise typer.Exit(0 if final["status"] == "SUCCESS" else 1)


def _command(action: str, summary: str) -> None:
    def command(
        status: list[str] = STATUS,
        task_type: list[str] = TYPE,
        created_after: str = AFTER,
        created_before: str = BEFORE,
        key_prefix: str = KEY_PREFIX,
        owner: str = OWNER,
        dry_run: bool = DRY_RUN,
        no_wait: bool = NO_WAIT,
        url: str = URL,
    ) -> None:
        filt = {
            "status": status,
            "task_type": task_type,
            "created_after": created_after,
            "created_before": created_before,
            "key_prefix": key_prefix,
            "owner": owner,
        }
        _run(action, filt, dry_run, no_wait, url)

    command.__doc__ = summary
    bulk.command(action)(command)


_command("cancel", "Cancel the PENDING and RUNNING tasks the filter selects (RUNNING ones stop at their next check).")
_command("retry", "Queue the FAILED and CANCELLED tasks the filter selects again (same ids).")
_command("purge", "Delete the finished tasks the filter selects, with their events, logs and blobs.")


@bulk.command("list")
def list_(
    status: str = typer.Option(None, "--status", help="Only operations in this status"),
    limit: int = typer.Option(20, "--limit", min=1, max=100, help="At most this many"),
    url: str = URL,
) -> None:
    """The bulk operations you made (an admin: everyone's), newest first, one JSON line each."""
    with _client(url) as client:
        try:
            page = client.list_bulk(status=status, limit=limit)
        except TaskliftError as exc:
            _fail(exc)
            return
    for op in page["items"]:
        fields = ("bulk_id", "action", "status", "total", "processed", "created_at")
        typer.echo(json.dumps({name: op[name] for name in fields}))


@queues.command("pause")
def pause(queue: str, url: str = URL) -> None:
    """Hold a queue: its PENDING tasks stay PENDING until it is resumed."""
    with _client(url) as client:
        try:
            typer.echo(json.dumps(client.pause_queue(queue)))
        except TaskliftError as exc:
            _fail(exc)


@queues.command("resume")
def resume(queue: str, url: str = URL) -> None:
    """Let a paused queue's tasks run again (none is lost)."""
    with _client(url) as client:
        try:
            typer.echo(json.dumps(client.resume_queue(queue)))
        except TaskliftError as exc:
            _fail(exc)
