"""FastAPI + Celery, the way both projects' docs show it: a Redis broker and Celery's
SQLAlchemy result backend on PostgreSQL (``db+postgresql://``), so task states are durable.

- Celery, "Using the database backend": https://docs.celeryq.dev/en/stable/userguide/configuration.html#database-backend-settings
- ``task_track_started`` so a running task reads STARTED: https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-track-started
- FastAPI calls a plain ``def`` endpoint in its thread pool: https://fastapi.tiangolo.com/async/

Settings match tasklift's delivery guarantees (acks_late, reject_on_worker_lost, prefetch 1).
API: ``uvicorn celery_pg:api``; worker: ``celery -A celery_pg worker``.
"""

from __future__ import annotations

import os
import time

from celery import Celery
from celery.result import AsyncResult
from fastapi import FastAPI
from pydantic import BaseModel
from stamp import stamp

PG_URL = os.environ["PEER_DATABASE_URL"]  # postgresql://…

celery = Celery("peer", broker=os.environ["PEER_REDIS_URL"], backend="db+" + PG_URL)
celery.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_track_started=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    task_default_queue="peer",
)


@celery.task(bind=True, name="peer.work")
def work(self, kind: str) -> dict[str, bool]:  # noqa: ANN001 - Celery's bound task
    stamp(self.request.id)
    if kind == "sleep":
        time.sleep(0.1)
    return {"ok": True}


class Submit(BaseModel):
    kind: str = "noop"


api = FastAPI()


@api.get("/healthz")
def healthz() -> dict[str, bool]:
    return {"ok": True}


@api.post("/tasks", status_code=202)
def submit(body: Submit) -> dict[str, str]:
    return {"id": work.delay(body.kind).id}


@api.get("/tasks/{task_id}")
def status(task_id: str) -> dict[str, object]:
    result = AsyncResult(task_id, app=celery)
    return {"state": result.state, "done": result.ready()}


DONE_SQL = "SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'"
