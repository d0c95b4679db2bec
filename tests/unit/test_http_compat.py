"""tasklift/http/_compat.py against the installed FastAPI and Starlette: fails when they change."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from tasklift.http._compat import PlainRoute


async def test_a_plain_route_is_served_by_its_asgi_app_and_documented_by_fastapi() -> None:
    async def endpoint() -> None:
        """What FastAPI documents; it must never run."""
        raise AssertionError("Starlette called FastAPI's endpoint, not the route's app")

    async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 299, "headers": [(b"x-served-by", b"asgi_app")]})
        await send({"type": "http.response.body", "body": b"plain"})

    endpoint.asgi_app = asgi_app  # type: ignore[attr-defined]
    app = FastAPI()
    app.router.add_api_route("/x/{item}", endpoint, methods=["GET"], name="x", route_class_override=PlainRoute)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        resp = await client.get("/x/1")
        assert (resp.status_code, resp.headers["x-served-by"], resp.text) == (299, "asgi_app", "plain")
        document = (await client.get("/openapi.json")).json()
    assert document["paths"]["/x/{item}"]["get"]["operationId"]
    assert document["paths"]["/x/{item}"]["get"]["description"] == "What FastAPI documents; it must never run."
