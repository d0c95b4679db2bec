"""The ``tasklift`` command. Each module registers its commands on :data:`tasklift.cli.base.app`:
``server`` (dev, api, worker, reaper, migrate), ``client`` (submit, status, cancel, logs),
``emulate`` (the local function-host emulators) and ``keys`` (API keys)."""

from __future__ import annotations

import importlib

from tasklift.cli.base import app

COMMAND_MODULES = (
    "tasklift.cli.server",
    "tasklift.cli.client",
    "tasklift.cli.emulate",
    "tasklift.cli.data",
    "tasklift.cli.keys",
)


def main() -> None:
    """Entry point of the ``tasklift`` console script."""
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    app()
