"""The ``tasklift`` command. Each module registers its commands on :data:`tasklift.cli.base.app`:
``server`` (dev, api, worker, reaper, migrate), ``client`` (submit, status, cancel, logs),
``bulk`` (bulk cancel / retry / purge, queues pause / resume), ``schedules`` (cron schedules),
``emulate`` (the local function-host emulators) and ``keys`` (API keys)."""

from __future__ import annotations

import importlib
import sys

from pydantic import ValidationError
from pydantic_settings import SettingsError

from tasklift.cli.base import app
from tasklift.extras import MissingExtra

COMMAND_MODULES = (
    "tasklift.cli.server",
    "tasklift.cli.client",
    "tasklift.cli.bulk",
    "tasklift.cli.schedules",
    "tasklift.cli.emulate",
    "tasklift.cli.data",
    "tasklift.cli.keys",
)


def main() -> None:
    """Entry point of the ``tasklift`` console script."""
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    try:
        app()
    except MissingExtra as exc:  # an optional dependency the command needs: one line, no traceback
        print(f"tasklift: {exc}", file=sys.stderr)
        sys.exit(1)
    except (ValidationError, SettingsError) as exc:  # a bad TASKLIFT_* value: say which, no traceback
        if isinstance(exc, ValidationError) and exc.title != "Settings":
            raise
        print(f"tasklift: invalid settings (TASKLIFT_* environment or .env): {exc}", file=sys.stderr)
        sys.exit(2)
