#!/usr/bin/env python
"""How fast the webhook deliverer (tasklift.queue.webhooks) empties a backlog of deliveries.

``--deliveries`` tasks with a callback are finished in one statement (the trigger records one
delivery each); then ``--deliverers`` deliverers (threads of this process, as a reaper runs one,
each with its own engine) send them to a receiver on loopback (uvicorn + Starlette answering 204,
no verification) until every row is delivered. Reported: deliveries/s end to end, per
``webhook_concurrency``. Each POST is a new connection (the deliverer pools none: a pooled
connection was vetted for another name), signed under one secret.

    .venv/bin/python local/bench/webhook_delivery.py [--deliveries 2000] [--concurrency 8 32] [--deliverers 1 2]
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import threading
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchkit as bk  # noqa: E402


def receiver(port: int) -> uvicorn.Server:
    async def hook(request):  # type: ignore[no-untyped-def]
        await request.body()
        return Response(status_code=204)

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server


def backlog(engine: sa.Engine, count: int, url: str) -> None:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO tasks (id, task_type, queue, status, input) SELECT id, 'bench', 'q', 'PENDING', '{}'"
                " FROM unnest(CAST(:ids AS uuid[])) AS id"
            ),
            {"ids": ids},
        )
        conn.execute(
            sa.text(
                "INSERT INTO task_callbacks (task_id, url) SELECT id, :url FROM unnest(CAST(:ids AS uuid[])) AS id"
            ),
            {"ids": ids, "url": url},
        )
        conn.execute(sa.text("UPDATE tasks SET status = 'CANCELLED', completed_at = now() WHERE status = 'PENDING'"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--deliverers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    port = bk.free_port()
    with bk.Stack() as stack:
        url = stack.env["TASKLIFT_DATABASE_URL"]
        os.environ.update(
            TASKLIFT_DATABASE_URL=url,
            TASKLIFT_WEBHOOK_SECRETS="whsec_" + base64.b64encode(os.urandom(32)).decode(),
            TASKLIFT_WEBHOOK_ALLOW_PRIVATE="true",
            TASKLIFT_WEBHOOK_ALLOWED_PORTS=f"[{port}]",
            TASKLIFT_WEBHOOK_INTERVAL_SECONDS="0.05",
        )
        from tasklift.queue.webhooks import Deliverer
        from tasklift.settings import Settings, database_url
        from tasklift.store.db import make_engine

        engine = make_engine(database_url())
        server = receiver(port)
        print(f"{'concurrency':>11} {'deliverers':>10} {'deliveries':>10} {'seconds':>8} {'per s':>8}")
        for concurrency in args.concurrency:
            for count in args.deliverers:
                with engine.begin() as conn:
                    conn.execute(sa.text("TRUNCATE tasks CASCADE"))
                backlog(engine, args.deliveries, f"http://127.0.0.1:{port}/hook")
                settings = Settings(webhook_concurrency=concurrency)
                stop = threading.Event()
                deliverers = [Deliverer(make_engine(database_url(), pool_size=2), settings) for _ in range(count)]
                start = time.perf_counter()
                threads = [d.start(stop) for d in deliverers]
                while True:
                    with engine.connect() as conn:
                        left = conn.execute(
                            sa.text("SELECT count(*) FROM webhook_deliveries WHERE state <> 'delivered'")
                        ).scalar()
                    if not left:
                        break
                    time.sleep(0.05)
                seconds = time.perf_counter() - start
                stop.set()
                for d, t in zip(deliverers, threads, strict=True):
                    t.join(30)
                    d.close()
                    d.engine.dispose()
                with engine.connect() as conn:
                    twice = conn.execute(sa.text("SELECT count(*) FROM webhook_deliveries WHERE attempts > 1")).scalar()
                rate = args.deliveries / seconds
                row = f"{concurrency:>11} {count:>10} {args.deliveries:>10} {seconds:8.2f} {rate:8.0f}"
                print(f"{row}  (retried: {twice})")
        server.should_exit = True
        engine.dispose()


if __name__ == "__main__":
    main()
