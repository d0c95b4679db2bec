"""FastAPI + DBOS queues, the way DBOS's "queue worker" example shows it: the worker process
registers the workflow and the queue and launches DBOS; the web server enqueues through
``DBOSClient`` and reads the workflow's status from the system database.

- Queue worker example: https://docs.dbos.dev/python/examples/queue-worker
- Queues: https://docs.dbos.dev/python/reference/queues (``DBOS.register_queue``; its polling interval is set by run.py)
- DBOSClient: https://docs.dbos.dev/python/reference/client

API: ``uvicorn dbos_app:api``; worker: ``python dbos_app.py`` (PEER_CONCURRENCY workflows at once).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI
from pydantic import BaseModel
from stamp import stamp

PG_URL = os.environ["PEER_DATABASE_URL"]
QUEUE = "peer"
TERMINAL = {"SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"}


class Submit(BaseModel):
    kind: str = "noop"


client = None


@contextlib.asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    from dbos import DBOSClient

    global client
    client = DBOSClient(system_database_url=PG_URL)
    try:
        yield
    finally:
        client.destroy()


api = FastAPI(lifespan=lifespan)


@api.get("/healthz")
async def healthz() -> dict[str, bool]:
    return {"ok": True}


@api.post("/tasks", status_code=202)
async def submit(body: Submit) -> dict[str, str]:
    handle = await client.enqueue_async({"workflow_name": "work", "queue_name": QUEUE}, body.kind)
    return {"id": handle.get_workflow_id()}


@api.get("/tasks/{workflow_id}")
async def status(workflow_id: str) -> dict[str, object]:
    handle = await client.retrieve_workflow_async(workflow_id)
    state = (await handle.get_status()).status
    return {"state": state, "done": state in TERMINAL}


DONE_SQL = "SELECT count(*) FROM dbos.workflow_status WHERE status = 'SUCCESS'"


def worker() -> None:
    from dbos import DBOS

    DBOS(config={"name": "peer", "system_database_url": PG_URL, "executor_id": f"worker-{os.getpid()}"})

    @DBOS.workflow(name="work")
    def work(kind: str) -> dict[str, bool]:
        stamp(DBOS.workflow_id)
        if kind == "sleep":
            time.sleep(0.1)
        return {"ok": True}

    DBOS.launch()
    # The queue's documented default polls every 1 s, which caps a worker at worker_concurrency tasks a
    # second; run.py sets PEER_DBOS_POLL_SECONDS (0.05 by default) and says so beside its figures.
    DBOS.register_queue(
        QUEUE,
        worker_concurrency=int(os.environ.get("PEER_CONCURRENCY", "2")),
        polling_interval_sec=float(os.environ.get("PEER_DBOS_POLL_SECONDS", "1.0")),
    )
    print("dbos worker ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    worker()
