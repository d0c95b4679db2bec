"""Data commands: ``tasklift export`` writes finished tasks out as JSON Lines (before retention purges them)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import typer

from tasklift.cli.base import app, console


def _moment(raw: str) -> datetime:
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"expected a date or RFC 3339 time, got {raw!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command()
def export(
    before: str = typer.Option(..., "--before", help="Finished before this date or time (UTC unless it says)"),
    events: bool = typer.Option(False, "--events", help="Add each task's events and log lines"),
    blobs: bool = typer.Option(True, "--blobs/--no-blobs", help="Inline large inputs/results from blob storage"),
) -> None:
    """Write finished tasks completed before --before to stdout, one JSON object a line, oldest first.

    Run it before the retention purge (retention_days) reaches those tasks:
    ``tasklift export --before 2025-01-01 > tasks.jsonl``.
    """
    from tasklift.blobs import create_blob_store
    from tasklift.settings import database_url, get_settings
    from tasklift.store.db import make_engine
    from tasklift.tasks.retention import export_finished

    count = 0
    settings = get_settings()
    engine, store = make_engine(database_url(settings), pooled=False), create_blob_store(settings)
    try:
        for record in export_finished(engine, store, _moment(before), events=events, resolve_blobs=blobs):
            sys.stdout.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
            count += 1
    finally:
        engine.dispose()
    sys.stdout.flush()
    console.print(f"exported {count} tasks finished before {before}")
