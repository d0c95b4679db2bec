"""The pages the API serves besides its JSON: the dashboard, Swagger UI and ReDoc.

Everything is served from this package and from fastapi-offline's packaged copy of Swagger UI and
ReDoc, never from a CDN, so the pages work offline and under a Content-Security-Policy whose
``script-src`` is ``'self'`` only: the pages are static HTML that load external scripts and start
them from our own ``/static/docs.js`` (no inline script). Every host serves them: the ASGI app
routes them here, and the Azure catch-all function answers them through this same app
(:func:`tasklift.http.asgi.answer_with_app`).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
#: Swagger UI's and ReDoc's bundles as fastapi-offline ships them (its package data, a public layout).
DOCS_ASSETS = Path(str(files("fastapi_offline") / "static"))

#: The paths these pages own, for hosts that route them to the ASGI app.
PAGE_PATHS = ("/", "/docs", "/redoc", "/openapi.json")
PAGE_PREFIXES = ("/static/", "/docs/")


def is_page(path: str) -> bool:
    """Whether ``path`` is one of the pages (dashboard, docs, the OpenAPI document or their assets)."""
    return path in PAGE_PATHS or path.startswith(PAGE_PREFIXES)


def add_pages(app: FastAPI) -> None:
    """Route the dashboard (``/``, ``/static``), Swagger UI (``/docs``) and ReDoc (``/redoc``) on ``app``."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/docs/assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
    no_cache = {"Cache-Control": "no-cache"}

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=no_cache)

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> FileResponse:
        return FileResponse(STATIC / "docs.html", headers=no_cache)

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> FileResponse:
        return FileResponse(STATIC / "redoc.html", headers=no_cache)
