"""Run an emulator on a real HTTP server (uvicorn), and find the function folders to host."""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

log = logging.getLogger("tasklift_local")

#: The repository root when tasklift_local runs from a checkout (local/tasklift_local/ → ../..).
CHECKOUT = Path(__file__).resolve().parents[2]


def find_functions_dir(kind: str, marker: str) -> Path:
    """``functions/<kind>`` under the working directory or the checkout this package lives in."""
    for root in (Path.cwd(), CHECKOUT):
        candidate = root / "functions" / kind
        if (candidate / marker).exists():
            return candidate
    raise FileNotFoundError(
        f"cannot find functions/{kind}/{marker} under {Path.cwd()} or {CHECKOUT}; pass its folder explicitly"
    )


def serve(app: Starlette, host: str, port: int, banner: str) -> None:
    """Serve ``app`` until Ctrl-C / SIGTERM."""
    log.info("%s listening on http://%s:%d", banner, host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, lifespan="auto",
                timeout_graceful_shutdown=10)  # fmt: skip


def serve_workers(factory: str, workers: int, host: str, port: int, banner: str) -> None:
    """Serve the app ``factory`` (an import string) from ``workers`` processes sharing one socket."""
    log.info("%s listening on http://%s:%d", banner, host, port)
    uvicorn.run(factory, factory=True, workers=workers, host=host, port=port, log_level="warning",
                access_log=False, lifespan="auto", timeout_graceful_shutdown=10)  # fmt: skip
