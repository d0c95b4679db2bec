"""A webhook receiver for tests: a Starlette app on loopback (uvicorn in a thread, http or https) that
verifies every POST with the ``standardwebhooks`` library and dedupes by ``webhook-id``, as a real
receiver must (Standard Webhooks: at least once on the wire)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


class Receiver:
    """What a receiver saw: ``wire`` every webhook-id in arrival order, ``events`` the first verified
    payload of each id, ``refused`` the verification errors. ``plan`` scripts the next answers:
    ``"500"`` (an error after reading it), ``"slow"`` (answer after ``slow_seconds``), ``"redirect"``
    (a 307 elsewhere), else 204."""

    def __init__(self, secret: str, slow_seconds: float = 3.0) -> None:
        self.verifier = Webhook(secret)
        self.slow_seconds = slow_seconds
        self.plan: list[str] = []
        self.wire: list[str] = []
        self.events: dict[str, Any] = {}
        self.headers: dict[str, dict[str, str]] = {}
        self.refused: list[str] = []
        self.lock = threading.Lock()
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        try:
            payload = self.verifier.verify(body, headers)
        except WebhookVerificationError as exc:
            with self.lock:
                self.refused.append(str(exc))
            return Response(status_code=400)
        msg_id = headers["webhook-id"]
        with self.lock:
            self.wire.append(msg_id)
            self.events.setdefault(msg_id, payload)  # the dedup: a seen id is not processed again
            self.headers.setdefault(msg_id, headers)
            action = self.plan.pop(0) if self.plan else "ok"
        if action == "500":
            return Response("x" * 5000, status_code=500)  # a long body: only an excerpt may be stored
        if action == "redirect":
            return Response(status_code=307, headers={"Location": "http://127.0.0.1:9/elsewhere"})
        if action == "slow":
            await asyncio.sleep(self.slow_seconds)
        return Response(status_code=204)


class Server:
    """``receiver.app`` served on ``127.0.0.1:port``, with TLS when given a certificate (PEM with its key)."""

    def __init__(self, receiver: Receiver, port: int, certfile: Path | None = None) -> None:
        tls: dict[str, Any] = {"ssl_certfile": str(certfile)} if certfile else {}
        config = uvicorn.Config(receiver.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", **tls)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the receiver did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
