"""uvicorn factory: tasklift's ``create_app()`` plus ``GET /hello`` (the hello-world baseline).

Serve with ``uvicorn --factory hello_app:create`` (``local/bench`` on PYTHONPATH). The baseline
route lives on the same FastAPI instance, behind the same middleware and routing table, so the
ratio isolates what tasklift's handlers cost over the framework itself.
"""

from __future__ import annotations

from fastapi import FastAPI

from tasklift.http.asgi import create_app


def create() -> FastAPI:
    app = create_app()

    @app.get("/hello", include_in_schema=False)
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app
