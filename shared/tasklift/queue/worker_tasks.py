"""The single Celery task that runs every tasklift task type."""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import Reject

from tasklift.queue.app import celery_app

log = logging.getLogger(__name__)


# Celery has no type hints: its task decorator is untyped.
@celery_app.task(name="tasklift.run", bind=True, ignore_result=True)  # type: ignore[untyped-decorator]
def run(self: Any, task_id: str) -> None:
    """Claim the task ``task_id`` and run it (a duplicate delivery is dropped at the claim)."""
    # Imported here: runner imports the app module, which imports this one to register the task.
    from tasklift.queue.runner import LeaseNotRecorded, execute

    try:
        execute(task_id, worker=str(self.request.hostname or "worker"))
    except LeaseNotRecorded as exc:
        # acks_late: rejecting with requeue puts the message back instead of acking a lost claim.
        log.warning("%s; the message goes back to the queue", exc)
        raise Reject(str(exc), requeue=True) from exc
