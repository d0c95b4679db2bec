"""The single Celery task that runs every tasklift task type."""

from __future__ import annotations

from typing import Any

from tasklift.queue.app import celery_app
from tasklift.queue.runner import execute


@celery_app.task(name="tasklift.run", bind=True, ignore_result=True)
def run(self: Any, task_id: str) -> None:
    """Claim the task ``task_id`` and run it (a duplicate delivery is dropped at the claim)."""
    execute(task_id, worker=str(self.request.hostname or "worker"))
