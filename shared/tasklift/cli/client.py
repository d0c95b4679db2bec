"""Client commands: submit (with a live progress bar), status, cancel, logs, signal, deliveries."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from tasklift.cli.base import app, console
from tasklift.client import TaskliftClient, TaskliftError
from tasklift.settings import get_settings

URL = typer.Option(None, "--url", help="API base URL (default TASKLIFT_API_URL)")


def _client(url: str | None) -> TaskliftClient:
    settings = get_settings()
    return TaskliftClient(url or settings.api_url, api_key=settings.api_key)


def _field(raw: str) -> tuple[str, Any]:
    """``k=v``: v is parsed as JSON when it is valid JSON (numbers, lists, objects), else a string."""
    if "=" not in raw:
        raise typer.BadParameter(f"expected key=value, got {raw!r}")
    key, value = raw.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _fail(exc: TaskliftError) -> None:
    console.print(f"[red]{exc.status} {exc.problem.get('title')}[/red]: {exc.problem.get('detail')}")
    for error in exc.problem.get("errors") or []:
        console.print(f"  {'.'.join(map(str, error.get('loc', [])))}: {error.get('msg')}")
    raise typer.Exit(2)


@app.command()
def submit(
    task_type: str = typer.Argument(..., help="The task type (see GET /task-types)"),
    field: list[str] = typer.Option([], "--field", "-f", help="Input field key=value (repeatable)"),
    metadata: str = typer.Option(None, help="Metadata as a JSON object"),
    idempotency_key: str = typer.Option(None, help="Idempotency-Key header"),
    run_at: str = typer.Option(None, "--run-at", help="Not before this RFC 3339 time (docs/flow-control.md)"),
    delay: float = typer.Option(None, "--delay", help="Not before this many seconds from now"),
    ttl: float = typer.Option(None, "--ttl", help="EXPIRED unless started within this many seconds"),
    priority: int = typer.Option(None, "--priority", help="0-9; higher is admitted first within its queue"),
    concurrency_key: str = typer.Option(
        None, "--concurrency-key", help="At most the type's concurrency_limit tasks with this key run at once"
    ),
    fairness_key: str = typer.Option(
        None, "--fairness-key", help="Under an admission window, turns are round-robin across these keys"
    ),
    follow: bool = typer.Option(False, "--follow", help="Follow the live stream with a progress bar; print its output"),
    url: str = URL,
) -> None:
    """Submit a task; with --follow, draw its progress live and exit non-zero unless it succeeds."""
    fields = dict(_field(f) for f in field)
    with _client(url) as client:
        try:
            meta = json.loads(metadata) if metadata else None
            task = client.submit(
                task_type,
                metadata=meta,
                idempotency_key=idempotency_key,
                run_at=run_at,
                delay_seconds=delay,
                ttl_seconds=ttl,
                priority=priority,
                concurrency_key=concurrency_key,
                fairness_key=fairness_key,
                **fields,
            )
        except TaskliftError as exc:
            _fail(exc)
            return
        typer.echo(task.task_id)
        if follow:
            try:
                code = _follow(client, task.task_id)
            except TaskliftError as exc:
                _fail(exc)
                return
            raise typer.Exit(code)


def _follow(client: TaskliftClient, task_id: str) -> int:
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    final: dict[str, Any] = {}
    text = ""  # output text after its last newline: printed once the line is complete
    with Progress(*columns, console=console, transient=False) as bar:
        handle = bar.add_task("PENDING", total=100)
        # From the task's first event: nothing it emitted before the stream opened is missed.
        for event in client.stream(task_id, last_event_id=0):
            data = event.data
            if event.kind == "output":  # ctx.emit chunks: text as it is, JSON values one per line
                for chunk in data["chunks"]:
                    text += chunk if isinstance(chunk, str) else json.dumps(chunk) + "\n"
                lines, _, text = text.rpartition("\n")
                if lines:  # on stdout, like the result (Progress shows it above the bar on a terminal)
                    typer.echo(lines)
                continue
            progress = data.get("progress") or {}
            if progress.get("percent") is not None:
                bar.update(handle, completed=progress["percent"])
            message = progress.get("message") or ""
            bar.update(handle, description=f"{data['status']:<9} {message}"[:60])
            if event.kind == "status" and data["status"] == "WAITING":  # ctx.wait_for / ctx.sleep
                bar.console.print("[yellow]WAITING[/yellow] for a signal or a timer: tasklift signal TASK_ID NAME")
            if event.kind == "log":
                bar.console.print(f"[dim]{data.get('level', 'INFO'):<7}[/dim] {data.get('message')}")
            if event.terminal:
                final = data
        if text:
            typer.echo(text)
    status = final.get("status", "UNKNOWN")
    if status == "SUCCESS":
        console.print("[green]SUCCESS[/green]")
        typer.echo(json.dumps(final.get("result"), indent=2))
        return 0
    error = final.get("error") or {}
    console.print(f"[red]{status}[/red] {error.get('type', '')}: {error.get('message', '')}".rstrip(": "))
    return 1


@app.command()
def status(task_id: str, url: str = URL) -> None:
    """Print a task as JSON."""
    with _client(url) as client:
        try:
            typer.echo(client.get(task_id).model_dump_json(indent=2))
        except TaskliftError as exc:
            _fail(exc)


@app.command()
def cancel(task_id: str, url: str = URL) -> None:
    """Cancel a task (PENDING: at once; RUNNING: at its next progress check)."""
    with _client(url) as client:
        try:
            task = client.cancel(task_id)
        except TaskliftError as exc:
            _fail(exc)
            return
        typer.echo("CANCELLED" if task is None else "cancel requested; the task stops at its next progress check")


@app.command()
def logs(task_id: str, after: int = typer.Option(0, help="Only lines after this sequence"), url: str = URL) -> None:
    """Print a task's log lines."""
    with _client(url) as client:
        try:
            for line in client.logs(task_id, after=after, limit=1000):
                typer.echo(f"{line['timestamp']} {line['level']:<7} {line['message']}")
        except TaskliftError as exc:
            _fail(exc)


@app.command()
def signal(
    task_id: str,
    name: str = typer.Argument(..., help="The signal's name, as the task's ctx.wait_for(name) has it"),
    data: str = typer.Option("null", "--data", "-d", help="The payload, as JSON"),
    url: str = URL,
) -> None:
    """Send a signal to a task: resumes it if it is WAITING on NAME, else it is kept for its next wait."""
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--data is not JSON: {exc}") from None
    with _client(url) as client:
        try:
            done = client.signal(task_id, name, payload)
        except TaskliftError as exc:
            _fail(exc)
            return
        typer.echo(f"{done['delivered']}: the task is {done['task']['status']}")


@app.command()
def deliveries(
    task_id: str,
    redeliver: str = typer.Option(None, "--redeliver", help="Send this delivery (its webhook-id) again now"),
    url: str = URL,
) -> None:
    """Print a task's webhook deliveries, one a line (docs/webhooks.md); --redeliver sends one again."""
    with _client(url) as client:
        try:
            if redeliver is not None:
                again = client.redeliver(task_id, redeliver)
                typer.echo(f"{again['id']} due again now")
                return
            for d in client.deliveries(task_id):
                answer = d["last_status"] if d["last_status"] is not None else (d["last_error"] or "-")
                typer.echo(f"{d['id']} {d['event_type']:<15} {d['state']:<9} attempts={d['attempts']} last={answer}")
        except TaskliftError as exc:
            _fail(exc)
