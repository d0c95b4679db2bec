"""FastAPI + Procrastinate, the way Procrastinate's docs show it for an ASGI app: one App on a
PsycopgConnector, opened in the FastAPI lifespan, jobs deferred with ``defer_async``; the worker
is Procrastinate's own CLI.

- Quickstart and async use: https://procrastinate.readthedocs.io/en/stable/quickstart.html
- ASGI integration (open the app in the lifespan): https://procrastinate.readthedocs.io/en/stable/howto/basics/open_connection.html
- Job status from the job manager: https://procrastinate.readthedocs.io/en/stable/reference.html

API: ``uvicorn procrastinate_app:api``; schema: ``procrastinate --app=procrastinate_app.app schema --apply``;
worker: ``procrastinate --app=procrastinate_app.app worker --concurrency N``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import procrastinate
from fastapi import FastAPI
from pydantic import BaseModel
from stamp import stamp

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=os.environ["PEER_DATABASE_URL"]))


@app.task(name="peer.work", queue="peer", pass_context=True)
async def work(context: procrastinate.JobContext, kind: str) -> None:
    stamp(context.job.id)
    if kind == "sleep":
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    async with app.open_async():
        yield


class Submit(BaseModel):
    kind: str = "noop"


api = FastAPI(lifespan=lifespan)


@api.get("/healthz")
async def healthz() -> dict[str, bool]:
    return {"ok": True}


@api.post("/tasks", status_code=202)
async def submit(body: Submit) -> dict[str, int]:
    return {"id": await work.defer_async(kind=body.kind)}


@api.get("/tasks/{job_id}")
async def status(job_id: int) -> dict[str, object]:
    state = await app.job_manager.get_job_status_async(job_id)
    return {"state": state.value, "done": state.value in ("succeeded", "failed", "cancelled", "aborted")}


DONE_SQL = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
